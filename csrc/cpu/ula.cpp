// CPU implementation of pysampler::ula_step (schema and semantics: csrc/ops.cpp).
//
// Work is split over threads with at::parallel_for in contiguous ranges of flat elements; each
// range is processed in blocks of kBlock elements that live on the stack:
//   1. Philox words for the block's counters (a loop with no calls, so the compiler vectorises
//      the 32x32->64-bit multiplies),
//   2. Box-Muller in float32 (scalar logf / cosf),
//   3. the affine update x - h*g + s*z with at::vec, h and s = sqrt(2h)*noise_scale per element
//      of the block (chains may start anywhere inside a block).
// Element i always uses counter offset + i, so the result does not depend on the thread count.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../checks.h"
#include "../philox.h"

namespace pysampler {
namespace {

constexpr int64_t kBlock = 256;   // elements per stack block (a few KiB of buffers)
constexpr int64_t kGrain = 8192;  // fewest elements worth a thread of their own

// z[j] = philox_normal(seed, offset + j) for j < n <= kBlock, computed in two vectorisable passes.
inline void fill_normals(uint64_t seed, uint64_t offset, int64_t n, float* z) {
  alignas(64) uint32_t w0[kBlock];
  alignas(64) uint32_t w1[kBlock];
  const PhiloxKey key{{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)}};
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t c = offset + static_cast<uint64_t>(j);
    const PhiloxWords w =
        philox4x32_10(PhiloxWords{{static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), 0u, 0u}}, key);
    w0[j] = w.w[0];
    w1[j] = w.w[1];
  }
  for (int64_t j = 0; j < n; ++j) {
    z[j] = philox_box_muller(philox_word_to_uniform(w0[j]), philox_word_to_uniform(w1[j]));
  }
}

template <typename scalar_t>
void ula_step_kernel(const scalar_t* x, const scalar_t* g, const scalar_t* step, scalar_t* out, int64_t numel,
                     int64_t per_chain, scalar_t noise_scale, uint64_t seed, uint64_t offset) {
  using Vec = at::vec::Vectorized<scalar_t>;
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    alignas(64) float z[kBlock];
    alignas(64) scalar_t hb[kBlock];
    alignas(64) scalar_t sb[kBlock];
    alignas(64) scalar_t zb[kBlock];
    // Chain of the first element and how many of its elements remain from `begin` on.
    int64_t chain = begin / per_chain;
    int64_t left = (chain + 1) * per_chain - begin;
    scalar_t h = step[chain];
    scalar_t s = std::sqrt(scalar_t(2) * h) * noise_scale;
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t len = std::min(kBlock, end - b);
      fill_normals(seed, offset + static_cast<uint64_t>(b), len, z);
      for (int64_t j = 0; j < len; ++j) {
        if (left == 0) {
          ++chain;
          left = per_chain;
          h = step[chain];
          s = std::sqrt(scalar_t(2) * h) * noise_scale;
        }
        --left;
        hb[j] = h;
        sb[j] = s;
        zb[j] = static_cast<scalar_t>(z[j]);
      }
      // out = (x - h*g) + (s*z): the same rounding order as the torch reference.
      int64_t j = 0;
      for (; j + Vec::size() <= len; j += Vec::size()) {
        const Vec r = Vec::loadu(x + b + j) - Vec::loadu(hb + j) * Vec::loadu(g + b + j) +
                      Vec::loadu(sb + j) * Vec::loadu(zb + j);
        r.store(out + b + j);
      }
      for (; j < len; ++j) {
        out[b + j] = x[b + j] - hb[j] * g[b + j] + sb[j] * zb[j];
      }
    }
  });
}

at::Tensor ula_step_cpu(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step_size,
                        double noise_scale, const at::Tensor& rng) {
  check_ula_step_args(x, grad, step_size, rng);
  TORCH_CHECK_VALUE(x.device().is_cpu(), "pysampler::ula_step (CPU): x must be a CPU tensor; got ", x.device());
  TORCH_CHECK_VALUE(rng.device().is_cpu(), "pysampler::ula_step (CPU): rng must be a CPU tensor; got ",
                    rng.device());
  const int64_t* rng_ptr = rng.const_data_ptr<int64_t>();
  const int64_t seed = rng_ptr[0];
  const int64_t offset = rng_ptr[rng.stride(0)];
  TORCH_CHECK_VALUE(seed >= 0, "pysampler::ula_step: rng[0] (seed) must be in [0, 2**63); got ", seed);
  TORCH_CHECK_VALUE(offset >= 0, "pysampler::ula_step: rng[1] (offset) must be in [0, 2**63); got ", offset);

  const at::Tensor xc = x.contiguous();
  const at::Tensor gc = grad.contiguous();
  const at::Tensor hc = step_size.contiguous();
  at::Tensor out = at::empty_like(xc, at::MemoryFormat::Contiguous);
  const int64_t numel = xc.numel();
  if (numel == 0) {
    return out;
  }
  const int64_t per_chain = numel / xc.size(0);
  if (xc.scalar_type() == at::kFloat) {
    ula_step_kernel<float>(xc.const_data_ptr<float>(), gc.const_data_ptr<float>(), hc.const_data_ptr<float>(),
                           out.mutable_data_ptr<float>(), numel, per_chain, static_cast<float>(noise_scale),
                           static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
  } else {
    ula_step_kernel<double>(xc.const_data_ptr<double>(), gc.const_data_ptr<double>(),
                            hc.const_data_ptr<double>(), out.mutable_data_ptr<double>(), numel, per_chain,
                            noise_scale, static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
  }
  return out;
}

}  // namespace
}  // namespace pysampler

TORCH_LIBRARY_IMPL(pysampler, CPU, m) { m.impl("ula_step", &pysampler::ula_step_cpu); }
