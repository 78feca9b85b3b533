// CPU implementations of pysampler::kinetic_oba and pysampler::kinetic_bo (schemas: csrc/ops.cpp).
//
// The two halves of an OBABO step around the one gradient evaluation, each one pass over the
// state. Threads take contiguous ranges of flat elements (at::parallel_for); each range is walked
// in blocks of kNoiseBlock elements: the block's normals come from the Philox stream
// (csrc/cpu/noise.h), the per-chain coefficients h/2, h, a = exp(-gamma h / 2) and
// b = sqrt(-expm1(-gamma h)) are spread over the block's elements (chains may start anywhere in a
// block), and the update runs with at::vec. Element i always uses counter offset + i, so results do
// not depend on the thread count.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
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
constexpr int64_t kGrain = 8192;  // fewest elements worth a thread of their own

// kOba: O(h/2) B(h/2) A(h) on (x, v) -> (x_out, v_out); else B(h/2) O(h/2) on v -> v_out (x unused).
template <typename scalar_t, bool kOba>
void kinetic_kernel(const scalar_t* x, const scalar_t* v, const scalar_t* g, const scalar_t* step,
                    const scalar_t* friction, scalar_t* x_out, scalar_t* v_out, int64_t numel, int64_t per_chain,
                    uint64_t seed, uint64_t offset) {
  using Vec = at::vec::Vectorized<scalar_t>;
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    alignas(64) float z[kBlock];
    alignas(64) scalar_t hb[kBlock];
    alignas(64) scalar_t ab[kBlock];
    alignas(64) scalar_t bb[kBlock];
    // (h, a, b) per chain: a = exp(-gamma h / 2), b = sqrt(-expm1(-gamma h)), gamma h as the reference.
    auto coef = chain_cursor<scalar_t, 3>(per_chain, [&](int64_t n) {
      const scalar_t h = step[n], gh = friction[n] * h;
      return std::array<scalar_t, 3>{h, std::exp(scalar_t(-0.5) * gh), std::sqrt(-std::expm1(-gh))};
    });
    coef.start(begin);
    const Vec half(scalar_t(0.5));
    for (int64_t s = begin; s < end; s += kBlock) {
      const int64_t len = std::min(kBlock, end - s);
      fill_normals(seed, offset + static_cast<uint64_t>(s), len, z);
      coef.fill(len, {hb, ab, bb});
      int64_t j = 0;
      for (; j + Vec::size() <= len; j += Vec::size()) {
        const Vec h = Vec::loadu(hb + j), a = Vec::loadu(ab + j), b = Vec::loadu(bb + j);
        const Vec gv = Vec::loadu(g + s + j);
        Vec vv = Vec::loadu(v + s + j);
        if constexpr (kOba) {
          vv = a * vv + b * load_noise<scalar_t>(z + j);
          vv = vv - half * h * gv;
          (Vec::loadu(x + s + j) + h * vv).store(x_out + s + j);
        } else {
          vv = vv - half * h * gv;
          vv = a * vv + b * load_noise<scalar_t>(z + j);
        }
        vv.store(v_out + s + j);
      }
      for (; j < len; ++j) {
        const scalar_t h = hb[j], a = ab[j], b = bb[j], gv = g[s + j];
        scalar_t vv = v[s + j];
        if constexpr (kOba) {
          vv = a * vv + b * static_cast<scalar_t>(z[j]);
          vv = vv - scalar_t(0.5) * h * gv;
          x_out[s + j] = x[s + j] + h * vv;
        } else {
          vv = vv - scalar_t(0.5) * h * gv;
          vv = a * vv + b * static_cast<scalar_t>(z[j]);
        }
        v_out[s + j] = vv;
      }
    }
  });
}

template <bool kOba>
void run_kinetic(const at::Tensor& x, const at::Tensor& v, const at::Tensor& grad, const at::Tensor& step_size,
                 const at::Tensor& friction, at::Tensor& x_out, at::Tensor& v_out, uint64_t seed, uint64_t offset) {
  const int64_t numel = v.numel();
  if (numel == 0) {
    return;
  }
  const int64_t per_chain = numel / v.size(0);
  const auto run = [&](auto zero) {
    using scalar_t = decltype(zero);
    kinetic_kernel<scalar_t, kOba>(kOba ? x.const_data_ptr<scalar_t>() : nullptr, v.const_data_ptr<scalar_t>(),
                                   grad.const_data_ptr<scalar_t>(), step_size.const_data_ptr<scalar_t>(),
                                   friction.const_data_ptr<scalar_t>(),
                                   kOba ? x_out.mutable_data_ptr<scalar_t>() : nullptr,
                                   v_out.mutable_data_ptr<scalar_t>(), numel, per_chain, seed, offset);
  };
  if (v.scalar_type() == at::kFloat) {
    run(0.0f);
  } else {
    run(0.0);
  }
}

std::tuple<at::Tensor, at::Tensor> kinetic_oba_cpu(const at::Tensor& x, const at::Tensor& v, const at::Tensor& grad,
                                                   const at::Tensor& step_size, const at::Tensor& friction,
                                                   const at::Tensor& rng) {
  constexpr const char* op = "pysampler::kinetic_oba: ";
  check_kinetic_args(op, x, grad, step_size, friction, rng);
  check_cpu_state_type(op, x);
  check_like_state(op, "v", v, x);
  const auto [seed, offset] = read_rng(op, rng);
  const at::Tensor xc = x.contiguous(), vc = v.contiguous(), gc = grad.contiguous();
  const at::Tensor hc = step_size.contiguous(), fc = friction.contiguous();
  at::Tensor x_out = new_output_like(xc);
  at::Tensor v_out = new_output_like(vc);
  run_kinetic<true>(xc, vc, gc, hc, fc, x_out, v_out, seed, offset);
  return {x_out, v_out};
}

at::Tensor kinetic_bo_cpu(const at::Tensor& v, const at::Tensor& grad, const at::Tensor& step_size,
                          const at::Tensor& friction, const at::Tensor& rng) {
  constexpr const char* op = "pysampler::kinetic_bo: ";
  check_kinetic_args(op, v, grad, step_size, friction, rng);
  check_cpu_state_type(op, v);
  const auto [seed, offset] = read_rng(op, rng);
  const at::Tensor vc = v.contiguous(), gc = grad.contiguous();
  const at::Tensor hc = step_size.contiguous(), fc = friction.contiguous();
  at::Tensor v_out = new_output_like(vc);
  at::Tensor unused;
  run_kinetic<false>(unused, vc, gc, hc, fc, unused, v_out, seed, offset);
  return v_out;
}

}  // namespace

void register_kinetic_ops(torch::Library& m) {
  m.impl("kinetic_oba", &kinetic_oba_cpu);
  m.impl("kinetic_bo", &kinetic_bo_cpu);
}

}  // namespace pysampler::cpu::CPU_CAPABILITY
