// CPU implementation of pysampler::ula_step (schema and semantics: csrc/ops.cpp).
//
// Work is split over threads with at::parallel_for in contiguous ranges of flat elements; each
// range is processed in blocks of kBlock elements that live on the stack:
//   1. the block's normals from the Philox stream (csrc/cpu/noise.h: AVX2 Philox and SLEEF
//      Box-Muller where the CPU has AVX2),
//   2. the affine update (x - h*(g + w*x)) + s*z with at::vec, h and s = sqrt(2h)*noise_scale per
//      element of the block (chains may start anywhere inside a block). The prior term w*x is a
//      compile-time branch (kPrior): with w == 0 it is not computed at all (no 0*inf NaN for an
//      infinite x) and the arithmetic is (x - h*g) + s*z, as before the prior existed.
// Element i always uses counter offset + i, so the result does not depend on the thread count.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "../checks.h"
#include "../cpu_buffers.h"
#include "noise.h"
#include "ops.h"

namespace pysampler::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kBlock = kNoiseBlock;  // elements per stack block (a few KiB of buffers)
constexpr int64_t kGrain = 8192;  // fewest elements worth a thread of their own

// g + w*x: the effective gradient, with the prior term only when kPrior (w != 0).
template <bool kPrior, typename T>
inline T effective_grad(const T& g, const T& x, const T& w) {
  if constexpr (kPrior) {
    return g + w * x;
  } else {
    return g;
  }
}

template <typename scalar_t, bool kPrior>
void ula_step_kernel(const scalar_t* x, const scalar_t* g, const scalar_t* step, scalar_t* out, int64_t numel,
                     int64_t per_chain, scalar_t noise_scale, scalar_t prior_weight, uint64_t seed,
                     uint64_t offset) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec wv(prior_weight);
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    alignas(64) float z[kBlock];
    alignas(64) scalar_t hb[kBlock];
    alignas(64) scalar_t sb[kBlock];
    // Chain of the first element and how many of its elements remain from `begin` on.
    int64_t chain = begin / per_chain;
    int64_t left = (chain + 1) * per_chain - begin;
    scalar_t h = step[chain];
    scalar_t s = std::sqrt(scalar_t(2) * h) * noise_scale;
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t len = std::min(kBlock, end - b);
      fill_normals(seed, offset + static_cast<uint64_t>(b), len, z);
      int64_t j = 0;
      if (left >= len) {
        // The whole block is in one chain: h and s are broadcast.
        left -= len;
        const Vec hv(h), sv(s);
        for (; j + Vec::size() <= len; j += Vec::size()) {
          const Vec xv = Vec::loadu(x + b + j);
          const Vec gv = effective_grad<kPrior>(Vec::loadu(g + b + j), xv, wv);
          const Vec r = xv - hv * gv + sv * load_noise<scalar_t>(z + j);
          r.store(out + b + j);
        }
        for (; j < len; ++j) {
          const scalar_t ge = effective_grad<kPrior>(g[b + j], x[b + j], prior_weight);
          out[b + j] = x[b + j] - h * ge + s * static_cast<scalar_t>(z[j]);
        }
        continue;
      }
      // Chains change inside the block: per-element h and s.
      for (int64_t k = 0; k < len; ++k) {
        if (left == 0) {
          ++chain;
          left = per_chain;
          h = step[chain];
          s = std::sqrt(scalar_t(2) * h) * noise_scale;
        }
        --left;
        hb[k] = h;
        sb[k] = s;
      }
      for (; j + Vec::size() <= len; j += Vec::size()) {
        const Vec xv = Vec::loadu(x + b + j);
        const Vec gv = effective_grad<kPrior>(Vec::loadu(g + b + j), xv, wv);
        const Vec r = xv - Vec::loadu(hb + j) * gv + Vec::loadu(sb + j) * load_noise<scalar_t>(z + j);
        r.store(out + b + j);
      }
      for (; j < len; ++j) {
        const scalar_t ge = effective_grad<kPrior>(g[b + j], x[b + j], prior_weight);
        out[b + j] = x[b + j] - hb[j] * ge + sb[j] * static_cast<scalar_t>(z[j]);
      }
    }
  });
}

at::Tensor ula_step_cpu(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step_size,
                        double noise_scale, const at::Tensor& rng, double prior_weight) {
  check_ula_step_args(x, grad, step_size, rng);
  check_cpu_state_type("pysampler::ula_step: ", x);
  TORCH_CHECK_VALUE(x.device().is_cpu(), "pysampler::ula_step (CPU): x must be a CPU tensor; got ", x.device());
  const auto [seed, offset] = read_rng("pysampler::ula_step: ", rng);

  const at::Tensor xc = x.contiguous();
  const at::Tensor gc = grad.contiguous();
  const at::Tensor hc = step_size.contiguous();
  at::Tensor out = new_output_like(xc);
  const int64_t numel = xc.numel();
  if (numel == 0) {
    return out;
  }
  const int64_t per_chain = numel / xc.size(0);
  const bool prior = prior_weight != 0.0;
  const auto run = [&](auto zero) {
    using scalar_t = decltype(zero);
    // w is rounded to x's dtype first, as torch does for `w * x` with a Python float w.
    const auto kernel = prior ? &ula_step_kernel<scalar_t, true> : &ula_step_kernel<scalar_t, false>;
    kernel(xc.const_data_ptr<scalar_t>(), gc.const_data_ptr<scalar_t>(), hc.const_data_ptr<scalar_t>(),
           out.mutable_data_ptr<scalar_t>(), numel, per_chain, static_cast<scalar_t>(noise_scale),
           static_cast<scalar_t>(prior_weight), seed, offset);
  };
  if (xc.scalar_type() == at::kFloat) {
    run(0.0f);
  } else {
    run(0.0);
  }
  return out;
}

}  // namespace

void register_ula_ops(torch::Library& m) {
  m.impl("ula_step", &ula_step_cpu);
}

}  // namespace pysampler::cpu::CPU_CAPABILITY
