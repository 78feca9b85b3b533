// CUDA implementation of pysampler::ula_step (schema and semantics: csrc/ops.cpp).
//
// One grid-stride loop over flat elements on the current stream. The seed and offset are read
// from the device tensor `rng` inside the kernel (never copied to the host), so a step can be
// captured in a CUDA graph and replayed while the sampler advances the offset on the device.
// Element i draws philox_normal(seed, offset + i), the same stream as the CPU kernel, Triton's
// tl.randn and pysampler/rng.py. Not compiled unless torch is a CUDA build and nvcc is found
// (or PYSAMPLER_FORCE_CUDA=1); see setup.py.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../checks.h"
#include "../philox.h"

namespace pysampler {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void ula_step_cuda_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                     const scalar_t* __restrict__ step, scalar_t* __restrict__ out, int64_t numel,
                                     int64_t per_chain, scalar_t noise_scale, bool prior, scalar_t prior_weight,
                                     const int64_t* __restrict__ rng, int64_t rng_stride) {
  const uint64_t seed = static_cast<uint64_t>(rng[0]);
  const uint64_t offset = static_cast<uint64_t>(rng[rng_stride]);
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    const scalar_t h = step[i / per_chain];
    const scalar_t s = sqrt(scalar_t(2) * h) * noise_scale;
    const scalar_t z = static_cast<scalar_t>(philox_normal(seed, offset + static_cast<uint64_t>(i)));
    const scalar_t xi = x[i];
    scalar_t gi = g[i];
    if (prior) {  // w != 0 (tested in double, as the reference does); w == 0 skips the term: no 0*inf NaN
      gi = gi + prior_weight * xi;
    }
    out[i] = xi - h * gi + s * z;
  }
}

at::Tensor ula_step_cuda(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step_size,
                         double noise_scale, const at::Tensor& rng, double prior_weight) {
  check_ula_step_args(x, grad, step_size, rng);
  TORCH_CHECK_VALUE(x.is_cuda(), "pysampler::ula_step (CUDA): x must be a CUDA tensor; got ", x.device());
  TORCH_CHECK_VALUE(rng.device() == x.device(), "pysampler::ula_step (CUDA): rng must be on the device of x (",
                    x.device(), ") so the kernel can read it without a host sync; got ", rng.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  const at::Tensor gc = grad.contiguous();
  const at::Tensor hc = step_size.contiguous();
  at::Tensor out = at::empty_like(xc, at::MemoryFormat::Contiguous);
  const int64_t numel = xc.numel();
  if (numel == 0) {
    return out;
  }
  const int64_t per_chain = numel / xc.size(0);
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, x.get_device()));
  const int64_t blocks = std::min<int64_t>((numel + kThreads - 1) / kThreads, static_cast<int64_t>(sms) * 16);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool prior = prior_weight != 0.0;
  if (xc.scalar_type() == at::kFloat) {
    ula_step_cuda_kernel<float><<<blocks, kThreads, 0, stream>>>(
        xc.const_data_ptr<float>(), gc.const_data_ptr<float>(), hc.const_data_ptr<float>(),
        out.mutable_data_ptr<float>(), numel, per_chain, static_cast<float>(noise_scale), prior,
        static_cast<float>(prior_weight), rng.const_data_ptr<int64_t>(), rng.stride(0));
  } else {
    ula_step_cuda_kernel<double><<<blocks, kThreads, 0, stream>>>(
        xc.const_data_ptr<double>(), gc.const_data_ptr<double>(), hc.const_data_ptr<double>(),
        out.mutable_data_ptr<double>(), numel, per_chain, noise_scale, prior, prior_weight,
        rng.const_data_ptr<int64_t>(), rng.stride(0));
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace
}  // namespace pysampler

TORCH_LIBRARY_IMPL(pysampler, CUDA, m) { m.impl("ula_step", &pysampler::ula_step_cuda); }
