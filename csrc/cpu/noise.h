// Blocks of the Philox stream on the CPU: normals for the step kernels of csrc/cpu/.
//
// fill_normals(seed, offset, n, z) writes z[j] = normal(seed, offset + j) for j < n <= kNoiseBlock
// (z must have room for kNoiseBlock floats: the vector path writes whole 8-lane vectors),
// the stream of csrc/philox.h (and pysampler/rng.py). One path per capability build (ops.h):
//
//   * AVX2 (and the AVX512 build): Philox eight counters at a time, then Box-Muller eight lanes at a time with SLEEF's
//     logf / cosf (1-ulp, the same functions torch's own vectorised CPU kernels use; libtorch_cpu
//     exports them). Every element goes through a full 8-lane vector, the tail too, so an
//     element's value does not depend on where a block or a thread's range starts.
//   * DEFAULT (any CPU): Philox and Box-Muller one counter at a time with libm's logf / cosf.
//
// The Philox words are integers and identical on both paths; the normals agree to an ulp or two
// of float32 (SLEEF vs libm), which is the tolerance every backend is held to.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <utility>

// The AVX2 Philox / Box-Muller path serves the AVX512 build too (its CPUs have AVX2).
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#define PYSAMPLER_NOISE_AVX2 1
#include <immintrin.h>
#endif

#include "../philox.h"

namespace pysampler::cpu::CPU_CAPABILITY {  // see ops.h: one copy per capability build

constexpr int64_t kNoiseBlock = 256;  // the most normals one call writes (a few KiB on the stack)

// Philox words 0 and 1 at counters offset .. offset+n-1 (n <= kNoiseBlock), scalar: any CPU.
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

#if defined(PYSAMPLER_NOISE_AVX2)
}  // namespace pysampler::cpu::CPU_CAPABILITY

// SLEEF's AVX2 logf / cosf with 1-ulp error bound, exported by libtorch_cpu. Declared weak, so a
// torch build without them still loads this library (the DEFAULT build runs then: ops.h).
extern "C" {
__m256 Sleef_logf8_u10avx2(__m256) __attribute__((weak));
__m256 Sleef_cosf8_u10avx2(__m256) __attribute__((weak));
}

namespace pysampler::cpu::CPU_CAPABILITY {

inline bool sleef_available() { return Sleef_logf8_u10avx2 != nullptr && Sleef_cosf8_u10avx2 != nullptr; }

// Philox words 0 and 1 for counters offset .. offset+n8-1, n8 a multiple of 8, with AVX2. Integer
// arithmetic only: bit-identical to philox_block_scalar.
inline void philox_block_avx2(uint64_t seed, uint64_t offset, int64_t n8,
                                                              uint32_t* w0, uint32_t* w1) {
  using philox_detail::kKeyA;
  using philox_detail::kKeyB;
  const __m256i mul_a = _mm256_set1_epi32(static_cast<int>(philox_detail::kRoundA));
  const __m256i mul_b = _mm256_set1_epi32(static_cast<int>(philox_detail::kRoundB));
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i sign = _mm256_set1_epi32(static_cast<int>(0x80000000u));
  // hi and lo 32-bit words of a * m per lane: _mm256_mul_epu32 multiplies the even lanes.
  auto mulhilo = [](__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
    const __m256i even = _mm256_mul_epu32(a, m);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  };
  for (int64_t j = 0; j < n8; j += 8) {
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
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w0 + j), c0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w1 + j), c1);
  }
}

// Eight uniforms from eight words: int32 view, negatives folded by ~x (x ^ (x >> 31)), times 2**-31.
inline __m256 uniforms_avx2(const uint32_t* w) {
  __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  x = _mm256_xor_si256(x, _mm256_srai_epi32(x, 31));
  return _mm256_mul_ps(_mm256_cvtepi32_ps(x), _mm256_set1_ps(philox_detail::kUniformScale));
}

// z = sqrt(-2 log(max(u0, 1e-7))) * cos(2 pi u1) for n8 (a multiple of 8) word pairs, with SLEEF.
// The same operations in the same order as philox_box_muller; only logf / cosf differ (by an ulp).
inline void box_muller_avx2(const uint32_t* w0, const uint32_t* w1, int64_t n8,
                                                            float* z) {
  const __m256 min_u = _mm256_set1_ps(philox_detail::kMinUniform);
  const __m256 minus_two = _mm256_set1_ps(-2.0f);
  const __m256 two_pi = _mm256_set1_ps(philox_detail::kTwoPi);
  for (int64_t j = 0; j < n8; j += 8) {
    const __m256 u0 = _mm256_max_ps(uniforms_avx2(w0 + j), min_u);
    const __m256 u1 = uniforms_avx2(w1 + j);
    const __m256 r = _mm256_sqrt_ps(_mm256_mul_ps(minus_two, Sleef_logf8_u10avx2(u0)));
    _mm256_storeu_ps(z + j, _mm256_mul_ps(r, Sleef_cosf8_u10avx2(_mm256_mul_ps(two_pi, u1))));
  }
}

#endif

// (seed, offset) from a CPU rng tensor (int64 (2,)). The seed's 64 bits are the Philox key (a seed
// >= 2**63 is stored negative, as in every backend); the offset must be in [0, 2**63).
inline std::pair<uint64_t, uint64_t> read_rng(const char* op, const at::Tensor& rng) {
  TORCH_CHECK_VALUE(rng.device().is_cpu(), op, "rng must be a CPU tensor for CPU inputs; got ", rng.device());
  const int64_t* p = rng.const_data_ptr<int64_t>();
  const int64_t seed = p[0];
  const int64_t offset = p[rng.stride(0)];
  TORCH_CHECK_VALUE(offset >= 0, op, "rng[1] (offset) must be in [0, 2**63); got ", offset);
  return {static_cast<uint64_t>(seed), static_cast<uint64_t>(offset)};
}

// z[j] = normal(seed, offset + j) for j < n <= kNoiseBlock; z has room for kNoiseBlock floats.
inline void fill_normals(uint64_t seed, uint64_t offset, int64_t n, float* z) {
  alignas(64) uint32_t w0[kNoiseBlock];
  alignas(64) uint32_t w1[kNoiseBlock];
#if defined(PYSAMPLER_NOISE_AVX2)
  // Whole vectors, the tail too (its extra lanes are computed and dropped): every element is
  // computed the same way wherever the block starts.
  const int64_t n8 = (n + 7) & ~int64_t{7};
  philox_block_avx2(seed, offset, n8, w0, w1);
  box_muller_avx2(w0, w1, n8, z);
#else
  philox_block_scalar(seed, offset, n, w0, w1);
  for (int64_t j = 0; j < n; ++j) {
    z[j] = philox_box_muller(philox_word_to_uniform(w0[j]), philox_word_to_uniform(w1[j]));
  }
#endif
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

}  // namespace pysampler::cpu::CPU_CAPABILITY
