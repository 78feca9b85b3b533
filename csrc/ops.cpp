// The schemas of every pysampler op: the one place that lists them.
//
// Implementations live per dispatch key: csrc/cpu/*.cpp (CPU), csrc/cuda/*.cu (CUDA), and the
// Meta (shape-only) kernels below, which make the ops traceable by torch.compile / FakeTensor
// and pass torch.library.opcheck. The Python face (reference implementations, dispatch
// between backends) is pysampler/ops.py and pysampler/backends/.
//
// Random numbers: ops that draw noise take `Tensor rng`, an int64 tensor (seed, offset) of
// shape (2,) on the device the op runs on (CPU for the CPU kernels), and draw the normal for
// flat element i from the Philox stream at counter offset + i (csrc/philox.h). They never
// advance the offset themselves: the sampler state owns it, so steps stay pure and replayable.
#include <ATen/core/Tensor.h>
#include <ATen/core/enum_tag.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "checks.h"

TORCH_LIBRARY(pysampler, m) {
  // One unadjusted Langevin step for N chains, x: (N, *event), h = step_size[chain(i)], w = prior_weight:
  //   g[i]   = grad[i] + w*x[i]          (only when w != 0: w == 0 skips the term, so an inf x gives no 0*inf NaN)
  //   out[i] = (x[i] - h*g[i]) + sqrt(2h) * noise_scale * normal(seed, offset + i)
  // in x's dtype (float32 or float64), in this order (as pysampler.ops.ula_step); the normal is
  // float32, cast to x's dtype. w adds the gradient of a standard-normal prior w * |x|^2 / 2.
  m.def(
      "ula_step(Tensor x, Tensor grad, Tensor step_size, float noise_scale, Tensor rng, float prior_weight=0.0) "
      "-> Tensor",
      {at::Tag::pt2_compliant_tag});
  // Kinetic Langevin, OBABO splitting, unit mass; h = step_size[chain], gamma = friction[chain],
  // a = exp(-gamma h / 2), b = sqrt(-expm1(-gamma h)) (the exact Ornstein-Uhlenbeck half step):
  //   kinetic_oba: v1 = a v + b normal(seed, offset + i);  v2 = v1 - (h/2) grad;  x' = x + h v2  -> (x', v2)
  //   kinetic_bo:  v1 = v - (h/2) grad;  v' = a v1 + b normal(seed, offset + i)                      -> v'
  // (as pysampler.ops.kinetic_oba / kinetic_bo), float32 or float64, normals float32.
  m.def("kinetic_oba(Tensor x, Tensor v, Tensor grad, Tensor step_size, Tensor friction, Tensor rng) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("kinetic_bo(Tensor v, Tensor grad, Tensor step_size, Tensor friction, Tensor rng) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // HMC (pysampler.ops.momentum / leapfrog_kick_drift / kick / hmc_accept):
  //   momentum: normal(seed, offset + i) shaped and typed like `like`;
  //   leapfrog_kick_drift: p' = p - k grad, x' = x + h p'  -> (x', p');  kick: p - k grad  (k, h per chain).
  m.def("momentum(Tensor rng, Tensor like) -> Tensor", {at::Tag::pt2_compliant_tag});
  m.def("leapfrog_kick_drift(Tensor x, Tensor p, Tensor grad, Tensor kick_size, Tensor step_size) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  m.def("kick(Tensor p, Tensor grad, Tensor kick_size) -> Tensor", {at::Tag::pt2_compliant_tag});
  // Metropolis-Hastings accepts, one reduction per chain; chain n accepts when
  // uniform(seed, offset + n) < min(1, alpha); a non-finite log alpha rejects; rejected chains keep
  // x, energy, grad exactly. Returns (x, energy, grad, accept_prob (N,), accepted (N,) bool).
  //   mala_accept: log alpha = U(x) - U(y) - (|x - y + h grad_y|^2 - |y - x + h grad|^2) / (4h)
  //   hmc_accept:  log alpha = (U(x) + |p0|^2/2) - (U(y) + |p - k grad_y|^2/2), -inf if y is not finite
  m.def(
      "mala_accept(Tensor x, Tensor energy, Tensor grad, Tensor y, Tensor energy_y, Tensor grad_y, "
      "Tensor step_size, Tensor rng) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  m.def(
      "hmc_accept(Tensor x, Tensor energy, Tensor grad, Tensor p0, Tensor y, Tensor energy_y, Tensor grad_y, "
      "Tensor p, Tensor kick_size, Tensor rng) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Diffusion (pysampler.ops.q_sample / posterior_sample), a per-sample step t = t_index[n] (0-based)
  // into (T,) schedule tables in x0's dtype; normal i at counter offset + i:
  //   q_sample:         out = sqrt_ab[t] x0 + sqrt_1mab[t] z
  //   posterior_sample: out = (coef_x0[t] x0 + coef_xt[t] xt) + std[t] z
  m.def("q_sample(Tensor x0, Tensor t_index, Tensor sqrt_ab, Tensor sqrt_1mab, Tensor rng) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  m.def(
      "posterior_sample(Tensor x0, Tensor xt, Tensor t_index, Tensor coef_x0, Tensor coef_xt, Tensor std, "
      "Tensor rng) -> Tensor",
      {at::Tag::pt2_compliant_tag});
  // Test-only: the four Philox4x32-10 words at counters offset .. offset+n-1 for `seed`, as an
  // int64 tensor (n, 4) of uint32 values on the CPU. Checks the native stream bit for bit.
  m.def("philox_words(int seed, int offset, int n) -> Tensor", {at::Tag::pt2_compliant_tag});
  // Whole-chain fused sampler (csrc/cpu/fused.cpp; pysampler/fused.py drives it): n_steps steps of
  // sampler ("ula", "mala", "kinetic", "hmc") on an analytic target ("gaussian_diag",
  // "gaussian_full", "mixture") given by `params`, from the state (x, energy, grad[, v]) on the
  // random stream rng. Returns (x, energy, grad, v (empty unless kinetic), frozen, bad_step,
  // accepted, trace): bad_step (N,) int64 the 1-based step a chain turned non-finite (0: never;
  // ULA / kinetic freeze it), accepted (N,) int64 accepted steps from record_from on (MALA / HMC),
  // trace (n_keep, *x.shape) every thin-th state from record_from on (n_keep = 0 when thin == 0).
  m.def(
      "fused_chain(str sampler, Tensor x, Tensor energy, Tensor grad, Tensor? v, Tensor step_size, "
      "Tensor? friction, Tensor frozen, Tensor rng, int n_steps, int record_from, int thin, int n_leapfrog, "
      "float noise_scale, str target, Tensor[] params) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Which build of the CPU kernels serves this process: "AVX512", "AVX2" or "DEFAULT" (csrc/cpu_dispatch.cpp).
  m.def("cpu_capability() -> str");
  // The CPU ops' output-buffer cache (csrc/cpu_buffers.h): set the cap on cached free bytes
  // (0 empties and disables it), returning the previous cap; the bytes it holds now.
  m.def("cpu_buffer_cache_limit(int bytes) -> int");
  m.def("cpu_buffer_cache_bytes() -> int");
}

namespace pysampler {
namespace {

at::Tensor ula_step_meta(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step_size,
                         double /*noise_scale*/, const at::Tensor& rng, double /*prior_weight*/) {
  check_ula_step_args(x, grad, step_size, rng);
  return at::empty_like(x, at::MemoryFormat::Contiguous);
}

std::tuple<at::Tensor, at::Tensor> kinetic_oba_meta(const at::Tensor& x, const at::Tensor& v, const at::Tensor& grad,
                                                    const at::Tensor& step_size, const at::Tensor& friction,
                                                    const at::Tensor& rng) {
  constexpr const char* op = "pysampler::kinetic_oba: ";
  check_kinetic_args(op, x, grad, step_size, friction, rng);
  check_like_state(op, "v", v, x);
  return {at::empty_like(x, at::MemoryFormat::Contiguous), at::empty_like(v, at::MemoryFormat::Contiguous)};
}

at::Tensor kinetic_bo_meta(const at::Tensor& v, const at::Tensor& grad, const at::Tensor& step_size,
                           const at::Tensor& friction, const at::Tensor& rng) {
  check_kinetic_args("pysampler::kinetic_bo: ", v, grad, step_size, friction, rng);
  return at::empty_like(v, at::MemoryFormat::Contiguous);
}

at::Tensor momentum_meta(const at::Tensor& rng, const at::Tensor& like) {
  check_state("pysampler::momentum: ", like);
  check_rng("pysampler::momentum: ", rng);
  return at::empty_like(like, at::MemoryFormat::Contiguous);
}

std::tuple<at::Tensor, at::Tensor> leapfrog_kick_drift_meta(const at::Tensor& x, const at::Tensor& p,
                                                            const at::Tensor& grad, const at::Tensor& kick_size,
                                                            const at::Tensor& step_size) {
  check_kick_drift_args("pysampler::leapfrog_kick_drift: ", x, p, grad, kick_size, step_size);
  return {at::empty_like(x, at::MemoryFormat::Contiguous), at::empty_like(p, at::MemoryFormat::Contiguous)};
}

at::Tensor kick_meta(const at::Tensor& p, const at::Tensor& grad, const at::Tensor& kick_size) {
  check_kick_args("pysampler::kick: ", p, grad, kick_size);
  return at::empty_like(p, at::MemoryFormat::Contiguous);
}

using AcceptResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

AcceptResult accept_meta_outputs(const at::Tensor& x, const at::Tensor& energy, const at::Tensor& grad) {
  return {at::empty_like(x, at::MemoryFormat::Contiguous), at::empty_like(energy, at::MemoryFormat::Contiguous),
          at::empty_like(grad, at::MemoryFormat::Contiguous), at::empty_like(energy, at::MemoryFormat::Contiguous),
          at::empty_like(energy, energy.options().dtype(at::kBool), at::MemoryFormat::Contiguous)};
}

AcceptResult mala_accept_meta(const at::Tensor& x, const at::Tensor& energy, const at::Tensor& grad,
                              const at::Tensor& y, const at::Tensor& energy_y, const at::Tensor& grad_y,
                              const at::Tensor& step_size, const at::Tensor& rng) {
  check_mala_accept_args("pysampler::mala_accept: ", x, energy, grad, y, energy_y, grad_y, step_size, rng);
  return accept_meta_outputs(x, energy, grad);
}

AcceptResult hmc_accept_meta(const at::Tensor& x, const at::Tensor& energy, const at::Tensor& grad,
                             const at::Tensor& p0, const at::Tensor& y, const at::Tensor& energy_y,
                             const at::Tensor& grad_y, const at::Tensor& p, const at::Tensor& kick_size,
                             const at::Tensor& rng) {
  check_hmc_accept_args("pysampler::hmc_accept: ", x, energy, grad, p0, y, energy_y, grad_y, p, kick_size, rng);
  return accept_meta_outputs(x, energy, grad);
}

at::Tensor q_sample_meta(const at::Tensor& x0, const at::Tensor& t_index, const at::Tensor& sqrt_ab,
                         const at::Tensor& sqrt_1mab, const at::Tensor& rng) {
  check_q_sample_args("pysampler::q_sample: ", x0, t_index, sqrt_ab, sqrt_1mab, rng);
  return at::empty_like(x0, at::MemoryFormat::Contiguous);
}

at::Tensor posterior_sample_meta(const at::Tensor& x0, const at::Tensor& xt, const at::Tensor& t_index,
                                 const at::Tensor& coef_x0, const at::Tensor& coef_xt, const at::Tensor& std_table,
                                 const at::Tensor& rng) {
  check_posterior_sample_args("pysampler::posterior_sample: ", x0, xt, t_index, coef_x0, coef_xt, std_table, rng);
  return at::empty_like(x0, at::MemoryFormat::Contiguous);
}

using FusedResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                               at::Tensor>;

FusedResult fused_chain_meta(const std::string& sampler, const at::Tensor& x, const at::Tensor& energy,
                             const at::Tensor& grad, const std::optional<at::Tensor>& v, const at::Tensor& step_size,
                             const std::optional<at::Tensor>& friction, const at::Tensor& frozen,
                             const at::Tensor& rng, int64_t n_steps, int64_t record_from, int64_t thin,
                             int64_t n_leapfrog, double noise_scale, const std::string& /*target*/,
                             at::TensorList /*params*/) {
  const bool kinetic = sampler == "kinetic";
  check_fused_chain_args("pysampler::fused_chain: ", x, energy, grad, v, step_size, friction, frozen, rng, n_steps,
                         record_from, thin, n_leapfrog, noise_scale, kinetic);
  const int64_t n_keep = thin > 0 ? (n_steps - record_from) / thin : 0;
  std::vector<int64_t> trace_shape{n_keep};
  trace_shape.insert(trace_shape.end(), x.sizes().begin(), x.sizes().end());
  const auto like = [](const at::Tensor& t) { return at::empty_like(t, at::MemoryFormat::Contiguous); };
  const at::Tensor counts = at::empty({x.size(0)}, x.options().dtype(at::kLong));
  return {like(x), like(energy), like(grad), kinetic ? like(*v) : at::empty({0}, x.options()), like(frozen), counts,
          at::empty_like(counts), at::empty(trace_shape, x.options())};
}

}  // namespace
}  // namespace pysampler

TORCH_LIBRARY_IMPL(pysampler, Meta, m) {
  m.impl("fused_chain", &pysampler::fused_chain_meta);
  m.impl("q_sample", &pysampler::q_sample_meta);
  m.impl("posterior_sample", &pysampler::posterior_sample_meta);
  m.impl("momentum", &pysampler::momentum_meta);
  m.impl("leapfrog_kick_drift", &pysampler::leapfrog_kick_drift_meta);
  m.impl("kick", &pysampler::kick_meta);
  m.impl("mala_accept", &pysampler::mala_accept_meta);
  m.impl("hmc_accept", &pysampler::hmc_accept_meta);
  m.impl("ula_step", &pysampler::ula_step_meta);
  m.impl("kinetic_oba", &pysampler::kinetic_oba_meta);
  m.impl("kinetic_bo", &pysampler::kinetic_bo_meta);
}
