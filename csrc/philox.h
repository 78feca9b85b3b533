// The one random stream of pysampler: Philox4x32-10, host and device.
//
// Philox is the counter-based generator of Salmon, Moraes, Dror and Shaw, "Parallel random
// numbers: as easy as 1, 2, 3", SC'11. A draw is a pure function of (key, counter), so any
// element of any chain can be generated independently, in any order, on any device, and a
// chain can be paused and replayed by remembering only its (seed, offset).
//
// The *definition* of the stream is Triton's `tl.randint4x` / `tl.rand` / `tl.randn`
// (python/triton/language/random.py); pysampler/rng.py reproduces it in torch tensor ops and
// is the reference every backend is tested against. This header is the C++/CUDA copy:
//
//   key      (k0, k1)         = (seed & 0xffffffff, seed >> 32)
//   counter  (c0, c1, c2, c3) = (offset & 0xffffffff, offset >> 32, 0, 0)
//   10 rounds, each:  (c0, c1, c2, c3) <- (hi(B*c2) ^ c1 ^ k0, lo(B*c2),
//                                          hi(A*c0) ^ c3 ^ k1, lo(A*c0))
//                     (k0, k1) += (0x9E3779B9, 0xBB67AE85)
//   uniform(offset) = float32(w0 as int32, negatives mapped by ~x) * 4.6566127342e-10f
//   normal(offset)  = sqrtf(-2 logf(max(u0, 1e-7f))) * cosf(6.283185307179586f * u1)
//                     (Box-Muller, cosine branch, from words 0 and 1, all in float32)
//
// Known answer: seed 0, offset 0 -> 0x6627e8d5 0xe169c58d 0xbc57ac4c 0x9b00dbd8.
//
// Everything is in float32 on purpose, exactly as a Triton kernel calling tl.randn would do:
// a float64 chain casts the float32 normal to double. Do not compile users of this header
// with -ffast-math / --use_fast_math: the transcendental functions must stay accurate for the
// backends to agree to float tolerance.
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define PYSAMPLER_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define PYSAMPLER_HOST_DEVICE inline
#endif

namespace pysampler {

// Four 32-bit words: a Philox counter or a Philox output block.
struct PhiloxWords {
  uint32_t w[4];
};

// Two 32-bit words: a Philox key.
struct PhiloxKey {
  uint32_t k[2];
};

namespace philox_detail {
constexpr uint32_t kKeyA = 0x9E3779B9u;    // golden ratio: the key bump of word 0
constexpr uint32_t kKeyB = 0xBB67AE85u;    // sqrt(3) - 1: the key bump of word 1
constexpr uint32_t kRoundA = 0xD2511F53u;  // multiplier of counter word 0
constexpr uint32_t kRoundB = 0xCD9E8D57u;  // multiplier of counter word 2
constexpr int kRounds = 10;
constexpr float kUniformScale = 4.6566127342e-10f;  // ~2**-31, Triton's uint_to_uniform_float
constexpr float kTwoPi = 6.283185307179586f;
constexpr float kMinUniform = 1.0e-7f;  // keeps log() finite in Box-Muller

// High 32 bits of the 64-bit product a * b.
PYSAMPLER_HOST_DEVICE uint32_t mulhi32(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
  return __umulhi(a, b);
#else
  return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
}
}  // namespace philox_detail

// Philox4x32 with 10 rounds: four output words for one (counter, key).
PYSAMPLER_HOST_DEVICE PhiloxWords philox4x32_10(PhiloxWords counter, PhiloxKey key) {
  using namespace philox_detail;
  uint32_t c0 = counter.w[0], c1 = counter.w[1], c2 = counter.w[2], c3 = counter.w[3];
  uint32_t k0 = key.k[0], k1 = key.k[1];
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int r = 0; r < kRounds; ++r) {
    const uint32_t hi_b = mulhi32(kRoundB, c2), lo_b = kRoundB * c2;
    const uint32_t hi_a = mulhi32(kRoundA, c0), lo_a = kRoundA * c0;
    c0 = hi_b ^ c1 ^ k0;
    c1 = lo_b;
    c2 = hi_a ^ c3 ^ k1;
    c3 = lo_a;
    k0 += kKeyA;
    k1 += kKeyB;
  }
  return PhiloxWords{{c0, c1, c2, c3}};
}

// The four words of the stream at (seed, offset): key from the seed, counter from the offset.
PYSAMPLER_HOST_DEVICE PhiloxWords philox_words(uint64_t seed, uint64_t offset) {
  const PhiloxWords counter{{static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32), 0u, 0u}};
  const PhiloxKey key{{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)}};
  return philox4x32_10(counter, key);
}

// A word read as int32, negatives folded by bitwise not, scaled to [0, 1) in float32.
PYSAMPLER_HOST_DEVICE float philox_word_to_uniform(uint32_t word) {
  const int32_t x = static_cast<int32_t>(word);
  const int32_t v = x < 0 ? ~x : x;
  return static_cast<float>(v) * philox_detail::kUniformScale;
}

// Box-Muller (cosine branch) of two uniforms, in float32.
PYSAMPLER_HOST_DEVICE float philox_box_muller(float u0, float u1) {
  using namespace philox_detail;
  u0 = u0 < kMinUniform ? kMinUniform : u0;  // max(u0, 1e-7f); u0 is never NaN
  const float r = sqrtf(-2.0f * logf(u0));
  return r * cosf(kTwoPi * u1);
}

// One float32 uniform in [0, 1) at (seed, offset): word 0.
PYSAMPLER_HOST_DEVICE float philox_uniform(uint64_t seed, uint64_t offset) {
  return philox_word_to_uniform(philox_words(seed, offset).w[0]);
}

// One float32 standard normal at (seed, offset): Box-Muller of words 0 and 1.
PYSAMPLER_HOST_DEVICE float philox_normal(uint64_t seed, uint64_t offset) {
  const PhiloxWords w = philox_words(seed, offset);
  return philox_box_muller(philox_word_to_uniform(w.w[0]), philox_word_to_uniform(w.w[1]));
}

}  // namespace pysampler
