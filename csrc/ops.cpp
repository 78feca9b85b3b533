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
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <tuple>

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
  // Test-only: the four Philox4x32-10 words at counters offset .. offset+n-1 for `seed`, as an
  // int64 tensor (n, 4) of uint32 values on the CPU. Checks the native stream bit for bit.
  m.def("philox_words(int seed, int offset, int n) -> Tensor", {at::Tag::pt2_compliant_tag});
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

}  // namespace
}  // namespace pysampler

TORCH_LIBRARY_IMPL(pysampler, Meta, m) {
  m.impl("ula_step", &pysampler::ula_step_meta);
  m.impl("kinetic_oba", &pysampler::kinetic_oba_meta);
  m.impl("kinetic_bo", &pysampler::kinetic_bo_meta);
}
