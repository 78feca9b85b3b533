// CUDA implementations of the Langevin step ops pysampler::ula_step, kinetic_oba and kinetic_bo
// (schemas and semantics: csrc/ops.cpp; CPU twins: csrc/cpu/ula.cpp, csrc/cpu/kinetic.cpp).
//
// One grid-stride loop over the flat elements on the current stream; element i belongs to chain
// i / D and draws philox_normal(seed, offset + i), the same stream as the CPU kernels, Triton's
// tl.randn and pysampler/rng.py. The seed and offset are read from the device rng tensor inside
// the kernel (csrc/cuda/common.cuh), so a step can be captured in a CUDA graph and replayed while
// the sampler advances the offset on the device. Each formula is the CPU kernel's, in the same
// order of operations, in the compute type of x (float32 for half-precision storage).
// Not compiled unless torch is a CUDA build and nvcc is found (or PYSAMPLER_FORCE_CUDA=1); see setup.py.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

#include "common.cuh"

namespace pysampler {
namespace {

using cuda::load;
using cuda::opmath_t;
using cuda::RngRef;

// ---------------------------------------------------------------------------------- ula_step

// out[i] = (x[i] - h g[i]) + s z,  g[i] = grad[i] + w x[i] when prior (w != 0), s = sqrt(2h) noise_scale.
template <typename scalar_t>
__global__ void __launch_bounds__(cuda::kThreads)
    ula_step_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                    const opmath_t<scalar_t>* __restrict__ step, scalar_t* __restrict__ out, int64_t numel,
                    int64_t per_chain, opmath_t<scalar_t> noise_scale, bool prior,
                    opmath_t<scalar_t> prior_weight, RngRef rng) {
  using T = opmath_t<scalar_t>;
  const cuda::SeedOffset so = cuda::read_rng(rng);
  cuda::for_each_element(numel, per_chain, [&](int64_t i, int64_t chain) {
    const T h = step[chain];
    const T s = cuda::math::sqrt(T(2) * h) * noise_scale;
    const T z = static_cast<T>(philox_normal(so.seed, so.offset + static_cast<uint64_t>(i)));
    const T xi = load(x, i);
    T gi = load(g, i);
    if (prior) {  // w != 0 (tested in double, as the reference does); w == 0 skips the term: no 0*inf NaN
      gi = gi + prior_weight * xi;
    }
    out[i] = static_cast<scalar_t>(xi - h * gi + s * z);
  });
}

at::Tensor ula_step_cuda(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step_size,
                         double noise_scale, const at::Tensor& rng, double prior_weight) {
  constexpr const char* op = "pysampler::ula_step: ";
  check_ula_step_args(x, grad, step_size, rng);
  cuda::check_cuda_device(op, x, rng);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), gc = grad.contiguous(), hc = step_size.contiguous();
  at::Tensor out = at::empty_like(xc, at::MemoryFormat::Contiguous);
  const int64_t numel = xc.numel();
  if (numel == 0) {
    return out;
  }
  const int64_t per_chain = numel / xc.size(0);
  const int64_t blocks = cuda::elementwise_blocks(numel, x.get_device());
  const bool prior = prior_weight != 0.0;
  cuda::dispatch_storage(op, xc.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using T = opmath_t<scalar_t>;
    // noise_scale and w are rounded to the compute dtype first, as torch does for `w * x` with a Python float w.
    cuda::launch(&ula_step_kernel<scalar_t>, blocks, xc.const_data_ptr<scalar_t>(), gc.const_data_ptr<scalar_t>(),
                 hc.const_data_ptr<T>(), out.mutable_data_ptr<scalar_t>(), numel, per_chain,
                 static_cast<T>(noise_scale), prior, static_cast<T>(prior_weight), cuda::rng_ref(rng));
  });
  return out;
}

// ------------------------------------------------------------------------- kinetic Langevin

// Per chain: h = step[n], gamma h = friction[n] * h, a = exp(-gamma h / 2), b = sqrt(-expm1(-gamma h)).
// kOba: O(h/2) B(h/2) A(h) on (x, v) -> (x_out, v_out); else B(h/2) O(h/2) on v -> v_out (x, x_out unused).
template <typename scalar_t, bool kOba>
__global__ void __launch_bounds__(cuda::kThreads)
    kinetic_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ v, const scalar_t* __restrict__ g,
                   const opmath_t<scalar_t>* __restrict__ step, const opmath_t<scalar_t>* __restrict__ friction,
                   scalar_t* __restrict__ x_out, scalar_t* __restrict__ v_out, int64_t numel, int64_t per_chain,
                   RngRef rng) {
  using T = opmath_t<scalar_t>;
  const cuda::SeedOffset so = cuda::read_rng(rng);
  cuda::for_each_element(numel, per_chain, [&](int64_t i, int64_t chain) {
    const T h = step[chain], gh = friction[chain] * h;
    const T a = cuda::math::exp(T(-0.5) * gh), b = cuda::math::sqrt(-cuda::math::expm1(-gh));
    const T z = static_cast<T>(philox_normal(so.seed, so.offset + static_cast<uint64_t>(i)));
    const T gv = load(g, i);
    T vv = load(v, i);
    if constexpr (kOba) {
      vv = a * vv + b * z;
      vv = vv - T(0.5) * h * gv;
      x_out[i] = static_cast<scalar_t>(load(x, i) + h * vv);
    } else {
      vv = vv - T(0.5) * h * gv;
      vv = a * vv + b * z;
    }
    v_out[i] = static_cast<scalar_t>(vv);
  });
}

template <bool kOba>
void run_kinetic(const char* op, const at::Tensor& x, const at::Tensor& v, const at::Tensor& grad,
                 const at::Tensor& step_size, const at::Tensor& friction, const at::Tensor& rng, at::Tensor& x_out,
                 at::Tensor& v_out) {
  const int64_t numel = v.numel();
  if (numel == 0) {
    return;
  }
  const int64_t per_chain = numel / v.size(0);
  const int64_t blocks = cuda::elementwise_blocks(numel, v.get_device());
  cuda::dispatch_storage(op, v.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using T = opmath_t<scalar_t>;
    cuda::launch(&kinetic_kernel<scalar_t, kOba>, blocks, kOba ? x.const_data_ptr<scalar_t>() : nullptr,
                 v.const_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(), step_size.const_data_ptr<T>(),
                 friction.const_data_ptr<T>(), kOba ? x_out.mutable_data_ptr<scalar_t>() : nullptr,
                 v_out.mutable_data_ptr<scalar_t>(), numel, per_chain, cuda::rng_ref(rng));
  });
}

std::tuple<at::Tensor, at::Tensor> kinetic_oba_cuda(const at::Tensor& x, const at::Tensor& v, const at::Tensor& grad,
                                                    const at::Tensor& step_size, const at::Tensor& friction,
                                                    const at::Tensor& rng) {
  constexpr const char* op = "pysampler::kinetic_oba: ";
  check_kinetic_args(op, x, grad, step_size, friction, rng);
  check_like_state(op, "v", v, x);
  cuda::check_cuda_device(op, x, rng);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), vc = v.contiguous(), gc = grad.contiguous();
  const at::Tensor hc = step_size.contiguous(), fc = friction.contiguous();
  at::Tensor x_out = at::empty_like(xc, at::MemoryFormat::Contiguous);
  at::Tensor v_out = at::empty_like(vc, at::MemoryFormat::Contiguous);
  run_kinetic<true>(op, xc, vc, gc, hc, fc, rng, x_out, v_out);
  return {x_out, v_out};
}

at::Tensor kinetic_bo_cuda(const at::Tensor& v, const at::Tensor& grad, const at::Tensor& step_size,
                           const at::Tensor& friction, const at::Tensor& rng) {
  constexpr const char* op = "pysampler::kinetic_bo: ";
  check_kinetic_args(op, v, grad, step_size, friction, rng);
  cuda::check_cuda_device(op, v, rng);
  const c10::cuda::CUDAGuard guard(v.device());
  const at::Tensor vc = v.contiguous(), gc = grad.contiguous();
  const at::Tensor hc = step_size.contiguous(), fc = friction.contiguous();
  at::Tensor v_out = at::empty_like(vc, at::MemoryFormat::Contiguous);
  at::Tensor unused;
  run_kinetic<false>(op, unused, vc, gc, hc, fc, rng, unused, v_out);
  return v_out;
}

}  // namespace
}  // namespace pysampler

TORCH_LIBRARY_IMPL(pysampler, CUDA, m) {
  m.impl("ula_step", &pysampler::ula_step_cuda);
  m.impl("kinetic_oba", &pysampler::kinetic_oba_cuda);
  m.impl("kinetic_bo", &pysampler::kinetic_bo_cuda);
}
