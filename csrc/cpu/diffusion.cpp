// CPU implementations of pysampler::q_sample and pysampler::posterior_sample (schemas: csrc/ops.cpp).
//
// Each sample n has its own step t_index[n]: the schedule coefficients are gathered from the (T,)
// tables once per sample (csrc/cpu/chains.h spreads them over the block's elements), the normals
// come from the Philox stream (csrc/cpu/noise.h), and the update runs with at::vec:
//   q_sample:         out = sqrt_ab[t] * x0 + sqrt_1mab[t] * z
//   posterior_sample: out = (coef_x0[t] * x0 + coef_xt[t] * xt) + std[t] * z
// in this order (as pysampler.ops.q_sample_reference / posterior_sample_reference).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include "../checks.h"
#include "../cpu_buffers.h"
#include "chains.h"
#include "noise.h"
#include "ops.h"

namespace pysampler::cpu::CPU_CAPABILITY {
namespace {

constexpr int64_t kBlock = kNoiseBlock;
constexpr int64_t kGrain = 8192;

// kPosterior: (c0 x0 + ct xt) + s z; else c0 x0 + s z (xt, ct unused).
template <typename scalar_t, bool kPosterior>
void diffusion_kernel(const scalar_t* x0, const scalar_t* xt, const int64_t* t_index, const scalar_t* c0_table,
                      const scalar_t* ct_table, const scalar_t* std_table, int64_t n_steps, scalar_t* out,
                      int64_t numel, int64_t per_sample, uint64_t seed, uint64_t offset) {
  using Vec = at::vec::Vectorized<scalar_t>;
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    alignas(64) float z[kBlock];
    alignas(64) scalar_t c0b[kBlock];
    alignas(64) scalar_t ctb[kBlock];
    alignas(64) scalar_t sb[kBlock];
    auto coef = chain_cursor<scalar_t, 3>(per_sample, [&](int64_t n) {
      const int64_t t = t_index[n];
      TORCH_CHECK_VALUE(t >= 0 && t < n_steps, "t_index must be in [0, ", n_steps, "); sample ", n, " has ", t);
      return std::array<scalar_t, 3>{c0_table[t], kPosterior ? ct_table[t] : scalar_t(0), std_table[t]};
    });
    coef.start(begin);
    for (int64_t s = begin; s < end; s += kBlock) {
      const int64_t len = std::min(kBlock, end - s);
      fill_normals(seed, offset + static_cast<uint64_t>(s), len, z);
      coef.fill(len, {c0b, ctb, sb});
      int64_t j = 0;
      for (; j + Vec::size() <= len; j += Vec::size()) {
        Vec mean = Vec::loadu(c0b + j) * Vec::loadu(x0 + s + j);
        if constexpr (kPosterior) {
          mean = mean + Vec::loadu(ctb + j) * Vec::loadu(xt + s + j);
        }
        (mean + Vec::loadu(sb + j) * load_noise<scalar_t>(z + j)).store(out + s + j);
      }
      for (; j < len; ++j) {
        scalar_t mean = c0b[j] * x0[s + j];
        if constexpr (kPosterior) {
          mean = mean + ctb[j] * xt[s + j];
        }
        out[s + j] = mean + sb[j] * static_cast<scalar_t>(z[j]);
      }
    }
  });
}

template <bool kPosterior>
at::Tensor run_diffusion(const char* op, const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& t_index,
                         const at::Tensor& c0, const at::Tensor& ct, const at::Tensor& std_table,
                         const at::Tensor& rng) {
  const auto [seed, offset] = read_rng(op, rng);
  const at::Tensor x0c = x0.contiguous(), tc = t_index.contiguous(), c0c = c0.contiguous(), sc = std_table.contiguous();
  const at::Tensor xtc = kPosterior ? xt.contiguous() : x0c;
  const at::Tensor ctc = kPosterior ? ct.contiguous() : c0c;
  at::Tensor out = new_output_like(x0c);
  const int64_t numel = x0c.numel();
  if (numel == 0) {
    return out;
  }
  const auto run = [&](auto zero) {
    using scalar_t = decltype(zero);
    diffusion_kernel<scalar_t, kPosterior>(x0c.const_data_ptr<scalar_t>(), xtc.const_data_ptr<scalar_t>(),
                                           tc.const_data_ptr<int64_t>(), c0c.const_data_ptr<scalar_t>(),
                                           ctc.const_data_ptr<scalar_t>(), sc.const_data_ptr<scalar_t>(), c0c.size(0),
                                           out.mutable_data_ptr<scalar_t>(), numel, numel / x0c.size(0), seed, offset);
  };
  if (x0c.scalar_type() == at::kFloat) {
    run(0.0f);
  } else {
    run(0.0);
  }
  return out;
}

at::Tensor q_sample_cpu(const at::Tensor& x0, const at::Tensor& t_index, const at::Tensor& sqrt_ab,
                        const at::Tensor& sqrt_1mab, const at::Tensor& rng) {
  constexpr const char* op = "pysampler::q_sample: ";
  check_q_sample_args(op, x0, t_index, sqrt_ab, sqrt_1mab, rng);
  check_cpu_state_type(op, x0);
  return run_diffusion<false>(op, x0, x0, t_index, sqrt_ab, sqrt_ab, sqrt_1mab, rng);
}

at::Tensor posterior_sample_cpu(const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& t_index,
                                const at::Tensor& coef_x0, const at::Tensor& coef_xt, const at::Tensor& std_table,
                                const at::Tensor& rng) {
  constexpr const char* op = "pysampler::posterior_sample: ";
  check_posterior_sample_args(op, x0, xt, t_index, coef_x0, coef_xt, std_table, rng);
  check_cpu_state_type(op, x0);
  return run_diffusion<true>(op, x0, xt, t_index, coef_x0, coef_xt, std_table, rng);
}

}  // namespace

void register_diffusion_ops(torch::Library& m) {
  m.impl("q_sample", &q_sample_cpu);
  m.impl("posterior_sample", &posterior_sample_cpu);
}

}  // namespace pysampler::cpu::CPU_CAPABILITY
