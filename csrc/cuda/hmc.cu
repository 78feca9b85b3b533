// CUDA implementations of the HMC step ops pysampler::momentum, leapfrog_kick_drift and kick
// (schemas and semantics: csrc/ops.cpp; CPU twins: csrc/cpu/hmc.cpp).
//
//   momentum:            out[i] = normal(seed, offset + i), cast to the storage dtype;
//   leapfrog_kick_drift: p' = p - k grad; x' = x + h p'  (k, h per chain; x' uses p' before rounding);
//   kick:                p' = p - k grad.
// One grid-stride loop over the flat elements on the current stream (csrc/cuda/common.cuh); the
// momentum kernel reads seed and offset from the device rng tensor, so it replays in a CUDA graph.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
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

// ---------------------------------------------------------------------------------- momentum

template <typename scalar_t>
__global__ void __launch_bounds__(cuda::kThreads)
    momentum_kernel(scalar_t* __restrict__ out, int64_t numel, RngRef rng) {
  const cuda::SeedOffset so = cuda::read_rng(rng);
  cuda::for_each_index(numel, [&](int64_t i) {
    out[i] = static_cast<scalar_t>(philox_normal(so.seed, so.offset + static_cast<uint64_t>(i)));
  });
}

at::Tensor momentum_cuda(const at::Tensor& rng, const at::Tensor& like) {
  constexpr const char* op = "pysampler::momentum: ";
  check_state(op, like);
  check_rng(op, rng);
  cuda::check_cuda_device(op, like, rng);
  const c10::cuda::CUDAGuard guard(like.device());
  at::Tensor out = at::empty(like.sizes(), like.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t numel = out.numel();
  if (numel == 0) {
    return out;
  }
  const int64_t blocks = cuda::elementwise_blocks(numel, like.get_device());
  cuda::dispatch_storage(op, out.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    cuda::launch(&momentum_kernel<scalar_t>, blocks, out.mutable_data_ptr<scalar_t>(), numel, cuda::rng_ref(rng));
  });
  return out;
}

// ------------------------------------------------------------------------- kick (and drift)

// kDrift: p' = p - k g and x' = x + h p'; else only p' (x, step, x_out unused).
template <typename scalar_t, bool kDrift>
__global__ void __launch_bounds__(cuda::kThreads)
    kick_drift_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ p, const scalar_t* __restrict__ g,
                      const opmath_t<scalar_t>* __restrict__ kick, const opmath_t<scalar_t>* __restrict__ step,
                      scalar_t* __restrict__ x_out, scalar_t* __restrict__ p_out, int64_t numel, int64_t per_chain) {
  using T = opmath_t<scalar_t>;
  cuda::for_each_element(numel, per_chain, [&](int64_t i, int64_t chain) {
    const T pv = load(p, i) - kick[chain] * load(g, i);
    p_out[i] = static_cast<scalar_t>(pv);
    if constexpr (kDrift) {
      x_out[i] = static_cast<scalar_t>(load(x, i) + step[chain] * pv);
    }
  });
}

template <bool kDrift>
void run_kick_drift(const char* op, const at::Tensor& x, const at::Tensor& p, const at::Tensor& g,
                    const at::Tensor& kick, const at::Tensor& step, at::Tensor& x_out, at::Tensor& p_out) {
  const int64_t numel = p.numel();
  if (numel == 0) {
    return;
  }
  const int64_t blocks = cuda::elementwise_blocks(numel, p.get_device());
  cuda::dispatch_storage(op, p.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using T = opmath_t<scalar_t>;
    cuda::launch(&kick_drift_kernel<scalar_t, kDrift>, blocks, kDrift ? x.const_data_ptr<scalar_t>() : nullptr,
                 p.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), kick.const_data_ptr<T>(),
                 kDrift ? step.const_data_ptr<T>() : nullptr, kDrift ? x_out.mutable_data_ptr<scalar_t>() : nullptr,
                 p_out.mutable_data_ptr<scalar_t>(), numel, numel / p.size(0));
  });
}

std::tuple<at::Tensor, at::Tensor> leapfrog_kick_drift_cuda(const at::Tensor& x, const at::Tensor& p,
                                                            const at::Tensor& grad, const at::Tensor& kick_size,
                                                            const at::Tensor& step_size) {
  constexpr const char* op = "pysampler::leapfrog_kick_drift: ";
  check_kick_drift_args(op, x, p, grad, kick_size, step_size);
  cuda::check_cuda_device(op, x);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), pc = p.contiguous(), gc = grad.contiguous();
  const at::Tensor kc = kick_size.contiguous(), hc = step_size.contiguous();
  at::Tensor x_out = at::empty_like(xc, at::MemoryFormat::Contiguous);
  at::Tensor p_out = at::empty_like(pc, at::MemoryFormat::Contiguous);
  run_kick_drift<true>(op, xc, pc, gc, kc, hc, x_out, p_out);
  return {x_out, p_out};
}

at::Tensor kick_cuda(const at::Tensor& p, const at::Tensor& grad, const at::Tensor& kick_size) {
  constexpr const char* op = "pysampler::kick: ";
  check_kick_args(op, p, grad, kick_size);
  cuda::check_cuda_device(op, p);
  const c10::cuda::CUDAGuard guard(p.device());
  const at::Tensor pc = p.contiguous(), gc = grad.contiguous(), kc = kick_size.contiguous();
  at::Tensor p_out = at::empty_like(pc, at::MemoryFormat::Contiguous);
  at::Tensor unused;
  run_kick_drift<false>(op, unused, pc, gc, kc, unused, unused, p_out);
  return p_out;
}

}  // namespace
}  // namespace pysampler

TORCH_LIBRARY_IMPL(pysampler, CUDA, m) {
  m.impl("momentum", &pysampler::momentum_cuda);
  m.impl("leapfrog_kick_drift", &pysampler::leapfrog_kick_drift_cuda);
  m.impl("kick", &pysampler::kick_cuda);
}
