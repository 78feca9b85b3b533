// CPU implementations of the Metropolis-Hastings accept ops pysampler::mala_accept and
// pysampler::hmc_accept (schemas: csrc/ops.cpp).
//
// Threads take contiguous ranges of chains (at::parallel_for). For each chain: one pass over its
// row reduces what log alpha needs (at::vec lanes in the state's dtype, summed at the end), the
// MH test takes the chain's uniform at counter offset + n (drawn a vector of chains at a time),
// and the kept or the proposed row is copied to the outputs (x, grad) together with its energy.
// Rejected chains get back exactly their position, energy and cached gradient.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>

#include "../checks.h"
#include "../cpu_buffers.h"
#include "../philox.h"
#include "noise.h"
#include "ops.h"

namespace pysampler::cpu::CPU_CAPABILITY {
namespace {

using AcceptResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

constexpr int64_t kGrainElements = 8192;  // fewest elements worth a thread of their own

// Outputs of an accept op and the loop over chains shared by both ops. `log_alpha(n, row)` gives
// chain n's log alpha; the rest (MH test, row copies) is the same for MALA and HMC.
template <typename scalar_t, typename LogAlpha>
AcceptResult accept_rows(const char* op, const at::Tensor& x, const at::Tensor& energy, const at::Tensor& grad,
                         const at::Tensor& y, const at::Tensor& energy_y, const at::Tensor& grad_y,
                         const at::Tensor& rng, LogAlpha log_alpha) {
  const auto [seed, offset] = read_rng(op, rng);
  const int64_t n_chains = x.size(0);
  const int64_t d = n_chains == 0 ? 0 : x.numel() / n_chains;
  at::Tensor x_out = new_output_like(x);
  at::Tensor g_out = new_output_like(grad);
  at::Tensor e_out = new_output_like(energy);
  at::Tensor prob = at::empty({n_chains}, x.options());
  at::Tensor accepted = at::empty({n_chains}, x.options().dtype(at::kBool));
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* yp = y.const_data_ptr<scalar_t>();
  const scalar_t* gp = grad.const_data_ptr<scalar_t>();
  const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
  const scalar_t* ep = energy.const_data_ptr<scalar_t>();
  const scalar_t* eyp = energy_y.const_data_ptr<scalar_t>();
  scalar_t* xo = x_out.mutable_data_ptr<scalar_t>();
  scalar_t* go = g_out.mutable_data_ptr<scalar_t>();
  scalar_t* eo = e_out.mutable_data_ptr<scalar_t>();
  scalar_t* po = prob.mutable_data_ptr<scalar_t>();
  bool* ao = accepted.mutable_data_ptr<bool>();
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(d, 1));
  at::parallel_for(0, n_chains, grain, [&](int64_t begin, int64_t end) {
    alignas(64) float uniforms[kNoiseBlock];  // chain n's uniform is at counter offset + n
    for (int64_t n = begin; n < end; ++n) {
      if ((n - begin) % kNoiseBlock == 0) {
        fill_uniforms(seed, offset + static_cast<uint64_t>(n), std::min(kNoiseBlock, end - n), uniforms);
      }
      scalar_t p;
      const bool acc = mh_accept(log_alpha(n, n * d), uniforms[(n - begin) % kNoiseBlock], p);
      po[n] = p;
      ao[n] = acc;
      eo[n] = acc ? eyp[n] : ep[n];
      std::memcpy(xo + n * d, (acc ? yp : xp) + n * d, sizeof(scalar_t) * d);
      std::memcpy(go + n * d, (acc ? gyp : gp) + n * d, sizeof(scalar_t) * d);
    }
  });
  return {x_out, e_out, g_out, prob, accepted};
}

AcceptResult mala_accept_cpu(const at::Tensor& x, const at::Tensor& energy, const at::Tensor& grad,
                             const at::Tensor& y, const at::Tensor& energy_y, const at::Tensor& grad_y,
                             const at::Tensor& step_size, const at::Tensor& rng) {
  constexpr const char* op = "pysampler::mala_accept: ";
  check_mala_accept_args(op, x, energy, grad, y, energy_y, grad_y, step_size, rng);
  check_cpu_state_type(op, x);
  const at::Tensor xc = x.contiguous(), yc = y.contiguous(), gc = grad.contiguous(), gyc = grad_y.contiguous();
  const at::Tensor ec = energy.contiguous(), eyc = energy_y.contiguous(), hc = step_size.contiguous();
  const int64_t d = x.size(0) == 0 ? 0 : x.numel() / x.size(0);
  const auto run = [&](auto zero) {
    using scalar_t = decltype(zero);
    const scalar_t *xp = xc.const_data_ptr<scalar_t>(), *yp = yc.const_data_ptr<scalar_t>();
    const scalar_t *gp = gc.const_data_ptr<scalar_t>(), *gyp = gyc.const_data_ptr<scalar_t>();
    const scalar_t *ep = ec.const_data_ptr<scalar_t>(), *eyp = eyc.const_data_ptr<scalar_t>();
    const scalar_t* hp = hc.const_data_ptr<scalar_t>();
    // log alpha = U(x) - U(y) - (|x - y + h grad_y|^2 - |y - x + h grad|^2) / (4h)   (Roberts & Tweedie 1996)
    const auto log_alpha = [=](int64_t n, int64_t row) {
      using Vec = at::vec::Vectorized<scalar_t>;
      const scalar_t h = hp[n];
      const Vec hv(h);
      Vec fwd_v(0), bwd_v(0);
      int64_t j = row;
      for (; j + Vec::size() <= row + d; j += Vec::size()) {
        const Vec diff = Vec::loadu(yp + j) - Vec::loadu(xp + j);
        const Vec a = diff + hv * Vec::loadu(gp + j);
        const Vec b = hv * Vec::loadu(gyp + j) - diff;
        fwd_v = fwd_v + a * a;
        bwd_v = bwd_v + b * b;
      }
      scalar_t fwd = at::vec::vec_reduce_all<scalar_t>([](Vec& u, Vec& v) { return u + v; }, fwd_v);
      scalar_t bwd = at::vec::vec_reduce_all<scalar_t>([](Vec& u, Vec& v) { return u + v; }, bwd_v);
      for (; j < row + d; ++j) {
        const scalar_t diff = yp[j] - xp[j];
        const scalar_t a = diff + h * gp[j];
        const scalar_t b = h * gyp[j] - diff;
        fwd += a * a;
        bwd += b * b;
      }
      return ep[n] - eyp[n] - (bwd - fwd) / (scalar_t(4) * h);
    };
    return accept_rows<scalar_t>(op, xc, ec, gc, yc, eyc, gyc, rng, log_alpha);
  };
  return x.scalar_type() == at::kFloat ? run(0.0f) : run(0.0);
}

AcceptResult hmc_accept_cpu(const at::Tensor& x, const at::Tensor& energy, const at::Tensor& grad,
                            const at::Tensor& p0, const at::Tensor& y, const at::Tensor& energy_y,
                            const at::Tensor& grad_y, const at::Tensor& p, const at::Tensor& kick_size,
                            const at::Tensor& rng) {
  constexpr const char* op = "pysampler::hmc_accept: ";
  check_hmc_accept_args(op, x, energy, grad, p0, y, energy_y, grad_y, p, kick_size, rng);
  check_cpu_state_type(op, x);
  const at::Tensor xc = x.contiguous(), yc = y.contiguous(), gc = grad.contiguous(), gyc = grad_y.contiguous();
  const at::Tensor p0c = p0.contiguous(), pc = p.contiguous();
  const at::Tensor ec = energy.contiguous(), eyc = energy_y.contiguous(), kc = kick_size.contiguous();
  const int64_t d = x.size(0) == 0 ? 0 : x.numel() / x.size(0);
  const auto run = [&](auto zero) {
    using scalar_t = decltype(zero);
    const scalar_t *yp = yc.const_data_ptr<scalar_t>(), *gyp = gyc.const_data_ptr<scalar_t>();
    const scalar_t *p0p = p0c.const_data_ptr<scalar_t>(), *pp = pc.const_data_ptr<scalar_t>();
    const scalar_t *ep = ec.const_data_ptr<scalar_t>(), *eyp = eyc.const_data_ptr<scalar_t>();
    const scalar_t* kp = kc.const_data_ptr<scalar_t>();
    // H = U + |p|^2 / 2 with the closing half kick p - k grad_y applied here; a non-finite y rejects
    // (a y row with NaN or inf has a non-finite sum: one vector accumulation checks it).
    const auto log_alpha = [=](int64_t n, int64_t row) {
      using Vec = at::vec::Vectorized<scalar_t>;
      const scalar_t k = kp[n];
      const Vec kv(k);
      Vec ke0_v(0), ke1_v(0), y_v(0);
      int64_t j = row;
      for (; j + Vec::size() <= row + d; j += Vec::size()) {
        const Vec p0v = Vec::loadu(p0p + j);
        const Vec pe = Vec::loadu(pp + j) - kv * Vec::loadu(gyp + j);
        ke0_v = ke0_v + p0v * p0v;
        ke1_v = ke1_v + pe * pe;
        y_v = y_v + Vec::loadu(yp + j) * Vec(0);  // 0 * y: NaN exactly where y is NaN or inf
      }
      const auto sum = [](Vec& u, Vec& v) { return u + v; };
      scalar_t ke0 = at::vec::vec_reduce_all<scalar_t>(sum, ke0_v);
      scalar_t ke1 = at::vec::vec_reduce_all<scalar_t>(sum, ke1_v);
      scalar_t y_check = at::vec::vec_reduce_all<scalar_t>(sum, y_v);
      for (; j < row + d; ++j) {
        const scalar_t pe = pp[j] - k * gyp[j];
        ke0 += p0p[j] * p0p[j];
        ke1 += pe * pe;
        y_check += yp[j] * scalar_t(0);
      }
      if (!std::isfinite(y_check)) {
        return -std::numeric_limits<scalar_t>::infinity();
      }
      const scalar_t h0 = ep[n] + scalar_t(0.5) * ke0;
      const scalar_t h1 = eyp[n] + scalar_t(0.5) * ke1;
      return h0 - h1;
    };
    return accept_rows<scalar_t>(op, xc, ec, gc, yc, eyc, gyc, rng, log_alpha);
  };
  return x.scalar_type() == at::kFloat ? run(0.0f) : run(0.0);
}

}  // namespace

void register_accept_ops(torch::Library& m) {
  m.impl("mala_accept", &mala_accept_cpu);
  m.impl("hmc_accept", &hmc_accept_cpu);
}

}  // namespace pysampler::cpu::CPU_CAPABILITY
