// Test-only op pysampler::philox_words: the raw Philox4x32-10 words of csrc/philox.h, so the
// tests can check the native stream bit for bit against the known-answer vector and
// pysampler/rng.py. It has no tensor inputs, hence the CompositeExplicitAutograd key.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdint>

#include "philox.h"

namespace pysampler {
namespace {

at::Tensor philox_words_op(int64_t seed, int64_t offset, int64_t n) {
  TORCH_CHECK_VALUE(seed >= 0, "pysampler::philox_words: seed must be in [0, 2**63); got ", seed);
  TORCH_CHECK_VALUE(offset >= 0, "pysampler::philox_words: offset must be in [0, 2**63); got ", offset);
  TORCH_CHECK_VALUE(n >= 0, "pysampler::philox_words: n must be non-negative; got ", n);
  at::Tensor out = at::empty({n, 4}, at::TensorOptions().dtype(at::kLong));
  int64_t* p = out.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const PhiloxWords w = philox_words(static_cast<uint64_t>(seed), static_cast<uint64_t>(offset) + i);
    for (int k = 0; k < 4; ++k) {
      p[4 * i + k] = static_cast<int64_t>(w.w[k]);
    }
  }
  return out;
}

}  // namespace
}  // namespace pysampler

TORCH_LIBRARY_IMPL(pysampler, CompositeExplicitAutograd, m) {
  m.impl("philox_words", &pysampler::philox_words_op);
}
