// CUDA implementations of the diffusion ops pysampler::q_sample and pysampler::posterior_sample
// (schemas and semantics: csrc/ops.cpp; CPU twins: csrc/cpu/diffusion.cpp; reference:
// pysampler/ops.py q_sample / posterior_sample).
//
// Each sample n has its own step t = t_index[n] (int64, 0-based) into (T,) schedule tables in the
// compute dtype; element i belongs to sample n = i / D and draws philox_normal(seed, offset + i):
//   q_sample:         out = sqrt_ab[t] * x0 + sqrt_1mab[t] * z
//   posterior_sample: out = (coef_x0[t] * x0 + coef_xt[t] * xt) + std[t] * z
// in this order, in the compute type of x0 (float32 for half-precision storage), rounded to the
// storage dtype once on store. One grid-stride loop over the flat elements on the current stream
// (csrc/cuda/common.cuh); t_index and the tables are gathered on the device and the seed and
// offset read from the device rng tensor inside the kernel, so nothing is copied to the host and a
// call can be captured in a CUDA graph.
//
// Out-of-range steps: the CPU kernel raises when t_index[n] is outside [0, T). A kernel cannot
// raise, and checking on the host would cost a sync (and break graph capture); clamping would
// silently sample at the wrong step. So here every element of a sample whose step is out of
// range is written as NaN (quiet NaN, in the storage dtype), the other samples are unaffected,
// and the call itself succeeds: callers that cannot guarantee the range should test the result
// (or t_index) with isnan / isfinite.
// Not compiled unless torch is a CUDA build and nvcc is found (or PYSAMPLER_FORCE_CUDA=1); see setup.py.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>

#include "common.cuh"

namespace pysampler {
namespace {

using cuda::load;
using cuda::opmath_t;
using cuda::RngRef;

// kPosterior: (c0 x0 + ct xt) + s z; else c0 x0 + s z (xt and ct_table unused, may be null).
// A sample whose t_index is outside [0, n_steps) gets NaN in all of its elements (see the top).
template <typename scalar_t, bool kPosterior>
__global__ void __launch_bounds__(cuda::kThreads)
    diffusion_kernel(const scalar_t* __restrict__ x0, const scalar_t* __restrict__ xt,
                     const int64_t* __restrict__ t_index, const opmath_t<scalar_t>* __restrict__ c0_table,
                     const opmath_t<scalar_t>* __restrict__ ct_table,
                     const opmath_t<scalar_t>* __restrict__ std_table, int64_t n_steps, scalar_t* __restrict__ out,
                     int64_t numel, int64_t per_sample, RngRef rng) {
  using T = opmath_t<scalar_t>;
  const cuda::SeedOffset so = cuda::read_rng(rng);
  cuda::for_each_element(numel, per_sample, [&](int64_t i, int64_t sample) {
    const int64_t t = t_index[sample];
    if (t < 0 || t >= n_steps) {
      out[i] = static_cast<scalar_t>(std::numeric_limits<T>::quiet_NaN());
      return;
    }
    const T z = static_cast<T>(philox_normal(so.seed, so.offset + static_cast<uint64_t>(i)));
    T mean = c0_table[t] * load(x0, i);
    if constexpr (kPosterior) {
      mean = mean + ct_table[t] * load(xt, i);
    }
    out[i] = static_cast<scalar_t>(mean + std_table[t] * z);
  });
}

// Where the kernel runs: x0 on a CUDA device, rng on the same one (the kernel reads it without a
// host sync). The other tensors' devices are checked against x0's by checks.h.
void check_diffusion_device(const char* op, const at::Tensor& x0, const at::Tensor& rng) {
  TORCH_CHECK_VALUE(x0.is_cuda(), op, "x0 must be a CUDA tensor; got ", x0.device());
  TORCH_CHECK_VALUE(rng.device() == x0.device(), op, "rng must be on the device of x0 (", x0.device(),
                    ") so the kernel can read it without a host sync; got ", rng.device());
}

template <bool kPosterior>
at::Tensor run_diffusion(const char* op, const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& t_index,
                         const at::Tensor& c0, const at::Tensor& ct, const at::Tensor& std_table,
                         const at::Tensor& rng) {
  const c10::cuda::CUDAGuard guard(x0.device());
  const at::Tensor x0c = x0.contiguous(), tc = t_index.contiguous(), c0c = c0.contiguous(), sc = std_table.contiguous();
  const at::Tensor xtc = kPosterior ? xt.contiguous() : at::Tensor();
  const at::Tensor ctc = kPosterior ? ct.contiguous() : at::Tensor();
  at::Tensor out = at::empty_like(x0c, at::MemoryFormat::Contiguous);
  const int64_t numel = x0c.numel();
  if (numel == 0) {
    return out;
  }
  const int64_t per_sample = numel / x0c.size(0);
  const int64_t n_steps = c0c.size(0);
  const int64_t blocks = cuda::elementwise_blocks(numel, x0.get_device());
  cuda::dispatch_storage(op, x0c.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using T = opmath_t<scalar_t>;
    cuda::launch(&diffusion_kernel<scalar_t, kPosterior>, blocks, x0c.const_data_ptr<scalar_t>(),
                 kPosterior ? xtc.const_data_ptr<scalar_t>() : nullptr, tc.const_data_ptr<int64_t>(),
                 c0c.const_data_ptr<T>(), kPosterior ? ctc.const_data_ptr<T>() : nullptr, sc.const_data_ptr<T>(),
                 n_steps, out.mutable_data_ptr<scalar_t>(), numel, per_sample, cuda::rng_ref(rng));
  });
  return out;
}

// The checks are csrc/checks.h's (shared with the CPU and Meta kernels: same order, same messages;
// they take float16/bfloat16 x0 with float32 tables), then the CUDA placement.
at::Tensor q_sample_cuda(const at::Tensor& x0, const at::Tensor& t_index, const at::Tensor& sqrt_ab,
                         const at::Tensor& sqrt_1mab, const at::Tensor& rng) {
  constexpr const char* op = "pysampler::q_sample: ";
  check_q_sample_args(op, x0, t_index, sqrt_ab, sqrt_1mab, rng);
  check_diffusion_device(op, x0, rng);
  return run_diffusion<false>(op, x0, at::Tensor(), t_index, sqrt_ab, at::Tensor(), sqrt_1mab, rng);
}

at::Tensor posterior_sample_cuda(const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& t_index,
                                 const at::Tensor& coef_x0, const at::Tensor& coef_xt, const at::Tensor& std_table,
                                 const at::Tensor& rng) {
  constexpr const char* op = "pysampler::posterior_sample: ";
  check_posterior_sample_args(op, x0, xt, t_index, coef_x0, coef_xt, std_table, rng);
  check_diffusion_device(op, x0, rng);
  return run_diffusion<true>(op, x0, xt, t_index, coef_x0, coef_xt, std_table, rng);
}

}  // namespace
}  // namespace pysampler

TORCH_LIBRARY_IMPL(pysampler, CUDA, m) {
  m.impl("q_sample", &pysampler::q_sample_cuda);
  m.impl("posterior_sample", &pysampler::posterior_sample_cuda);
}
