// CUDA implementations of the Metropolis-Hastings accepts pysampler::mala_accept and
// pysampler::hmc_accept (schemas and semantics: csrc/ops.cpp; CPU twins: csrc/cpu/accept.cpp).
//
// Each chain is handled by a group of kGroup threads (8, a warp, or a whole block of 256, by the
// row length D: short rows would leave most of a block idle, long ones want a block's bandwidth).
// A block holds kThreads / kGroup chains and walks the chains in a grid-stride loop whose trip
// count is the same for every thread of the block (threads of chains past N take part with zero
// sums), so the shuffles and barriers of the reduction are reached by all threads.
//
// Per chain, as the CPU kernel:
//   1. one pass over the row: each thread accumulates its strided elements' terms, computed in the
//      compute type, squared and summed in double (for every dtype, as csrc/cpu/accept.cpp does,
//      so the CPU and CUDA log alpha agree to the rounding of the final cast; the reduction is
//      memory-bound either way);
//   2. the group sum: an xor butterfly of warp shuffles (every lane ends with the same bits: each
//      step adds the same two values, a + b == b + a), then for block-wide groups the warp totals
//      through shared memory, summed by every thread in the same order. So every thread of the
//      group holds the same total and runs the MH test itself (csrc/cuda/common.cuh mh_accept,
//      uniform at counter offset + n): no broadcast is needed, and lane 0 writes the per-chain
//      outputs (accept_prob, accepted, energy);
//   3. the group copies the kept or the proposed row to x_out and grad_out, one read per element:
//      rejected chains get back their position, energy and cached gradient bit for bit.
// The result does not depend on the launch (grid size, device): the order of each chain's sum is
// fixed by D alone.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>

#include "common.cuh"

namespace pysampler {
namespace {

using cuda::kThreads;
using cuda::load;
using cuda::opmath_t;
using cuda::RngRef;

using AcceptResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

constexpr int kWarp = 32;

// f(std::integral_constant<int, kGroup>) with the threads per chain for rows of d elements: a few
// elements per thread for short rows, a warp up to 2048 (64 per lane), then the whole block.
template <typename F>
void dispatch_group(int64_t d, F&& f) {
  if (d <= 64) {
    f(std::integral_constant<int, 8>{});
  } else if (d <= 2048) {
    f(std::integral_constant<int, kWarp>{});
  } else {
    f(std::integral_constant<int, kThreads>{});
  }
}

// f(n, active, lane) for the chains of this block, grid-stride; every thread of the block makes the
// same number of calls (active: n < n_chains; lane: the thread's index within the chain's group).
template <int kGroup, typename F>
__device__ __forceinline__ void for_each_chain(int64_t n_chains, F&& f) {
  static_assert(kGroup > 0 && (kGroup & (kGroup - 1)) == 0 && kThreads % kGroup == 0,
                "kGroup must be a power of two dividing the block");
  constexpr int64_t kChainsPerBlock = kThreads / kGroup;
  const int lane = static_cast<int>(threadIdx.x) % kGroup;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kChainsPerBlock;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kChainsPerBlock; base < n_chains; base += stride) {
    const int64_t n = base + threadIdx.x / kGroup;
    f(n, n < n_chains, lane);
  }
}

// v[k] <- the sum of v[k] over the kGroup threads of this thread's group, the same bits in every
// thread. Called by every thread of the block (see for_each_chain).
template <int kGroup, int K>
__device__ __forceinline__ void group_sum(double (&v)[K]) {
  constexpr int kWidth = kGroup < kWarp ? kGroup : kWarp;
#pragma unroll
  for (int o = kWidth / 2; o > 0; o >>= 1) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      v[k] += __shfl_xor_sync(0xffffffffu, v[k], o);
    }
  }
  if constexpr (kGroup > kWarp) {
    constexpr int kWarpsPerGroup = kGroup / kWarp;
    __shared__ double partial[K][kThreads / kWarp];
    const int warp = static_cast<int>(threadIdx.x) / kWarp;
    __syncthreads();  // the previous chain's totals have been read
    if (threadIdx.x % kWarp == 0) {
#pragma unroll
      for (int k = 0; k < K; ++k) {
        partial[k][warp] = v[k];
      }
    }
    __syncthreads();
    const int first = warp / kWarpsPerGroup * kWarpsPerGroup;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      double total = partial[k][first];
      for (int w = 1; w < kWarpsPerGroup; ++w) {
        total += partial[k][first + w];
      }
      v[k] = total;
    }
  }
}

// out[row + j] = src[row + j] for j < d, split over the group's threads (a raw copy of the storage).
template <int kGroup, typename scalar_t>
__device__ __forceinline__ void copy_row(const scalar_t* __restrict__ src, scalar_t* __restrict__ out, int64_t row,
                                         int64_t d, int lane) {
  for (int64_t j = lane; j < d; j += kGroup) {
    out[row + j] = src[row + j];
  }
}

// The outputs of chain n once its MH test is done: per-chain values from lane 0, the rows from all.
template <int kGroup, typename scalar_t, typename T>
__device__ __forceinline__ void write_chain(bool acc, T prob, int64_t n, int64_t d, int lane,
                                            const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                            const T* __restrict__ e, const scalar_t* __restrict__ y,
                                            const scalar_t* __restrict__ gy, const T* __restrict__ ey,
                                            scalar_t* __restrict__ x_out, T* __restrict__ e_out,
                                            scalar_t* __restrict__ g_out, T* __restrict__ prob_out,
                                            bool* __restrict__ accepted) {
  if (lane == 0) {
    prob_out[n] = prob;
    accepted[n] = acc;
    e_out[n] = acc ? ey[n] : e[n];
  }
  const int64_t row = n * d;
  copy_row<kGroup>(acc ? y : x, x_out, row, d, lane);
  copy_row<kGroup>(acc ? gy : g, g_out, row, d, lane);
}

// ------------------------------------------------------------------------------ mala_accept

// log alpha = U(x) - U(y) - (|x - y + h grad_y|^2 - |y - x + h grad|^2) / (4h)   (Roberts & Tweedie 1996)
template <typename scalar_t, int kGroup>
__global__ void __launch_bounds__(kThreads)
    mala_accept_kernel(const scalar_t* __restrict__ x, const opmath_t<scalar_t>* __restrict__ e,
                       const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                       const opmath_t<scalar_t>* __restrict__ ey, const scalar_t* __restrict__ gy,
                       const opmath_t<scalar_t>* __restrict__ step, scalar_t* __restrict__ x_out,
                       opmath_t<scalar_t>* __restrict__ e_out, scalar_t* __restrict__ g_out,
                       opmath_t<scalar_t>* __restrict__ prob_out, bool* __restrict__ accepted, int64_t n_chains,
                       int64_t d, RngRef rng) {
  using T = opmath_t<scalar_t>;
  const cuda::SeedOffset so = cuda::read_rng(rng);
  for_each_chain<kGroup>(n_chains, [&](int64_t n, bool active, int lane) {
    double sums[2] = {0.0, 0.0};  // fwd = |y - x + h grad|^2, bwd = |x - y + h grad_y|^2
    const T h = active ? step[n] : T(0);
    if (active) {
      const int64_t row = n * d;
      for (int64_t j = row + lane; j < row + d; j += kGroup) {
        const T diff = load(y, j) - load(x, j);
        const T a = diff + h * load(g, j);
        const T b = -diff + h * load(gy, j);
        sums[0] += static_cast<double>(a) * a;
        sums[1] += static_cast<double>(b) * b;
      }
    }
    group_sum<kGroup>(sums);
    if (!active) {
      return;
    }
    const T log_alpha = e[n] - ey[n] - (static_cast<T>(sums[1]) - static_cast<T>(sums[0])) / (T(4) * h);
    T prob;
    const bool acc = cuda::mh_accept(log_alpha, so.seed, so.offset + static_cast<uint64_t>(n), prob);
    write_chain<kGroup>(acc, prob, n, d, lane, x, g, e, y, gy, ey, x_out, e_out, g_out, prob_out, accepted);
  });
}

// ------------------------------------------------------------------------------- hmc_accept

// H = U + |p|^2 / 2 with the closing half kick p - k grad_y applied here (kinetic energy only);
// log alpha = H(x, p0) - H(y, p - k grad_y), -inf when y has a non-finite element.
template <typename scalar_t, int kGroup>
__global__ void __launch_bounds__(kThreads)
    hmc_accept_kernel(const scalar_t* __restrict__ x, const opmath_t<scalar_t>* __restrict__ e,
                      const scalar_t* __restrict__ g, const scalar_t* __restrict__ p0,
                      const scalar_t* __restrict__ y, const opmath_t<scalar_t>* __restrict__ ey,
                      const scalar_t* __restrict__ gy, const scalar_t* __restrict__ p,
                      const opmath_t<scalar_t>* __restrict__ kick, scalar_t* __restrict__ x_out,
                      opmath_t<scalar_t>* __restrict__ e_out, scalar_t* __restrict__ g_out,
                      opmath_t<scalar_t>* __restrict__ prob_out, bool* __restrict__ accepted, int64_t n_chains,
                      int64_t d, RngRef rng) {
  using T = opmath_t<scalar_t>;
  const cuda::SeedOffset so = cuda::read_rng(rng);
  for_each_chain<kGroup>(n_chains, [&](int64_t n, bool active, int lane) {
    // |p0|^2, |p - k grad_y|^2, and the count of non-finite elements of y (exact in double).
    double sums[3] = {0.0, 0.0, 0.0};
    const T k = active ? kick[n] : T(0);
    if (active) {
      const int64_t row = n * d;
      for (int64_t j = row + lane; j < row + d; j += kGroup) {
        const T pe = load(p, j) - k * load(gy, j);
        const T q0 = load(p0, j);
        sums[0] += static_cast<double>(q0) * q0;
        sums[1] += static_cast<double>(pe) * pe;
        sums[2] += cuda::math::isfinite(load(y, j)) ? 0.0 : 1.0;
      }
    }
    group_sum<kGroup>(sums);
    if (!active) {
      return;
    }
    T log_alpha = -std::numeric_limits<T>::infinity();
    if (sums[2] == 0.0) {
      const T h0 = e[n] + T(0.5) * static_cast<T>(sums[0]);
      const T h1 = ey[n] + T(0.5) * static_cast<T>(sums[1]);
      log_alpha = h0 - h1;
    }
    T prob;
    const bool acc = cuda::mh_accept(log_alpha, so.seed, so.offset + static_cast<uint64_t>(n), prob);
    write_chain<kGroup>(acc, prob, n, d, lane, x, g, e, y, gy, ey, x_out, e_out, g_out, prob_out, accepted);
  });
}

// ---------------------------------------------------------------------------------- host side

// Empty outputs (x, energy, grad, accept_prob, accepted); accept_prob in the compute dtype (energy's).
AcceptResult accept_outputs(const at::Tensor& x, const at::Tensor& energy, const at::Tensor& grad) {
  const int64_t n = x.size(0);
  return {at::empty_like(x, at::MemoryFormat::Contiguous), at::empty_like(energy, at::MemoryFormat::Contiguous),
          at::empty_like(grad, at::MemoryFormat::Contiguous), at::empty({n}, energy.options()),
          at::empty({n}, energy.options().dtype(at::kBool))};
}

// Blocks for n_chains chains of kGroup threads.
template <int kGroup>
int64_t accept_blocks(int64_t n_chains, c10::DeviceIndex device) {
  constexpr int64_t kChainsPerBlock = kThreads / kGroup;
  return cuda::grid_blocks((n_chains + kChainsPerBlock - 1) / kChainsPerBlock, device);
}

AcceptResult mala_accept_cuda(const at::Tensor& x, const at::Tensor& energy, const at::Tensor& grad,
                              const at::Tensor& y, const at::Tensor& energy_y, const at::Tensor& grad_y,
                              const at::Tensor& step_size, const at::Tensor& rng) {
  constexpr const char* op = "pysampler::mala_accept: ";
  check_mala_accept_args(op, x, energy, grad, y, energy_y, grad_y, step_size, rng);
  cuda::check_cuda_device(op, x, rng);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), yc = y.contiguous(), gc = grad.contiguous(), gyc = grad_y.contiguous();
  const at::Tensor ec = energy.contiguous(), eyc = energy_y.contiguous(), hc = step_size.contiguous();
  AcceptResult out = accept_outputs(xc, ec, gc);
  auto& [x_out, e_out, g_out, prob, accepted] = out;
  const int64_t n_chains = xc.size(0);
  if (n_chains == 0) {
    return out;
  }
  const int64_t d = xc.numel() / n_chains;
  cuda::dispatch_storage(op, xc.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using T = opmath_t<scalar_t>;
    dispatch_group(d, [&](auto group) {
      constexpr int kGroup = decltype(group)::value;
      cuda::launch(&mala_accept_kernel<scalar_t, kGroup>, accept_blocks<kGroup>(n_chains, x.get_device()),
                   xc.const_data_ptr<scalar_t>(), ec.const_data_ptr<T>(), gc.const_data_ptr<scalar_t>(),
                   yc.const_data_ptr<scalar_t>(), eyc.const_data_ptr<T>(), gyc.const_data_ptr<scalar_t>(),
                   hc.const_data_ptr<T>(), x_out.mutable_data_ptr<scalar_t>(), e_out.mutable_data_ptr<T>(),
                   g_out.mutable_data_ptr<scalar_t>(), prob.mutable_data_ptr<T>(), accepted.mutable_data_ptr<bool>(),
                   n_chains, d, cuda::rng_ref(rng));
    });
  });
  return out;
}

AcceptResult hmc_accept_cuda(const at::Tensor& x, const at::Tensor& energy, const at::Tensor& grad,
                             const at::Tensor& p0, const at::Tensor& y, const at::Tensor& energy_y,
                             const at::Tensor& grad_y, const at::Tensor& p, const at::Tensor& kick_size,
                             const at::Tensor& rng) {
  constexpr const char* op = "pysampler::hmc_accept: ";
  check_hmc_accept_args(op, x, energy, grad, p0, y, energy_y, grad_y, p, kick_size, rng);
  cuda::check_cuda_device(op, x, rng);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), yc = y.contiguous(), gc = grad.contiguous(), gyc = grad_y.contiguous();
  const at::Tensor p0c = p0.contiguous(), pc = p.contiguous();
  const at::Tensor ec = energy.contiguous(), eyc = energy_y.contiguous(), kc = kick_size.contiguous();
  AcceptResult out = accept_outputs(xc, ec, gc);
  auto& [x_out, e_out, g_out, prob, accepted] = out;
  const int64_t n_chains = xc.size(0);
  if (n_chains == 0) {
    return out;
  }
  const int64_t d = xc.numel() / n_chains;
  cuda::dispatch_storage(op, xc.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using T = opmath_t<scalar_t>;
    dispatch_group(d, [&](auto group) {
      constexpr int kGroup = decltype(group)::value;
      cuda::launch(&hmc_accept_kernel<scalar_t, kGroup>, accept_blocks<kGroup>(n_chains, x.get_device()),
                   xc.const_data_ptr<scalar_t>(), ec.const_data_ptr<T>(), gc.const_data_ptr<scalar_t>(),
                   p0c.const_data_ptr<scalar_t>(), yc.const_data_ptr<scalar_t>(), eyc.const_data_ptr<T>(),
                   gyc.const_data_ptr<scalar_t>(), pc.const_data_ptr<scalar_t>(), kc.const_data_ptr<T>(),
                   x_out.mutable_data_ptr<scalar_t>(), e_out.mutable_data_ptr<T>(), g_out.mutable_data_ptr<scalar_t>(),
                   prob.mutable_data_ptr<T>(), accepted.mutable_data_ptr<bool>(), n_chains, d, cuda::rng_ref(rng));
    });
  });
  return out;
}

}  // namespace
}  // namespace pysampler

TORCH_LIBRARY_IMPL(pysampler, CUDA, m) {
  m.impl("mala_accept", &pysampler::mala_accept_cuda);
  m.impl("hmc_accept", &pysampler::hmc_accept_cuda);
}
