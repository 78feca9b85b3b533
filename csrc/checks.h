// Argument checks shared by every implementation of an op (CPU, CUDA, Meta), so that eager
// calls, torch.compile tracing and every device reject the same bad inputs with the same
// message. Shape checks use sym_sizes() so the Meta kernel also works under symbolic shapes.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace pysampler {

// ula_step(x: (N, *event), grad: like x, step_size: (N,), noise_scale, rng: int64 (2,), prior_weight).
// noise_scale and prior_weight are plain floats and need no check.
inline void check_ula_step_args(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step_size,
                                const at::Tensor& rng) {
  constexpr const char* op = "pysampler::ula_step: ";
  TORCH_CHECK_VALUE(x.dim() >= 1, op, "x must have shape (N, *event) with at least one dimension; got a 0-d tensor");
  TORCH_CHECK_VALUE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
                    "x must be float32 or float64; got ", x.scalar_type());
  TORCH_CHECK_VALUE(grad.scalar_type() == x.scalar_type(), op, "grad must have the dtype of x (", x.scalar_type(),
                    "); got ", grad.scalar_type());
  TORCH_CHECK_VALUE(grad.sym_sizes() == x.sym_sizes(), op, "grad must have the shape of x ", x.sym_sizes(), "; got ",
                    grad.sym_sizes());
  TORCH_CHECK_VALUE(step_size.scalar_type() == x.scalar_type(), op, "step_size must have the dtype of x (",
                    x.scalar_type(), "); got ", step_size.scalar_type());
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

}  // namespace pysampler
