// Blocks of the Philox stream on the CPU: normals for the step kernels of csrc/cpu/.
//
// fill_normals(seed, offset, n, z) writes z[j] = normal(seed, offset + j) for j < n <= kNoiseBlock
// (z must have room for kNoiseBlock floats: the vector path writes whole vectors), the stream of
// csrc/philox.h (and pysampler/rng.py). One path per capability build (ops.h):
//
//   * AVX512 / AVX2: Philox on 16 / 8 counters at a time, and Box-Muller on the words while they
//     are still in registers, with SLEEF's logf / cosf (1-ulp, the functions torch's own
//     vectorised CPU kernels use; libtorch_cpu exports them). One template (simd_normals) serves
//     both widths through a small set of lane operations (Avx2Lanes, Avx512Lanes). Every element
//     goes through a full vector, the tail too, so an element's value does not depend on where a
//     block or a thread's range starts.
//   * DEFAULT (any CPU): Philox and Box-Muller one counter at a time with libm's logf / cosf.
//
// The Philox words are integers and identical on every path; the normals agree to an ulp or two
// of float32 (SLEEF vs libm), which is the tolerance every backend is held to.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <type_traits>
#include <utility>

#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
#define PYSAMPLER_NOISE_SIMD 1
#include <immintrin.h>
#endif

#include "../philox.h"

#if defined(PYSAMPLER_NOISE_SIMD)
// SLEEF's logf / cosf with 1-ulp error bound, exported by libtorch_cpu. Declared weak, so a torch
// build without them still loads this library (a narrower build runs then: kernels_usable, ops.h).
extern "C" {
__m256 Sleef_logf8_u10avx2(__m256) __attribute__((weak));
__m256 Sleef_cosf8_u10avx2(__m256) __attribute__((weak));
#if defined(CPU_CAPABILITY_AVX512)
__m512 Sleef_logf16_u10avx512f(__m512) __attribute__((weak));
__m512 Sleef_cosf16_u10avx512f(__m512) __attribute__((weak));
#endif
}
#endif

namespace pysampler::cpu::CPU_CAPABILITY {  // see ops.h: one copy per capability build

constexpr int64_t kNoiseBlock = 256;  // the most normals one call writes (a few KiB on the stack)

#if defined(PYSAMPLER_NOISE_SIMD)

// The integer lane operations Philox needs, the words-to-uniforms step and SLEEF's logf / cosf,
// on 8 lanes (AVX2) ... (the float arithmetic is at::vec's, of the same width in each build)
struct Avx2Lanes {
  static constexpr int kWidth = 8;
  using I = __m256i;
  using F = __m256;
  static I set1_u32(uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
  static I iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static I add(I a, I b) { return _mm256_add_epi32(a, b); }
  static I bit_xor(I a, I b) { return _mm256_xor_si256(a, b); }
  // a + 1 in the lanes where lo < base (unsigned): the carry of a wrapped low counter word.
  static I add_carry(I a, I lo, I base) {
    const I sign = set1_u32(0x80000000u);
    return _mm256_sub_epi32(a, _mm256_cmpgt_epi32(_mm256_xor_si256(base, sign), _mm256_xor_si256(lo, sign)));
  }
  // hi and lo 32-bit words of a * m per lane: _mm256_mul_epu32 multiplies the even lanes.
  static void mulhilo(I a, I m, I& hi, I& lo) {
    const I even = _mm256_mul_epu32(a, m);
    const I odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  }
  // int32 view, negatives folded by ~x (x ^ (x >> 31)), times 2**-31: philox_word_to_uniform.
  static F uniform(I x) {
    x = _mm256_xor_si256(x, _mm256_srai_epi32(x, 31));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(x), _mm256_set1_ps(philox_detail::kUniformScale));
  }
  static F log(F a) { return Sleef_logf8_u10avx2(a); }
  static F cos(F a) { return Sleef_cosf8_u10avx2(a); }
  static bool available() { return Sleef_logf8_u10avx2 != nullptr && Sleef_cosf8_u10avx2 != nullptr; }
};

#if defined(CPU_CAPABILITY_AVX512)
// ... and on 16 lanes (AVX-512 F/DQ).
struct Avx512Lanes {
  static constexpr int kWidth = 16;
  using I = __m512i;
  using F = __m512;
  static I set1_u32(uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
  static I iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
  static I add(I a, I b) { return _mm512_add_epi32(a, b); }
  static I bit_xor(I a, I b) { return _mm512_xor_si512(a, b); }
  static I add_carry(I a, I lo, I base) { return _mm512_mask_add_epi32(a, _mm512_cmplt_epu32_mask(lo, base), a, set1_u32(1u)); }
  static void mulhilo(I a, I m, I& hi, I& lo) {
    const I even = _mm512_mul_epu32(a, m);
    const I odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
    hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
    lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  }
  static F uniform(I x) {
    x = _mm512_xor_si512(x, _mm512_srai_epi32(x, 31));
    return _mm512_mul_ps(_mm512_cvtepi32_ps(x), _mm512_set1_ps(philox_detail::kUniformScale));
  }
  static F log(F a) { return Sleef_logf16_u10avx512f(a); }
  static F cos(F a) { return Sleef_cosf16_u10avx512f(a); }
  static bool available() { return Sleef_logf16_u10avx512f != nullptr && Sleef_cosf16_u10avx512f != nullptr; }
};
using NoiseLanes = Avx512Lanes;
#else
using NoiseLanes = Avx2Lanes;
#endif

inline bool sleef_available() { return NoiseLanes::available(); }

// Philox words 0 and 1 at the kWidth counters base, base+1, ... (integer arithmetic:
// bit-identical to philox4x32_10).
template <typename L>
inline void philox_lanes(uint64_t seed, uint64_t base, typename L::I& w0, typename L::I& w1) {
  using philox_detail::kKeyA;
  using philox_detail::kKeyB;
  const typename L::I mul_a = L::set1_u32(philox_detail::kRoundA), mul_b = L::set1_u32(philox_detail::kRoundB);
  const typename L::I base_lo = L::set1_u32(static_cast<uint32_t>(base));
  typename L::I c0 = L::add(base_lo, L::iota());
  typename L::I c1 = L::add_carry(L::set1_u32(static_cast<uint32_t>(base >> 32)), c0, base_lo);
  typename L::I c2 = L::set1_u32(0u), c3 = L::set1_u32(0u);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < philox_detail::kRounds; ++r) {
    typename L::I hi_a, lo_a, hi_b, lo_b;
    L::mulhilo(c2, mul_b, hi_b, lo_b);
    L::mulhilo(c0, mul_a, hi_a, lo_a);
    c0 = L::bit_xor(L::bit_xor(hi_b, c1), L::set1_u32(k0));
    c1 = lo_b;
    c2 = L::bit_xor(L::bit_xor(hi_a, c3), L::set1_u32(k1));
    c3 = lo_a;
    k0 += kKeyA;
    k1 += kKeyB;
  }
  w0 = c0;
  w1 = c1;
}

// z[j] = normal(seed, offset + j) for j < n (rounded up to whole vectors): Box-Muller on the
// words while they are in registers, z = sqrt(-2 log(max(u0, 1e-7))) * cos(2 pi u1), the
// operations of philox_box_muller in its order; only logf / cosf differ from libm's (by an ulp).
template <typename L>
inline void simd_normals(uint64_t seed, uint64_t offset, int64_t n, float* z) {
  using Vec = at::vec::Vectorized<float>;
  static_assert(Vec::size() == L::kWidth, "the lane width must be at::vec's in this build");
  const Vec min_u(philox_detail::kMinUniform), minus_two(-2.0f), two_pi(philox_detail::kTwoPi);
  for (int64_t j = 0; j < n; j += L::kWidth) {
    typename L::I w0, w1;
    philox_lanes<L>(seed, offset + static_cast<uint64_t>(j), w0, w1);
    const Vec u0 = at::vec::maximum(Vec(L::uniform(w0)), min_u);
    const Vec r = (minus_two * Vec(L::log(u0))).sqrt();
    (r * Vec(L::cos(two_pi * Vec(L::uniform(w1))))).store(z + j);
  }
}

// u[j] = uniform(seed, offset + j) (word 0) for j < n, rounded up to whole vectors.
template <typename L>
inline void simd_uniforms(uint64_t seed, uint64_t offset, int64_t n, float* u) {
  for (int64_t j = 0; j < n; j += L::kWidth) {
    typename L::I w0, w1;
    philox_lanes<L>(seed, offset + static_cast<uint64_t>(j), w0, w1);
    at::vec::Vectorized<float>(L::uniform(w0)).store(u + j);
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
#if defined(PYSAMPLER_NOISE_SIMD)
  simd_normals<NoiseLanes>(seed, offset, n, z);
#else
  for (int64_t j = 0; j < n; ++j) {
    z[j] = philox_normal(seed, offset + static_cast<uint64_t>(j));
  }
#endif
}

// u[j] = uniform(seed, offset + j) for j < n <= kNoiseBlock (the MH tests' uniforms); u has room
// for kNoiseBlock floats.
inline void fill_uniforms(uint64_t seed, uint64_t offset, int64_t n, float* u) {
#if defined(PYSAMPLER_NOISE_SIMD)
  simd_uniforms<NoiseLanes>(seed, offset, n, u);
#else
  for (int64_t j = 0; j < n; ++j) {
    u[j] = philox_uniform(seed, offset + static_cast<uint64_t>(j));
  }
#endif
}

// The MH test of one chain on its stream uniform: accept when u < min(1, alpha), accept_prob =
// min(1, alpha); a non-finite log alpha is a rejection (accept_prob 0). Scalar exp, as the
// reference (pysampler.ops.mala_accept) takes it.
template <typename T>
inline bool mh_accept(T log_alpha, float uniform, T& accept_prob) {
  if (!std::isfinite(log_alpha)) {
    log_alpha = -std::numeric_limits<T>::infinity();
  }
  accept_prob = std::exp(std::min(log_alpha, T(0)));
  return static_cast<T>(uniform) < accept_prob;
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
