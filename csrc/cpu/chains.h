// Per-chain parameters spread over blocks of flat elements, for the CPU step kernels.
//
// A state x: (N, *event) is walked as flat elements in blocks (threads take contiguous ranges);
// chain boundaries fall anywhere inside a block. ChainCursor keeps the current chain and how many
// of its elements remain, computes a chain's K coefficients once (from the per-chain tensors) and
// writes them out per element, so the arithmetic of a block runs with at::vec on plain arrays.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

namespace pysampler::cpu::CPU_CAPABILITY {  // see ops.h: one copy per capability build

// Coef: chain index -> std::array<scalar_t, K>.
template <typename scalar_t, int K, typename Coef>
class ChainCursor {
 public:
  ChainCursor(int64_t per_chain, Coef coef) : per_chain_(per_chain), coef_(coef) {}

  // Position the cursor at flat element `begin`.
  void start(int64_t begin) {
    chain_ = begin / per_chain_;
    left_ = (chain_ + 1) * per_chain_ - begin;
    values_ = coef_(chain_);
  }

  // out[k][j] = coefficient k of the chain of the next j-th element, for j < len. Written one
  // chain's run at a time (std::fill_n vectorises), not element by element.
  void fill(int64_t len, const std::array<scalar_t*, K>& out) {
    for (int64_t j = 0; j < len;) {
      if (left_ == 0) {
        ++chain_;
        left_ = per_chain_;
        values_ = coef_(chain_);
      }
      const int64_t run = std::min(left_, len - j);
      for (int k = 0; k < K; ++k) {
        std::fill_n(out[k] + j, run, values_[k]);
      }
      j += run;
      left_ -= run;
    }
  }

 private:
  int64_t per_chain_;
  Coef coef_;
  int64_t chain_ = 0;
  int64_t left_ = 0;
  std::array<scalar_t, K> values_{};
};

template <typename scalar_t, int K, typename Coef>
ChainCursor<scalar_t, K, Coef> chain_cursor(int64_t per_chain, Coef coef) {
  return ChainCursor<scalar_t, K, Coef>(per_chain, coef);
}

}  // namespace pysampler::cpu::CPU_CAPABILITY
