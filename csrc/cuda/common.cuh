// What the CUDA kernels of csrc/cuda share: storage dtypes and their dispatch, argument checks,
// the device-side rng read, launch shapes and the launch itself, grid-stride loops, the MH test.
//
// Layout of every kernel: a state x (N, *event) is a contiguous (N, D) matrix, D = numel / N.
// Elementwise kernels walk the flat index i in a grid-stride loop; element i belongs to chain
// i / D (per-chain (N,) parameters are gathered from it) and draws its normal from the Philox
// stream at counter offset + i (csrc/philox.h), exactly as the CPU kernels and the reference
// (pysampler/ops.py). Per-chain kernels (the MH accepts, accept.cu) give each chain a group of
// threads.
//
// Random numbers: the kernels get a pointer to the rng tensor (int64 (2,) = seed, offset) on the
// device and read it inside the kernel. Nothing is copied to the host, so a step launches without
// a sync and a captured CUDA graph replays with fresh noise once the sampler advances the offset
// in that tensor.
//
// Dtypes: float32 and float64 compute in their own precision; float16 and bfloat16 are storage
// only: elements are loaded into float32 (at::opmath_type), the arithmetic runs in float32 and
// results are rounded back to the storage dtype once, on store (round to nearest even, as
// torch's .to()). Per-chain tensors (step sizes, frictions, energies) and accept_prob are in the
// compute dtype: x's dtype for float32/float64, float32 for half storage (the samplers keep them
// in float32 there: pysampler/samplers/base.py per_chain_tensor).
//
// Accuracy: nothing here assumes --use_fast_math (CMakeLists.txt does not pass it): expf, expm1f,
// logf, cosf are the accurate ones. nvcc contracts a*b + c into an FMA by default (--fmad=true),
// so results can differ from the CPU kernels by a rounding in the last place: parity tests
// compare to float tolerance, as for the Triton kernels.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAMacros.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include "../checks.h"
#include "../philox.h"

namespace pysampler {
namespace cuda {

// ------------------------------------------------------------------------------------ dtypes

// Arithmetic type of a storage type: float for float16/bfloat16/float32, double for float64.
template <typename scalar_t>
using opmath_t = at::opmath_type<scalar_t>;

// f(std::type_identity<scalar_t>{}) for x's storage dtype; checks have rejected the others.
template <typename F>
void dispatch_storage(const char* op, at::ScalarType t, F&& f) {
  switch (t) {
    case at::kFloat:
      f(std::type_identity<float>{});
      break;
    case at::kDouble:
      f(std::type_identity<double>{});
      break;
    case at::kHalf:
      f(std::type_identity<c10::Half>{});
      break;
    case at::kBFloat16:
      f(std::type_identity<c10::BFloat16>{});
      break;
    default:
      TORCH_CHECK_VALUE(false, op, "x must be float32, float64, float16 or bfloat16; got ", t);
  }
}

// Element i of a storage array, in the compute type.
template <typename scalar_t>
__device__ __forceinline__ opmath_t<scalar_t> load(const scalar_t* p, int64_t i) {
  return static_cast<opmath_t<scalar_t>>(p[i]);
}

// Overloads picking the float or double device function (accurate versions: no fast math).
namespace math {
__device__ __forceinline__ float exp(float x) { return ::expf(x); }
__device__ __forceinline__ double exp(double x) { return ::exp(x); }
__device__ __forceinline__ float expm1(float x) { return ::expm1f(x); }
__device__ __forceinline__ double expm1(double x) { return ::expm1(x); }
__device__ __forceinline__ float sqrt(float x) { return ::sqrtf(x); }
__device__ __forceinline__ double sqrt(double x) { return ::sqrt(x); }
__device__ __forceinline__ bool isfinite(float x) { return ::isfinite(x); }
__device__ __forceinline__ bool isfinite(double x) { return ::isfinite(x); }
}  // namespace math

// ------------------------------------------------------------------------------------ checks
// Argument checks are csrc/checks.h's, shared with the CPU and Meta kernels (they take the four
// storage dtypes with float32 per-chain values for half storage); only where the kernel runs is CUDA's.

// Where the CUDA kernel runs: x on a CUDA device, rng (already checked by check_rng) on the same one,
// so the kernel can read the seed and offset without a host sync.
inline void check_cuda_device(const char* op, const at::Tensor& x, const at::Tensor& rng) {
  TORCH_CHECK_VALUE(x.is_cuda(), op, "x must be a CUDA tensor; got ", x.device());
  TORCH_CHECK_VALUE(rng.device() == x.device(), op, "rng must be on the device of x (", x.device(),
                    ") so the kernel can read it without a host sync; got ", rng.device());
}

inline void check_cuda_device(const char* op, const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.is_cuda(), op, "x must be a CUDA tensor; got ", x.device());
}

// -------------------------------------------------------------------------------------- rng

// The device rng tensor: int64 (2,) = (seed, offset), possibly strided.
struct RngRef {
  const int64_t* ptr;
  int64_t stride;
};

inline RngRef rng_ref(const at::Tensor& rng) { return RngRef{rng.const_data_ptr<int64_t>(), rng.stride(0)}; }

struct SeedOffset {
  uint64_t seed;    // the int64 holds the key's 64 bits (seeds >= 2**63 are stored negative)
  uint64_t offset;  // counter of element 0 (per-element draws) or chain 0 (MH uniforms)
};

// Read inside the kernel, on every launch (and every CUDA-graph replay).
__device__ __forceinline__ SeedOffset read_rng(RngRef rng) {
  return SeedOffset{static_cast<uint64_t>(rng.ptr[0]), static_cast<uint64_t>(rng.ptr[rng.stride])};
}

// ----------------------------------------------------------------------------------- launch

// Threads per block of every kernel (the accept kernels rely on it: see accept.cu).
constexpr int kThreads = 256;
// Grid cap of the grid-stride loops: resident blocks of 256 threads per SM (8 on sm_80/sm_90) times 2.
constexpr int64_t kBlocksPerSm = 16;

// Multiprocessors of a device, asked once per device: no runtime query on the launch path (and none
// while a CUDA graph is being captured, after a first eager call).
inline int sm_count(c10::DeviceIndex device) {
  static std::array<std::atomic<int>, C10_COMPILE_TIME_MAX_GPUS> cache{};
  std::atomic<int>& slot = cache.at(static_cast<size_t>(device));
  int sms = slot.load(std::memory_order_relaxed);
  if (sms == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    slot.store(sms, std::memory_order_relaxed);
  }
  return sms;
}

// Blocks for `work_blocks` blocks' worth of work, capped (grid-stride loops cover the rest).
inline int64_t grid_blocks(int64_t work_blocks, c10::DeviceIndex device) {
  return std::clamp<int64_t>(work_blocks, 1, static_cast<int64_t>(sm_count(device)) * kBlocksPerSm);
}

// Blocks of an elementwise kernel over numel elements.
inline int64_t elementwise_blocks(int64_t numel, c10::DeviceIndex device) {
  return grid_blocks((numel + kThreads - 1) / kThreads, device);
}

// kernel<<<blocks, kThreads>>> on the current stream of the current device (callers hold a
// c10::cuda::CUDAGuard for the tensors' device), then the launch check.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), int64_t blocks, Args&&... args) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  kernel<<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ------------------------------------------------------------------------------ grid stride

// f(i) for every flat index i < numel, grid-stride.
template <typename F>
__device__ __forceinline__ void for_each_index(int64_t numel, F&& f) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < numel; i += stride) {
    f(i);
  }
}

// f(i, chain) for every flat index i < numel, chain = i / per_chain, grid-stride. The chain index
// is advanced by the stride's quotient and remainder (two divisions per thread, not one per
// element: a 64-bit division costs more than the arithmetic of the memory-bound kernels).
template <typename F>
__device__ __forceinline__ void for_each_element(int64_t numel, int64_t per_chain, F&& f) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= numel) {
    return;
  }
  int64_t chain = i / per_chain;
  int64_t col = i - chain * per_chain;
  const int64_t step_chains = stride / per_chain;
  const int64_t step_cols = stride - step_chains * per_chain;
  for (; i < numel; i += stride) {
    f(i, chain);
    chain += step_chains;
    col += step_cols;
    if (col >= per_chain) {
      col -= per_chain;
      ++chain;
    }
  }
}

// ------------------------------------------------------------------------------------ MH test

// Metropolis-Hastings test of one chain, as csrc/cpu/accept.cpp: accept when u < min(1, alpha) with
// u = uniform(seed, counter) (float32, cast to T); a non-finite log alpha is a rejection.
template <typename T>
__device__ __forceinline__ bool mh_accept(T log_alpha, uint64_t seed, uint64_t counter, T& accept_prob) {
  if (!math::isfinite(log_alpha)) {
    log_alpha = -std::numeric_limits<T>::infinity();
  }
  accept_prob = math::exp(T(0) < log_alpha ? T(0) : log_alpha);  // std::min(log_alpha, 0)
  const T u = static_cast<T>(philox_uniform(seed, counter));
  return u < accept_prob;
}

}  // namespace cuda
}  // namespace pysampler
