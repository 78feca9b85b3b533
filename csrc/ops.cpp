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

}  // namespace
}  // namespace pysampler

TORCH_LIBRARY_IMPL(pysampler, Meta, m) { m.impl("ula_step", &pysampler::ula_step_meta); }
