// CPU implementation of pysampler::ula_step (schema and semantics: csrc/ops.cpp).
//
// Work is split over threads with at::parallel_for in contiguous ranges of flat elements; each
// range is processed in blocks of kBlock elements that live on the stack:
//   1. Philox words for the block's counters (a loop with no calls, so the compiler vectorises
//      the 32x32->64-bit multiplies),
//   2. Box-Muller in float32 (scalar logf / cosf),
//   3. the affine update (x - h*(g + w*x)) + s*z with at::vec, h and s = sqrt(2h)*noise_scale per
//      element of the block (chains may start anywhere inside a block). The prior term w*x is a
//      compile-time branch (kPrior): with w == 0 it is not computed at all (no 0*inf NaN for an
//      infinite x) and the arithmetic is (x - h*g) + s*z, as before the prior existed.
// Element i always uses counter offset + i, so the result does not depend on the thread count.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "../checks.h"
#include "../philox.h"

namespace pysampler {
namespace {

constexpr int64_t kBlock = 256;   // elements per stack block (a few KiB of buffers)
constexpr int64_t kGrain = 8192;  // fewest elements worth a thread of their own

// Philox words 0 and 1 at counters offset .. offset+n-1 (n <= kBlock), scalar: any CPU.
inline void philox_block_scalar(uint64_t seed, uint64_t offset, int64_t n, uint32_t* w0, uint32_t* w1) {
  const PhiloxKey key{{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)}};
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t c = offset + static_cast<uint64_t>(j);
    const PhiloxWords w =
        philox4x32_10(PhiloxWords{{static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), 0u, 0u}}, key);
    w0[j] = w.w[0];
    w1[j] = w.w[1];
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PYSAMPLER_HAVE_AVX2_PATH 1
// The same words, eight counters at a time with AVX2, for CPUs that have it (checked at run
// time; the library itself targets baseline x86-64). Integer arithmetic only, so the words
// are bit-identical to the scalar path and results do not depend on the CPU.
__attribute__((target("avx2"))) void philox_block_avx2(uint64_t seed, uint64_t offset, int64_t n, uint32_t* w0,
                                                       uint32_t* w1) {
  using philox_detail::kKeyA;
  using philox_detail::kKeyB;
  const __m256i mul_a = _mm256_set1_epi32(static_cast<int>(philox_detail::kRoundA));
  const __m256i mul_b = _mm256_set1_epi32(static_cast<int>(philox_detail::kRoundB));
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  // hi and lo 32-bit words of a * m per lane: _mm256_mul_epu32 multiplies the even lanes.
  auto mulhilo = [](__m256i a, __m256i m, __m256i& hi, __m256i& lo) __attribute__((target("avx2"))) {
    const __m256i even = _mm256_mul_epu32(a, m);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  };
  alignas(32) uint32_t t0[8];
  alignas(32) uint32_t t1[8];
  for (int64_t j = 0; j < n; j += 8) {
    const uint64_t base = offset + static_cast<uint64_t>(j);
    const __m256i base_lo = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base)));
    __m256i c0 = _mm256_add_epi32(base_lo, lanes);
    // Lanes whose low word wrapped carry into the high word (unsigned c0 < base_lo).
    const __m256i carry = _mm256_cmpgt_epi32(_mm256_xor_si256(base_lo, sign), _mm256_xor_si256(c0, sign));
    __m256i c1 = _mm256_sub_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base >> 32))), carry);
    __m256i c2 = _mm256_setzero_si256();
    __m256i c3 = _mm256_setzero_si256();
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int r = 0; r < philox_detail::kRounds; ++r) {
      __m256i hi_a, lo_a, hi_b, lo_b;
      mulhilo(c2, mul_b, hi_b, lo_b);
      mulhilo(c0, mul_a, hi_a, lo_a);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi_b, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      c1 = lo_b;
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi_a, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c3 = lo_a;
      k0 += kKeyA;
      k1 += kKeyB;
    }
    if (j + 8 <= n) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w0 + j), c0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w1 + j), c1);
    } else {
      _mm256_store_si256(reinterpret_cast<__m256i*>(t0), c0);
      _mm256_store_si256(reinterpret_cast<__m256i*>(t1), c1);
      for (int64_t k = 0; j + k < n; ++k) {
        w0[j + k] = t0[k];
        w1[j + k] = t1[k];
      }
    }
  }
}

// PYSAMPLER_NO_AVX2=1 forces the scalar path (the tests use it to check both paths agree).
bool cpu_has_avx2() {
  static const bool has = [] {
    const char* off = std::getenv("PYSAMPLER_NO_AVX2");
    return __builtin_cpu_supports("avx2") && !(off != nullptr && off[0] != '\0' && off[0] != '0');
  }();
  return has;
}
#endif

// z[j] = philox_normal(seed, offset + j) for j < n <= kBlock: Philox words (vectorised where the
// CPU allows), then Box-Muller with libm's logf/cosf (the same function for every element, so
// results do not depend on where blocks or threads start).
inline void fill_normals(uint64_t seed, uint64_t offset, int64_t n, float* z) {
  alignas(64) uint32_t w0[kBlock];
  alignas(64) uint32_t w1[kBlock];
#ifdef PYSAMPLER_HAVE_AVX2_PATH
  if (cpu_has_avx2()) {
    philox_block_avx2(seed, offset, n, w0, w1);
  } else {
    philox_block_scalar(seed, offset, n, w0, w1);
  }
#else
  philox_block_scalar(seed, offset, n, w0, w1);
#endif
  for (int64_t j = 0; j < n; ++j) {
    z[j] = philox_box_muller(philox_word_to_uniform(w0[j]), philox_word_to_uniform(w1[j]));
  }
}

// Vec::size() float32 normals as a Vec of scalar_t.
template <typename scalar_t>
inline at::vec::Vectorized<scalar_t> load_noise(const float* z) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return at::vec::Vectorized<float>::loadu(z);
  } else {
    alignas(64) scalar_t tmp[at::vec::Vectorized<scalar_t>::size()];
    for (int k = 0; k < at::vec::Vectorized<scalar_t>::size(); ++k) {
      tmp[k] = static_cast<scalar_t>(z[k]);
    }
    return at::vec::Vectorized<scalar_t>::loadu(tmp);
  }
}

// g + w*x: the effective gradient, with the prior term only when kPrior (w != 0).
template <bool kPrior, typename T>
inline T effective_grad(const T& g, const T& x, const T& w) {
  if constexpr (kPrior) {
    return g + w * x;
  } else {
    return g;
  }
}

template <typename scalar_t, bool kPrior>
void ula_step_kernel(const scalar_t* x, const scalar_t* g, const scalar_t* step, scalar_t* out, int64_t numel,
                     int64_t per_chain, scalar_t noise_scale, scalar_t prior_weight, uint64_t seed,
                     uint64_t offset) {
  using Vec = at::vec::Vectorized<scalar_t>;
  const Vec wv(prior_weight);
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    alignas(64) float z[kBlock];
    alignas(64) scalar_t hb[kBlock];
    alignas(64) scalar_t sb[kBlock];
    // Chain of the first element and how many of its elements remain from `begin` on.
    int64_t chain = begin / per_chain;
    int64_t left = (chain + 1) * per_chain - begin;
    scalar_t h = step[chain];
    scalar_t s = std::sqrt(scalar_t(2) * h) * noise_scale;
    for (int64_t b = begin; b < end; b += kBlock) {
      const int64_t len = std::min(kBlock, end - b);
      fill_normals(seed, offset + static_cast<uint64_t>(b), len, z);
      int64_t j = 0;
      if (left >= len) {
        // The whole block is in one chain: h and s are broadcast.
        left -= len;
        const Vec hv(h), sv(s);
        for (; j + Vec::size() <= len; j += Vec::size()) {
          const Vec xv = Vec::loadu(x + b + j);
          const Vec gv = effective_grad<kPrior>(Vec::loadu(g + b + j), xv, wv);
          const Vec r = xv - hv * gv + sv * load_noise<scalar_t>(z + j);
          r.store(out + b + j);
        }
        for (; j < len; ++j) {
          const scalar_t ge = effective_grad<kPrior>(g[b + j], x[b + j], prior_weight);
          out[b + j] = x[b + j] - h * ge + s * static_cast<scalar_t>(z[j]);
        }
        continue;
      }
      // Chains change inside the block: per-element h and s.
      for (int64_t k = 0; k < len; ++k) {
        if (left == 0) {
          ++chain;
          left = per_chain;
          h = step[chain];
          s = std::sqrt(scalar_t(2) * h) * noise_scale;
        }
        --left;
        hb[k] = h;
        sb[k] = s;
      }
      for (; j + Vec::size() <= len; j += Vec::size()) {
        const Vec xv = Vec::loadu(x + b + j);
        const Vec gv = effective_grad<kPrior>(Vec::loadu(g + b + j), xv, wv);
        const Vec r = xv - Vec::loadu(hb + j) * gv + Vec::loadu(sb + j) * load_noise<scalar_t>(z + j);
        r.store(out + b + j);
      }
      for (; j < len; ++j) {
        const scalar_t ge = effective_grad<kPrior>(g[b + j], x[b + j], prior_weight);
        out[b + j] = x[b + j] - hb[j] * ge + sb[j] * static_cast<scalar_t>(z[j]);
      }
    }
  });
}

at::Tensor ula_step_cpu(const at::Tensor& x, const at::Tensor& grad, const at::Tensor& step_size,
                        double noise_scale, const at::Tensor& rng, double prior_weight) {
  check_ula_step_args(x, grad, step_size, rng);
  TORCH_CHECK_VALUE(x.device().is_cpu(), "pysampler::ula_step (CPU): x must be a CPU tensor; got ", x.device());
  TORCH_CHECK_VALUE(rng.device().is_cpu(), "pysampler::ula_step (CPU): rng must be a CPU tensor; got ",
                    rng.device());
  const int64_t* rng_ptr = rng.const_data_ptr<int64_t>();
  const int64_t seed = rng_ptr[0];
  const int64_t offset = rng_ptr[rng.stride(0)];
  TORCH_CHECK_VALUE(seed >= 0, "pysampler::ula_step: rng[0] (seed) must be in [0, 2**63); got ", seed);
  TORCH_CHECK_VALUE(offset >= 0, "pysampler::ula_step: rng[1] (offset) must be in [0, 2**63); got ", offset);

  const at::Tensor xc = x.contiguous();
  const at::Tensor gc = grad.contiguous();
  const at::Tensor hc = step_size.contiguous();
  at::Tensor out = at::empty_like(xc, at::MemoryFormat::Contiguous);
  const int64_t numel = xc.numel();
  if (numel == 0) {
    return out;
  }
  const int64_t per_chain = numel / xc.size(0);
  const bool prior = prior_weight != 0.0;
  const auto run = [&](auto zero) {
    using scalar_t = decltype(zero);
    // w is rounded to x's dtype first, as torch does for `w * x` with a Python float w.
    const auto kernel = prior ? &ula_step_kernel<scalar_t, true> : &ula_step_kernel<scalar_t, false>;
    kernel(xc.const_data_ptr<scalar_t>(), gc.const_data_ptr<scalar_t>(), hc.const_data_ptr<scalar_t>(),
           out.mutable_data_ptr<scalar_t>(), numel, per_chain, static_cast<scalar_t>(noise_scale),
           static_cast<scalar_t>(prior_weight), static_cast<uint64_t>(seed), static_cast<uint64_t>(offset));
  };
  if (xc.scalar_type() == at::kFloat) {
    run(0.0f);
  } else {
    run(0.0);
  }
  return out;
}

}  // namespace
}  // namespace pysampler

TORCH_LIBRARY_IMPL(pysampler, CPU, m) { m.impl("ula_step", &pysampler::ula_step_cpu); }
