// Argument checks shared by every implementation of an op (CPU, CUDA, Meta), so that eager
// calls, torch.compile tracing and every device reject the same bad inputs with the same
// message. Shape checks use sym_sizes() so the Meta kernel also works under symbolic shapes.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <initializer_list>
#include <optional>
#include <utility>

namespace pysampler {

// States may be float32 or float64, or float16 / bfloat16 storage whose arithmetic runs in float32
// (the "compute dtype"); per-chain parameters and schedule tables are in the compute dtype. Which
// dtypes a device's kernels take is checked by those kernels (the CPU ones: float32 / float64).
inline bool is_half_storage(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }
inline at::ScalarType compute_type(at::ScalarType t) { return is_half_storage(t) ? at::kFloat : t; }
inline bool is_state_type(at::ScalarType t) { return t == at::kFloat || t == at::kDouble || is_half_storage(t); }

// ula_step(x: (N, *event), grad: like x, step_size: (N,), noise_scale, rng: int64 (2,), prior_weight).
// noise_scale and prior_weight are plain floats and need no check.
inline void check_ula_step_args(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step_size,
                                const at::Tensor& rng) {
  constexpr const char* op = "pysampler::ula_step: ";
  TORCH_CHECK_VALUE(x.dim() >= 1, op, "x must have shape (N, *event) with at least one dimension; got a 0-d tensor");
  TORCH_CHECK_VALUE(is_state_type(x.scalar_type()), op, "x must be float32, float64, float16 or bfloat16; got ",
                    x.scalar_type());
  TORCH_CHECK_VALUE(grad.scalar_type() == x.scalar_type(), op, "grad must have the dtype of x (", x.scalar_type(),
                    "); got ", grad.scalar_type());
  TORCH_CHECK_VALUE(grad.sym_sizes() == x.sym_sizes(), op, "grad must have the shape of x ", x.sym_sizes(), "; got ",
                    grad.sym_sizes());
  TORCH_CHECK_VALUE(step_size.scalar_type() == compute_type(x.scalar_type()), op,
                    "step_size must have the dtype of x's arithmetic (", compute_type(x.scalar_type()), "); got ",
                    step_size.scalar_type());
  TORCH_CHECK_VALUE(step_size.dim() == 1 && step_size.sym_size(0) == x.sym_size(0), op,
                    "step_size must have shape (N,) = (", x.sym_size(0), ",), one step size per chain; got ",
                    step_size.sym_sizes());
  TORCH_CHECK_VALUE(rng.scalar_type() == at::kLong, op, "rng must be an int64 tensor (seed, offset); got ",
                    rng.scalar_type());
  TORCH_CHECK_VALUE(rng.dim() == 1 && rng.sym_size(0) == 2, op, "rng must have shape (2,) = (seed, offset); got ",
                    rng.sym_sizes());
  TORCH_CHECK_VALUE(grad.device() == x.device(), op, "grad must be on the device of x (", x.device(), "); got ",
                    grad.device());
  TORCH_CHECK_VALUE(step_size.device() == x.device(), op, "step_size must be on the device of x (", x.device(),
                    "); got ", step_size.device());
}

// Generic pieces for the other ops. `op` is the message prefix, e.g. "pysampler::kinetic_oba: ".

// x: (N, *event), float32, float64, float16 or bfloat16.
inline void check_state(const char* op, const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.dim() >= 1, op, "x must have shape (N, *event) with at least one dimension; got a 0-d tensor");
  TORCH_CHECK_VALUE(is_state_type(x.scalar_type()), op, "x must be float32, float64, float16 or bfloat16; got ",
                    x.scalar_type());
}

// The CPU kernels' own restriction: float32 or float64 states.
inline void check_cpu_state_type(const char* op, const at::Tensor& x) {
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                    "x must be float32 or float64 for the CPU kernels (float16 / bfloat16 states run on the "
                    "reference backend or a GPU one); got ", x.scalar_type());
}

// `t` has the shape, dtype and device of x.
inline void check_like_state(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK_VALUE(t.scalar_type() == x.scalar_type(), op, name, " must have the dtype of x (", x.scalar_type(),
                    "); got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.sym_sizes() == x.sym_sizes(), op, name, " must have the shape of x ", x.sym_sizes(), "; got ",
                    t.sym_sizes());
  TORCH_CHECK_VALUE(t.device() == x.device(), op, name, " must be on the device of x (", x.device(), "); got ",
                    t.device());
}

// `t`: (N,), one value per chain, in x's compute dtype, on x's device.
inline void check_per_chain(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK_VALUE(t.scalar_type() == compute_type(x.scalar_type()), op, name, " must have the dtype of x's arithmetic (",
                    compute_type(x.scalar_type()), "); got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.sym_size(0) == x.sym_size(0), op, name, " must have shape (N,) = (",
                    x.sym_size(0), ",), one value per chain; got ", t.sym_sizes());
  TORCH_CHECK_VALUE(t.device() == x.device(), op, name, " must be on the device of x (", x.device(), "); got ",
                    t.device());
}

// rng: int64 (2,) = (seed, offset).
inline void check_rng(const char* op, const at::Tensor& rng) {
  TORCH_CHECK_VALUE(rng.scalar_type() == at::kLong, op, "rng must be an int64 tensor (seed, offset); got ",
                    rng.scalar_type());
  TORCH_CHECK_VALUE(rng.dim() == 1 && rng.sym_size(0) == 2, op, "rng must have shape (2,) = (seed, offset); got ",
                    rng.sym_sizes());
}

// kinetic_oba / kinetic_bo: v (and x) (N, *event), grad like v, step_size and friction (N,).
inline void check_kinetic_args(const char* op, const at::Tensor& v, const at::Tensor& grad, const at::Tensor& step_size,
                        const at::Tensor& friction, const at::Tensor& rng) {
  check_state(op, v);
  check_like_state(op, "grad", grad, v);
  check_per_chain(op, "step_size", step_size, v);
  check_per_chain(op, "friction", friction, v);
  check_rng(op, rng);
}

// leapfrog_kick_drift: x, p, grad (N, *event); kick_size, step_size (N,).
inline void check_kick_drift_args(const char* op, const at::Tensor& x, const at::Tensor& p, const at::Tensor& grad,
                                  const at::Tensor& kick_size, const at::Tensor& step_size) {
  check_state(op, x);
  check_like_state(op, "p", p, x);
  check_like_state(op, "grad", grad, x);
  check_per_chain(op, "kick_size", kick_size, x);
  check_per_chain(op, "step_size", step_size, x);
}

// kick: p, grad (N, *event); kick_size (N,).
inline void check_kick_args(const char* op, const at::Tensor& p, const at::Tensor& grad, const at::Tensor& kick_size) {
  check_state(op, p);
  check_like_state(op, "grad", grad, p);
  check_per_chain(op, "kick_size", kick_size, p);
}

// mala_accept: x, grad, y, grad_y (N, *event); energy, energy_y, step_size (N,).
inline void check_mala_accept_args(const char* op, const at::Tensor& x, const at::Tensor& energy,
                                   const at::Tensor& grad, const at::Tensor& y, const at::Tensor& energy_y,
                                   const at::Tensor& grad_y, const at::Tensor& step_size, const at::Tensor& rng) {
  check_state(op, x);
  check_like_state(op, "grad", grad, x);
  check_like_state(op, "y", y, x);
  check_like_state(op, "grad_y", grad_y, x);
  check_per_chain(op, "energy", energy, x);
  check_per_chain(op, "energy_y", energy_y, x);
  check_per_chain(op, "step_size", step_size, x);
  check_rng(op, rng);
}

// hmc_accept: x, grad, p0, y, grad_y, p (N, *event); energy, energy_y, kick_size (N,).
inline void check_hmc_accept_args(const char* op, const at::Tensor& x, const at::Tensor& energy,
                                  const at::Tensor& grad, const at::Tensor& p0, const at::Tensor& y,
                                  const at::Tensor& energy_y, const at::Tensor& grad_y, const at::Tensor& p,
                                  const at::Tensor& kick_size, const at::Tensor& rng) {
  check_state(op, x);
  check_like_state(op, "grad", grad, x);
  check_like_state(op, "p0", p0, x);
  check_like_state(op, "y", y, x);
  check_like_state(op, "grad_y", grad_y, x);
  check_like_state(op, "p", p, x);
  check_per_chain(op, "energy", energy, x);
  check_per_chain(op, "energy_y", energy_y, x);
  check_per_chain(op, "kick_size", kick_size, x);
  check_rng(op, rng);
}

// Diffusion: t_index int64 (N,) of 0-based steps, tables (T,) in x0's dtype on its device.
inline void check_schedule_args(const char* op, const at::Tensor& x0, const at::Tensor& t_index,
                                std::initializer_list<std::pair<const char*, const at::Tensor*>> tables) {
  TORCH_CHECK_VALUE(t_index.scalar_type() == at::kLong, op, "t_index must be an int64 tensor of 0-based steps; got ",
                    t_index.scalar_type());
  TORCH_CHECK_VALUE(t_index.dim() == 1 && t_index.sym_size(0) == x0.sym_size(0), op,
                    "t_index must have shape (N,) = (", x0.sym_size(0), ",), one step per sample; got ",
                    t_index.sym_sizes());
  TORCH_CHECK_VALUE(t_index.device() == x0.device(), op, "t_index must be on the device of x0 (", x0.device(),
                    "); got ", t_index.device());
  for (const auto& [name, table] : tables) {
    TORCH_CHECK_VALUE(table->scalar_type() == compute_type(x0.scalar_type()), op, name,
                      " must have the dtype of x0's arithmetic (", compute_type(x0.scalar_type()), "); got ",
                      table->scalar_type());
    TORCH_CHECK_VALUE(table->dim() == 1 && table->sym_size(0) >= 1, op, name,
                      " must be a (T,) schedule table with T >= 1; got shape ", table->sym_sizes());
    TORCH_CHECK_VALUE(table->device() == x0.device(), op, name, " must be on the device of x0 (", x0.device(),
                      "); got ", table->device());
  }
}

// q_sample: x0 (N, *event); t_index (N,); sqrt_ab, sqrt_1mab (T,).
inline void check_q_sample_args(const char* op, const at::Tensor& x0, const at::Tensor& t_index,
                                const at::Tensor& sqrt_ab, const at::Tensor& sqrt_1mab, const at::Tensor& rng) {
  check_state(op, x0);
  check_schedule_args(op, x0, t_index, {{"sqrt_ab", &sqrt_ab}, {"sqrt_1mab", &sqrt_1mab}});
  check_rng(op, rng);
}

// posterior_sample: x0, xt (N, *event); t_index (N,); coef_x0, coef_xt, std (T,).
inline void check_posterior_sample_args(const char* op, const at::Tensor& x0, const at::Tensor& xt,
                                        const at::Tensor& t_index, const at::Tensor& coef_x0,
                                        const at::Tensor& coef_xt, const at::Tensor& std_table,
                                        const at::Tensor& rng) {
  check_state(op, x0);
  check_like_state(op, "xt", xt, x0);
  check_schedule_args(op, x0, t_index, {{"coef_x0", &coef_x0}, {"coef_xt", &coef_xt}, {"std", &std_table}});
  check_rng(op, rng);
}

// fused_chain: x (N, *event), energy (N,), grad like x, v like x (kinetic only), step_size and friction
// (kinetic only) (N,), frozen bool (N,); 0 <= record_from <= n_steps, thin >= 0 (0: no trace),
// n_leapfrog >= 1, noise_scale finite and >= 0.
inline void check_fused_chain_args(const char* op, const at::Tensor& x, const at::Tensor& energy,
                                   const at::Tensor& grad, const std::optional<at::Tensor>& v,
                                   const at::Tensor& step_size, const std::optional<at::Tensor>& friction,
                                   const at::Tensor& frozen, const at::Tensor& rng, int64_t n_steps,
                                   int64_t record_from, int64_t thin, int64_t n_leapfrog, double noise_scale,
                                   bool kinetic) {
  check_state(op, x);
  check_like_state(op, "grad", grad, x);
  check_per_chain(op, "energy", energy, x);
  check_per_chain(op, "step_size", step_size, x);
  if (kinetic) {
    TORCH_CHECK_VALUE(v.has_value() && friction.has_value(), op, "the kinetic sampler needs v and friction");
    check_like_state(op, "v", *v, x);
    check_per_chain(op, "friction", *friction, x);
  }
  TORCH_CHECK_VALUE(frozen.scalar_type() == at::kBool && frozen.dim() == 1 && frozen.sym_size(0) == x.sym_size(0), op,
                    "frozen must be a bool tensor of shape (N,); got ", frozen.scalar_type(), " ", frozen.sym_sizes());
  check_rng(op, rng);
  TORCH_CHECK_VALUE(n_steps >= 0, op, "n_steps must be >= 0; got ", n_steps);
  TORCH_CHECK_VALUE(record_from >= 0 && record_from <= n_steps, op, "record_from must be in [0, n_steps]; got ",
                    record_from);
  TORCH_CHECK_VALUE(thin >= 0, op, "thin must be >= 0 (0: no trace); got ", thin);
  TORCH_CHECK_VALUE(n_leapfrog >= 1, op, "n_leapfrog must be >= 1; got ", n_leapfrog);
  TORCH_CHECK_VALUE(std::isfinite(noise_scale) && noise_scale >= 0, op, "noise_scale must be finite and >= 0; got ",
                    noise_scale);
}

}  // namespace pysampler
