// CPU implementations of pysampler::momentum, leapfrog_kick_drift and kick (schemas: csrc/ops.cpp).
//
// momentum: normals from the Philox stream (csrc/cpu/noise.h) cast to the state's dtype.
// leapfrog_kick_drift: p' = p - k grad; x' = x + h p' in one pass (k, h per chain); kick: p - k grad.
// Threads take contiguous ranges of flat elements; blocks spread the per-chain sizes over their
// elements (csrc/cpu/chains.h) and the arithmetic runs with at::vec.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <tuple>

#include "../checks.h"
#include "../cpu_buffers.h"
#include "chains.h"
#include "noise.h"
#include "ops.h"

namespace pysampler::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kBlock = kNoiseBlock;
constexpr int64_t kGrain = 8192;

template <typename scalar_t>
void momentum_kernel(scalar_t* out, int64_t numel, uint64_t seed, uint64_t offset) {
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    alignas(64) float z[kBlock];
    for (int64_t s = begin; s < end; s += kBlock) {
      const int64_t len = std::min(kBlock, end - s);
      fill_normals(seed, offset + static_cast<uint64_t>(s), len, z);
      for (int64_t j = 0; j < len; ++j) {
        out[s + j] = static_cast<scalar_t>(z[j]);
      }
    }
  });
}

at::Tensor momentum_cpu(const at::Tensor& rng, const at::Tensor& like) {
  constexpr const char* op = "pysampler::momentum: ";
  check_state(op, like);
  check_cpu_state_type(op, like);
  check_rng(op, rng);
  const auto [seed, offset] = read_rng(op, rng);
  at::Tensor out = new_output_like(like);
  if (out.scalar_type() == at::kFloat) {
    momentum_kernel(out.mutable_data_ptr<float>(), out.numel(), seed, offset);
  } else {
    momentum_kernel(out.mutable_data_ptr<double>(), out.numel(), seed, offset);
  }
  return out;
}

// kDrift: p' = p - k g and x' = x + h p'; else only p' (x, h, x_out unused).
template <typename scalar_t, bool kDrift>
void kick_drift_kernel(const scalar_t* x, const scalar_t* p, const scalar_t* g, const scalar_t* kick,
                       const scalar_t* step, scalar_t* x_out, scalar_t* p_out, int64_t numel, int64_t per_chain) {
  using Vec = at::vec::Vectorized<scalar_t>;
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    alignas(64) scalar_t kb[kBlock];
    alignas(64) scalar_t hb[kBlock];
    auto coef = chain_cursor<scalar_t, 2>(per_chain, [&](int64_t n) {
      return std::array<scalar_t, 2>{kick[n], kDrift ? step[n] : scalar_t(0)};
    });
    coef.start(begin);
    for (int64_t s = begin; s < end; s += kBlock) {
      const int64_t len = std::min(kBlock, end - s);
      coef.fill(len, {kb, hb});
      int64_t j = 0;
      for (; j + Vec::size() <= len; j += Vec::size()) {
        const Vec pv = Vec::loadu(p + s + j) - Vec::loadu(kb + j) * Vec::loadu(g + s + j);
        pv.store(p_out + s + j);
        if constexpr (kDrift) {
          (Vec::loadu(x + s + j) + Vec::loadu(hb + j) * pv).store(x_out + s + j);
        }
      }
      for (; j < len; ++j) {
        const scalar_t pv = p[s + j] - kb[j] * g[s + j];
        p_out[s + j] = pv;
        if constexpr (kDrift) {
          x_out[s + j] = x[s + j] + hb[j] * pv;
        }
      }
    }
  });
}

template <bool kDrift>
void run_kick_drift(const at::Tensor& x, const at::Tensor& p, const at::Tensor& g, const at::Tensor& kick,
                    const at::Tensor& step, at::Tensor& x_out, at::Tensor& p_out) {
  const int64_t numel = p.numel();
  if (numel == 0) {
    return;
  }
  const auto run = [&](auto zero) {
    using scalar_t = decltype(zero);
    kick_drift_kernel<scalar_t, kDrift>(
        kDrift ? x.const_data_ptr<scalar_t>() : nullptr, p.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
        kick.const_data_ptr<scalar_t>(), kDrift ? step.const_data_ptr<scalar_t>() : nullptr,
        kDrift ? x_out.mutable_data_ptr<scalar_t>() : nullptr, p_out.mutable_data_ptr<scalar_t>(), numel,
        numel / p.size(0));
  };
  if (p.scalar_type() == at::kFloat) {
    run(0.0f);
  } else {
    run(0.0);
  }
}

std::tuple<at::Tensor, at::Tensor> leapfrog_kick_drift_cpu(const at::Tensor& x, const at::Tensor& p,
                                                           const at::Tensor& grad, const at::Tensor& kick_size,
                                                           const at::Tensor& step_size) {
  check_kick_drift_args("pysampler::leapfrog_kick_drift: ", x, p, grad, kick_size, step_size);
  check_cpu_state_type("pysampler::leapfrog_kick_drift: ", x);
  const at::Tensor xc = x.contiguous(), pc = p.contiguous(), gc = grad.contiguous();
  const at::Tensor kc = kick_size.contiguous(), hc = step_size.contiguous();
  at::Tensor x_out = new_output_like(xc);
  at::Tensor p_out = new_output_like(pc);
  run_kick_drift<true>(xc, pc, gc, kc, hc, x_out, p_out);
  return {x_out, p_out};
}

at::Tensor kick_cpu(const at::Tensor& p, const at::Tensor& grad, const at::Tensor& kick_size) {
  check_kick_args("pysampler::kick: ", p, grad, kick_size);
  check_cpu_state_type("pysampler::kick: ", p);
  const at::Tensor pc = p.contiguous(), gc = grad.contiguous(), kc = kick_size.contiguous();
  at::Tensor p_out = new_output_like(pc);
  at::Tensor unused;
  run_kick_drift<false>(unused, pc, gc, kc, unused, unused, p_out);
  return p_out;
}

}  // namespace

void register_hmc_ops(torch::Library& m) {
  m.impl("momentum", &momentum_cpu);
  m.impl("leapfrog_kick_drift", &leapfrog_kick_drift_cpu);
  m.impl("kick", &kick_cpu);
}

}  // namespace pysampler::cpu::CPU_CAPABILITY
