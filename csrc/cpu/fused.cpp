// Whole-chain fused samplers on the CPU (pysampler::fused_chain, schema: csrc/ops.cpp): every step
// of ULA (and its noise-free flow), MALA, kinetic Langevin (OBABO) or HMC on an analytic energy in
// one call.
//
// Threads take blocks of B chains (at::parallel_for). A block's state lives in small buffers in
// structure-of-arrays order, x[j * B + b] = element j of chain b, so the energy, its gradient,
// the update and the MH test run with at::vec across chains, and nothing returns to memory
// between steps but the optional trace. Lanes past the last chain of the last block are padding
// (computed on zeros, never written out).
//
// The random stream is the step-wise samplers' (pysampler/samplers/): step i uses the counters
// the step ops would (pysampler.ops.counters), e.g. ULA's normal of element j of chain n at
// offset + i*N*d + n*d + j, so a fused and a step-wise run from one seed agree to float tolerance.
// The arithmetic of each update is written in the order of the step ops (csrc/cpu/*.cpp).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../checks.h"
#include "../philox.h"
#include "noise.h"
#include "ops.h"

// The Fortran BLAS entry points torch's CPU wheels export from libtorch_cpu (MKL on x86-64),
// declared weak: without them the library still loads, and the MLP layers use gemm_soa.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
            const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
            const int* ldc) __attribute__((weak));
}

namespace pysampler::cpu::CPU_CAPABILITY {
namespace {

template <typename T>
using GemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const T*, const T*, const int*,
                        const T*, const int*, const T*, T*, const int*);

// The BLAS gemm for T, or null when libtorch exports none (or PYSAMPLER_FUSED_NO_BLAS=1, which
// the tests use to run the fallback).
template <typename T>
GemmFn<T> blas_gemm() {
  static const bool disabled = [] {
    const char* flag = std::getenv("PYSAMPLER_FUSED_NO_BLAS");
    return flag != nullptr && flag[0] != '\0' && std::string(flag) != "0";
  }();
  if (disabled) return nullptr;
  if constexpr (std::is_same_v<T, float>) {
    return sgemm_;
  } else {
    return dgemm_;
  }
}

using FusedResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                               at::Tensor>;

// ------------------------------------------------------------------------------------ energies

enum class EnergyKind { kGaussianDiag, kGaussianFull, kMixture, kMlp };

// Activations of pysampler.targets.MLPEnergy (codes: pysampler/fused.py), and their slopes.
enum class Activation : int { kSilu = 0, kTanh, kSoftplus, kRelu, kLeakyRelu, kGelu, kGeluTanh };

// One Linear layer of an MLP energy: z = h W^T + b, then the activation (none after the last).
template <typename T>
struct MlpLayer {
  int64_t in = 0, out = 0;
  const T* weight_t = nullptr;  // (in, out): W^T, for the forward pass
  const T* weight = nullptr;    // (out, in): W, for the backward pass
  const T* bias = nullptr;      // (out,)
  Activation act = Activation::kSilu;
  T param = 0, threshold = 0;   // LeakyReLU's slope / Softplus's beta and threshold
};

// layer_product without a BLAS: register-blocked 4 outputs x 2 vectors of chains, with explicit
// FMAs (as a BLAS would; the step arithmetic is not contracted).
template <typename T>
void gemm_soa(const T* in, int64_t K, const T* m, int64_t N, const T* bias, T* out, int64_t B) {
  using Vec = at::vec::Vectorized<T>;
  constexpr int64_t L = Vec::size();
  for (int64_t b = 0; b < B; b += 2 * L) {
    int64_t n = 0;
    for (; n + 4 <= N; n += 4) {
      Vec acc[4][2];
      for (int r = 0; r < 4; ++r) {
        acc[r][0] = acc[r][1] = Vec(bias != nullptr ? bias[n + r] : T(0));
      }
      for (int64_t k = 0; k < K; ++k) {
        const Vec i0 = Vec::loadu(in + k * B + b), i1 = Vec::loadu(in + k * B + b + L);
        const T* row = m + k * N + n;
        for (int r = 0; r < 4; ++r) {
          const Vec w(row[r]);
          acc[r][0] = at::vec::fmadd(i0, w, acc[r][0]);
          acc[r][1] = at::vec::fmadd(i1, w, acc[r][1]);
        }
      }
      for (int r = 0; r < 4; ++r) {
        acc[r][0].store(out + (n + r) * B + b);
        acc[r][1].store(out + (n + r) * B + b + L);
      }
    }
    for (; n < N; ++n) {
      Vec a0(bias != nullptr ? bias[n] : T(0)), a1 = a0;
      for (int64_t k = 0; k < K; ++k) {
        const Vec w(m[k * N + n]);
        a0 = at::vec::fmadd(Vec::loadu(in + k * B + b), w, a0);
        a1 = at::vec::fmadd(Vec::loadu(in + k * B + b + L), w, a1);
      }
      a0.store(out + n * B + b);
      a1.store(out + n * B + b + L);
    }
  }
}

// out[n * B + b] = bias[n] + sum_k in[k * B + b] * m[k * N + n] for n < N, b < B (B a multiple of
// twice the vector width): the layer products of the MLP energy. In BLAS's column-major terms,
// out (B x N) = in (B x K) * m^T with m stored (N x K), so one ?gemm_("N", "T") call does it (the
// BLAS torch's own matmul uses); gemm_soa above serves when libtorch exports none.
template <typename T>
void layer_product(const T* in, int64_t K, const T* m, int64_t N, const T* bias, T* out, int64_t B) {
  const auto gemm = blas_gemm<T>();
  if (gemm == nullptr || std::max({K, N, B}) > std::numeric_limits<int>::max()) {
    return gemm_soa(in, K, m, N, bias, out, B);
  }
  if (bias != nullptr) {
    for (int64_t n = 0; n < N; ++n) {
      std::fill_n(out + n * B, B, bias[n]);
    }
  }
  const int mi = static_cast<int>(B), ni = static_cast<int>(N), ki = static_cast<int>(K);
  const T one(1), beta(bias != nullptr ? 1 : 0);
  gemm("N", "T", &mi, &ni, &ki, &one, in, &mi, m, &ni, &beta, out, &mi);
}

// a(x) and a'(x) for one vector (pysampler.targets.activation_and_slope).
template <Activation kAct, typename Vec, typename T>
inline void activation_and_slope(const Vec& x, T param, T threshold, Vec& a, Vec& da) {
  const Vec one(T(1)), zero(T(0)), half(T(0.5));
  if constexpr (kAct == Activation::kSilu) {
    const Vec sig = one / (one + x.neg().exp_u20());
    a = x * sig;
    da = sig * (one + x * (one - sig));
  } else if constexpr (kAct == Activation::kTanh) {
    const Vec t = x.tanh();
    a = t;
    da = one - t * t;
  } else if constexpr (kAct == Activation::kSoftplus) {  // log(1 + e^{beta x}) / beta, x above the threshold
    const Vec bx = Vec(param) * x;
    const Vec linear = bx > Vec(threshold);
    const Vec soft = Vec::blendv(bx, zero, linear).exp().log1p() / Vec(param);
    a = Vec::blendv(soft, x, linear);
    da = Vec::blendv(one / (one + bx.neg().exp()), one, linear);
  } else if constexpr (kAct == Activation::kRelu) {
    const Vec pos = x > zero;
    a = Vec::blendv(zero, x, pos);
    da = Vec::blendv(zero, one, pos);
  } else if constexpr (kAct == Activation::kLeakyRelu) {
    const Vec pos = x > zero;
    a = Vec::blendv(Vec(param) * x, x, pos);
    da = Vec::blendv(Vec(param), one, pos);
  } else if constexpr (kAct == Activation::kGelu) {  // x Phi(x)
    const Vec cdf = half * (one + (x * Vec(T(M_SQRT1_2))).erf());
    const Vec pdf = (Vec(T(-0.5)) * x * x).exp() * Vec(T(0.3989422804014327));
    a = x * cdf;
    da = cdf + x * pdf;
  } else {  // kGeluTanh: x (1 + tanh(c (x + 0.044715 x^3))) / 2
    const Vec c(T(0.7978845608028654)), k(T(0.044715));
    const Vec t = (c * (x + k * x * x * x)).tanh();
    a = half * x * (one + t);
    da = half * (one + t) + half * x * (one - t * t) * c * (one + Vec(T(3)) * k * x * x);
  }
}

// Inputs at most this wide enter the first layer as broadcast FMAs beside its activation, and
// leave the backward pass the same way: a BLAS product with K or N this small runs far below peak.
constexpr int64_t kNarrowInput = 8;
// Rows of a narrow first layer computed per pass (kRowChunk x B products stay in L1).
constexpr int64_t kRowChunk = 8;

// z[r * B + b] = sum_k in[k * B + b] * W[row0 + r, k] for r < rows: a narrow layer's products
// (kIn inputs, W (out, kIn) row-major), bias excluded as in layer_product.
template <int kIn, typename T>
void narrow_product(const MlpLayer<T>& layer, const T* in, int64_t row0, int64_t rows, T* z, int64_t B) {
  using Vec = at::vec::Vectorized<T>;
  for (int64_t r = 0; r < rows; ++r) {
    const T* w = layer.weight + (row0 + r) * kIn;
    for (int64_t e = 0; e < B; e += Vec::size()) {
      Vec acc = Vec::loadu(in + e) * Vec(w[0]);
      for (int k = 1; k < kIn; ++k) {
        acc = at::vec::fmadd(Vec::loadu(in + k * B + e), Vec(w[k]), acc);
      }
      acc.store(z + r * B + e);
    }
  }
}

// g[k * B + b] = sum_row W[row, k] * delta[row * B + b] (* slope[row * B + b] when given): the
// input gradient through a narrow first layer, its kIn sums held in registers over the rows.
template <int kIn, typename T>
void narrow_input_grad(const MlpLayer<T>& layer, const T* delta, const T* slope, T* g, int64_t B) {
  using Vec = at::vec::Vectorized<T>;
  for (int64_t e = 0; e < B; e += Vec::size()) {
    Vec acc[kIn];
    for (int k = 0; k < kIn; ++k) {
      acc[k] = Vec(T(0));
    }
    for (int64_t row = 0; row < layer.out; ++row) {
      Vec dv = Vec::loadu(delta + row * B + e);
      if (slope != nullptr) {
        dv = dv * Vec::loadu(slope + row * B + e);
      }
      const T* w = layer.weight + row * kIn;
      for (int k = 0; k < kIn; ++k) {
        acc[k] = at::vec::fmadd(dv, Vec(w[k]), acc[k]);
      }
    }
    for (int k = 0; k < kIn; ++k) {
      acc[k].store(g + k * B + e);
    }
  }
}

// f(std::integral_constant<int, in>{}) for a narrow input width 1 <= in <= kNarrowInput.
template <typename F>
void with_narrow_width(int64_t in, F&& f) {
  switch (in) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

// The activation of rows row0 .. row0+rows-1 of a hidden layer from their products z (rows, B),
// bias added here (one pass less than adding it to the product). An inner layer writes its
// activations h and slopes a' (out, B). The top hidden layer instead folds in the output layer
// (w_out its weight row): u += sum_row w_out[row] a(z_row), and writes delta_row = w_out[row] a'(z_row),
// dU/dz of this layer, where the backward pass starts; its activations never reach memory.
template <Activation kAct, bool kTop, typename T>
void activate_rows(const MlpLayer<T>& layer, int64_t row0, int64_t rows, const T* z, T* h, T* slope,
                   const T* w_out, T* u, int64_t B) {
  using Vec = at::vec::Vectorized<T>;
  const auto bias = [&](int64_t row) { return Vec(layer.bias != nullptr ? layer.bias[row] : T(0)); };
  if constexpr (kTop) {  // chains outer: each vector of u stays in a register over the rows
    for (int64_t e = 0; e < B; e += Vec::size()) {
      Vec acc = Vec::loadu(u + e);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = row0 + r;
        const Vec w(w_out[row]);
        Vec a, da;
        activation_and_slope<kAct>(Vec::loadu(z + r * B + e) + bias(row), layer.param, layer.threshold, a, da);
        acc = acc + w * a;
        (w * da).store(h + row * B + e);
      }
      acc.store(u + e);
    }
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = row0 + r;
      const Vec b = bias(row);
      for (int64_t e = 0; e < B; e += Vec::size()) {
        Vec a, da;
        activation_and_slope<kAct>(Vec::loadu(z + r * B + e) + b, layer.param, layer.threshold, a, da);
        a.store(h + row * B + e);
        da.store(slope + row * B + e);
      }
    }
  }
}

template <bool kTop, typename T>
void activate(const MlpLayer<T>& layer, int64_t row0, int64_t rows, const T* z, T* h, T* slope, const T* w_out,
              T* u, int64_t B) {
  switch (layer.act) {
    case Activation::kSilu:
      return activate_rows<Activation::kSilu, kTop>(layer, row0, rows, z, h, slope, w_out, u, B);
    case Activation::kTanh:
      return activate_rows<Activation::kTanh, kTop>(layer, row0, rows, z, h, slope, w_out, u, B);
    case Activation::kSoftplus:
      return activate_rows<Activation::kSoftplus, kTop>(layer, row0, rows, z, h, slope, w_out, u, B);
    case Activation::kRelu:
      return activate_rows<Activation::kRelu, kTop>(layer, row0, rows, z, h, slope, w_out, u, B);
    case Activation::kLeakyRelu:
      return activate_rows<Activation::kLeakyRelu, kTop>(layer, row0, rows, z, h, slope, w_out, u, B);
    case Activation::kGelu:
      return activate_rows<Activation::kGelu, kTop>(layer, row0, rows, z, h, slope, w_out, u, B);
    case Activation::kGeluTanh:
      return activate_rows<Activation::kGeluTanh, kTop>(layer, row0, rows, z, h, slope, w_out, u, B);
  }
}

// U and grad U of a block of chains. x, g: (d, B) SoA; u: (B,). B is a multiple of the vector width.
//   gaussian_diag  params (mean (d,), inv_var (d,)):        g = (x - mean) * inv_var, U = sum(g * r) / 2
//   gaussian_full  params (mean (d,), precision (d, d)):    g = r @ P,                U = sum(g * r) / 2
//   mixture        params (means (K, d), inv_var (K, d), log_coef (K,)), log_coef = log w - sum log sigma - d/2 log 2 pi:
//     U = -logsumexp_k(log_coef_k - |r_k|^2_{inv_var_k} / 2),  g = sum_k resp_k (x - mu_k) inv_var_k
// (pysampler.targets.Gaussian / GaussianMixture, whose energy_and_grad is the reference.)
template <typename T>
struct Energy {
  using Vec = at::vec::Vectorized<T>;
  EnergyKind kind;
  int64_t d = 0, k = 1;
  const T* mean = nullptr;
  const T* weight = nullptr;  // inv_var or precision
  const T* log_coef = nullptr;
  std::vector<MlpLayer<T>> layers;  // kMlp
  T prior_weight = 0;              // kMlp: + prior_weight |x|^2 / 2
  int64_t max_width = 0;           // kMlp: widest layer output

  // Scratch elements eval needs for a block of B chains.
  int64_t scratch_size(int64_t B) const {
    const int64_t lanes = Vec::size();
    switch (kind) {
      case EnergyKind::kMixture:
        return k * lanes;
      case EnergyKind::kGaussianFull:
        return d * B;
      case EnergyKind::kMlp: {  // one slope buffer per hidden layer below the top, plus z / h / delta ping-pong
        int64_t hidden = 0;
        for (size_t l = 0; l + 2 < layers.size(); ++l) {
          hidden += layers[l].out;
        }
        return (hidden + 3 * std::max(max_width, d)) * B;
      }
      default:
        return 0;
    }
  }

  void eval(const T* x, T* u, T* g, int64_t B, T* scratch) const {
    switch (kind) {
      case EnergyKind::kGaussianDiag:
        return gaussian_diag(x, u, g, B);
      case EnergyKind::kGaussianFull:
        return gaussian_full(x, u, g, B, scratch);
      case EnergyKind::kMixture:
        return mixture(x, u, g, B, scratch);
      case EnergyKind::kMlp:
        return mlp(x, u, g, B, scratch);
    }
  }

  // Forward pass keeping each inner hidden layer's slope a'(z_l); the top hidden layer folds in
  // the output layer and starts the backward pass, delta <- (delta W_l) * a'(z_{l-1}) going down
  // (pysampler.targets.MLPEnergy.energy_and_grad). A narrow first layer (in <= kNarrowInput)
  // runs beside its activation, both ways. B must be a multiple of 2 vectors.
  void mlp(const T* x, T* u, T* g, int64_t B, T* scratch) const {
    const int64_t n_layers = static_cast<int64_t>(layers.size());
    const MlpLayer<T>& out_layer = layers[n_layers - 1];
    if (n_layers == 1) {  // U = x w + b, grad U = w
      layer_product(x, out_layer.in, out_layer.weight_t, 1, out_layer.bias, u, B);
      for (int64_t j = 0; j < d; ++j) {
        std::fill_n(g + j * B, B, out_layer.weight[j]);
      }
    } else {
      const int64_t top = n_layers - 2;  // the last hidden layer
      const bool narrow = layers[0].in <= kNarrowInput;
      const int64_t wide = std::max(max_width, d) * B;
      std::vector<T*> slopes(top);
      T* next = scratch;
      for (int64_t l = 0; l < top; ++l) {
        slopes[l] = next;
        next += layers[l].out * B;
      }
      T *z = next, *h = next + wide, *h2 = next + 2 * wide;
      std::fill_n(u, B, out_layer.bias != nullptr ? out_layer.bias[0] : T(0));
      const T* cur = x;
      for (int64_t l = 0; l <= top; ++l) {
        const MlpLayer<T>& layer = layers[l];
        T* slope = l < top ? slopes[l] : nullptr;
        const auto run_rows = [&](int64_t row0, int64_t rows, const T* zr) {
          if (l == top) {
            activate<true>(layer, row0, rows, zr, h, slope, out_layer.weight, u, B);
          } else {
            activate<false>(layer, row0, rows, zr, h, slope, static_cast<const T*>(nullptr), u, B);
          }
        };
        if (l == 0 && narrow) {
          with_narrow_width(layer.in, [&](auto in) {
            for (int64_t row0 = 0; row0 < layer.out; row0 += kRowChunk) {
              const int64_t rows = std::min(kRowChunk, layer.out - row0);
              narrow_product<decltype(in)::value>(layer, x, row0, rows, z, B);
              run_rows(row0, rows, z);
            }
          });
        } else {
          layer_product(cur, layer.in, layer.weight_t, layer.out, static_cast<const T*>(nullptr), z, B);
          run_rows(0, layer.out, z);
        }
        cur = h;
        std::swap(h, h2);
      }
      // h2 now holds dU/dz of the top hidden layer; z is free.
      T *delta = h2, *spare = z;
      for (int64_t l = top; l >= 0; --l) {
        const MlpLayer<T>& layer = layers[l];
        if (l == 0) {
          if (narrow) {
            with_narrow_width(layer.in, [&](auto in) {
              narrow_input_grad<decltype(in)::value>(layer, delta, static_cast<const T*>(nullptr), g, B);
            });
          } else {
            layer_product(delta, layer.out, layer.weight, layer.in, static_cast<const T*>(nullptr), g, B);
          }
          break;
        }
        layer_product(delta, layer.out, layer.weight, layer.in, static_cast<const T*>(nullptr), spare, B);  // dU/dh_{l-1}
        if (l == 1 && narrow) {  // the slope of layer 0 enters inside its gradient loop
          with_narrow_width(layers[0].in, [&](auto in) {
            narrow_input_grad<decltype(in)::value>(layers[0], spare, slopes[0], g, B);
          });
          break;
        }
        const T* slope = slopes[l - 1];
        for (int64_t e = 0; e < layer.in * B; e += Vec::size()) {
          (Vec::loadu(spare + e) * Vec::loadu(slope + e)).store(spare + e);
        }
        std::swap(delta, spare);
      }
    }
    if (prior_weight != T(0)) {
      const Vec w(prior_weight), half(T(0.5));
      for (int64_t b = 0; b < B; b += Vec::size()) {
        Vec sq(0);
        for (int64_t j = 0; j < d; ++j) {
          const Vec xj = Vec::loadu(x + j * B + b);
          sq = sq + xj * xj;
          (Vec::loadu(g + j * B + b) + w * xj).store(g + j * B + b);
        }
        (Vec::loadu(u + b) + half * w * sq).store(u + b);
      }
    }
  }

  void gaussian_diag(const T* x, T* u, T* g, int64_t B) const {
    for (int64_t b = 0; b < B; b += Vec::size()) {
      Vec acc(0);
      for (int64_t j = 0; j < d; ++j) {
        const Vec r = Vec::loadu(x + j * B + b) - Vec(mean[j]);
        const Vec gj = r * Vec(weight[j]);
        gj.store(g + j * B + b);
        acc = acc + gj * r;
      }
      (Vec(T(0.5)) * acc).store(u + b);
    }
  }

  void gaussian_full(const T* x, T* u, T* g, int64_t B, T* r) const {
    for (int64_t j = 0; j < d; ++j) {
      for (int64_t b = 0; b < B; b += Vec::size()) {
        (Vec::loadu(x + j * B + b) - Vec(mean[j])).store(r + j * B + b);
      }
    }
    for (int64_t b = 0; b < B; b += Vec::size()) {
      Vec acc(0);
      for (int64_t i = 0; i < d; ++i) {
        Vec gi(0);
        for (int64_t j = 0; j < d; ++j) {
          gi = gi + Vec::loadu(r + j * B + b) * Vec(weight[j * d + i]);
        }
        gi.store(g + i * B + b);
        acc = acc + gi * Vec::loadu(r + i * B + b);
      }
      (Vec(T(0.5)) * acc).store(u + b);
    }
  }

  void mixture(const T* x, T* u, T* g, int64_t B, T* scratch) const {
    constexpr int64_t L = Vec::size();
    T* lw = scratch;  // (K, L): per-component log densities, then weights, of one lane group
    for (int64_t b = 0; b < B; b += L) {
      Vec top(-std::numeric_limits<T>::infinity());
      for (int64_t c = 0; c < k; ++c) {
        Vec q(0);
        for (int64_t j = 0; j < d; ++j) {
          const Vec r = Vec::loadu(x + j * B + b) - Vec(mean[c * d + j]);
          q = q + r * r * Vec(weight[c * d + j]);
        }
        const Vec l = Vec(log_coef[c]) - Vec(T(0.5)) * q;
        l.store(lw + c * L);
        top = at::vec::maximum(top, l);
      }
      // Components more than e^64 below the top one weigh 0: their exact weight (< 1e-27 of the
      // top one's) is below any float's precision, and computing it would make denormals, which
      // cost x86 cores a microcode assist per operation (10x slower on the 25-Gaussian mixture).
      const Vec floor(T(-64));
      Vec total(0);
      for (int64_t c = 0; c < k; ++c) {
        const Vec rel = Vec::loadu(lw + c * L) - top;
        const Vec w = Vec::blendv(at::vec::maximum(rel, floor).exp(), Vec(T(0)), rel < floor);
        w.store(lw + c * L);
        total = total + w;
      }
      // Coordinate-major: each gradient accumulator stays in a register over the components.
      const Vec inv = Vec(T(1)) / total;
      for (int64_t j = 0; j < d; ++j) {
        const Vec xj = Vec::loadu(x + j * B + b);
        Vec acc(0);
        for (int64_t c = 0; c < k; ++c) {
          acc = acc + Vec::loadu(lw + c * L) * ((xj - Vec(mean[c * d + j])) * Vec(weight[c * d + j]));
        }
        (acc * inv).store(g + j * B + b);
      }
      (Vec(T(0)) - (top + total.log())).store(u + b);
    }
  }
};

template <typename T>
Energy<T> make_energy(const char* op, const std::string& target, const std::vector<at::Tensor>& params, int64_t d,
                      const at::Tensor& x) {
  Energy<T> e;
  e.d = d;
  const auto expect = [&](size_t count, const char* what) {
    TORCH_CHECK_VALUE(params.size() == count, op, "target '", target, "' takes params ", what, "; got ", params.size(),
                      " tensors");
    for (const auto& p : params) {
      TORCH_CHECK_VALUE(p.scalar_type() == x.scalar_type() && p.device() == x.device() && p.is_contiguous(), op,
                        "target params must be contiguous tensors of x's dtype and device");
    }
  };
  if (target == "gaussian_diag" || target == "gaussian_full") {
    const bool full = target == "gaussian_full";
    expect(2, full ? "(mean (d,), precision (d, d))" : "(mean (d,), inv_var (d,))");
    TORCH_CHECK_VALUE(params[0].dim() == 1 && params[0].size(0) == d, op, "mean must have shape (", d, ",)");
    TORCH_CHECK_VALUE(full ? (params[1].dim() == 2 && params[1].size(0) == d && params[1].size(1) == d)
                           : (params[1].dim() == 1 && params[1].size(0) == d),
                      op, full ? "precision must have shape (d, d)" : "inv_var must have shape (d,)");
    e.kind = full ? EnergyKind::kGaussianFull : EnergyKind::kGaussianDiag;
  } else if (target == "mixture") {
    expect(3, "(means (K, d), inv_var (K, d), log_coef (K,))");
    TORCH_CHECK_VALUE(params[0].dim() == 2 && params[0].size(1) == d && params[0].size(0) >= 1, op,
                      "means must have shape (K, ", d, ")");
    TORCH_CHECK_VALUE(params[1].sizes() == params[0].sizes(), op, "inv_var must have the shape of means");
    TORCH_CHECK_VALUE(params[2].dim() == 1 && params[2].size(0) == params[0].size(0), op, "log_coef must have shape (K,)");
    e.kind = EnergyKind::kMixture;
    e.k = params[0].size(0);
    e.log_coef = params[2].const_data_ptr<T>();
  } else if (target == "mlp") {
    // params: spec (L, 3) = (activation code, param, threshold) per layer, prior_weight (1,), then
    // (W^T (in, out), W (out, in), b (out,)) per layer.
    TORCH_CHECK_VALUE(params.size() >= 5 && (params.size() - 2) % 3 == 0, op,
                      "target 'mlp' takes params (spec, prior_weight, then W^T, W, b per layer); got ", params.size(),
                      " tensors");
    for (const auto& p : params) {
      TORCH_CHECK_VALUE(p.scalar_type() == x.scalar_type() && p.device() == x.device() && p.is_contiguous(), op,
                        "target params must be contiguous tensors of x's dtype and device");
    }
    const int64_t n_layers = static_cast<int64_t>(params.size() - 2) / 3;
    const at::Tensor& spec = params[0];
    TORCH_CHECK_VALUE(spec.dim() == 2 && spec.size(0) == n_layers && spec.size(1) == 3, op,
                      "mlp spec must have shape (layers, 3)");
    TORCH_CHECK_VALUE(params[1].numel() == 1, op, "mlp prior_weight must have one element");
    e.kind = EnergyKind::kMlp;
    e.prior_weight = params[1].const_data_ptr<T>()[0];
    int64_t width = d;
    for (int64_t l = 0; l < n_layers; ++l) {
      const at::Tensor &wt = params[2 + 3 * l], &w = params[3 + 3 * l], &b = params[4 + 3 * l];
      MlpLayer<T> layer;
      layer.in = w.dim() == 2 ? w.size(1) : -1;
      layer.out = w.dim() == 2 ? w.size(0) : -1;
      TORCH_CHECK_VALUE(layer.in == width && wt.dim() == 2 && wt.size(0) == layer.in && wt.size(1) == layer.out &&
                            b.dim() == 1 && b.size(0) == layer.out,
                        op, "mlp layer ", l, ": expected W^T (", width, ", out), W (out, ", width, ") and b (out,)");
      layer.weight_t = wt.const_data_ptr<T>();
      layer.weight = w.const_data_ptr<T>();
      layer.bias = b.const_data_ptr<T>();
      const T* row = spec.const_data_ptr<T>() + 3 * l;
      const int code = static_cast<int>(row[0]);
      TORCH_CHECK_VALUE(code >= 0 && code <= static_cast<int>(Activation::kGeluTanh), op, "mlp activation code ",
                        code, " is unknown");
      layer.act = static_cast<Activation>(code);
      layer.param = row[1];
      layer.threshold = row[2];
      e.max_width = std::max(e.max_width, layer.out);
      width = layer.out;
      e.layers.push_back(layer);
    }
    TORCH_CHECK_VALUE(width == 1, op, "the mlp's last layer must have one output");
    return e;
  } else {
    TORCH_CHECK_VALUE(false, op, "target must be 'gaussian_diag', 'gaussian_full', 'mixture' or 'mlp'; got '", target,
                      "'");
  }
  e.mean = params[0].const_data_ptr<T>();
  e.weight = params[1].const_data_ptr<T>();
  return e;
}

// ------------------------------------------------------------------------------------ samplers

enum class Algorithm { kUla, kMala, kKinetic, kHmc };

Algorithm parse_algorithm(const char* op, const std::string& name) {
  if (name == "ula") return Algorithm::kUla;
  if (name == "mala") return Algorithm::kMala;
  if (name == "kinetic") return Algorithm::kKinetic;
  if (name == "hmc") return Algorithm::kHmc;
  TORCH_CHECK_VALUE(false, op, "sampler must be 'ula', 'mala', 'kinetic' or 'hmc'; got '", name, "'");
}

// What every block reads and writes (pointers to the (N, d) / (N,) tensors).
template <typename T>
struct Run {
  Algorithm algorithm;
  Energy<T> energy;
  int64_t n_chains, d, n_steps, record_from, thin, n_leapfrog;
  T noise_scale;
  uint64_t seed, offset;
  const T *step, *friction;
  T *x, *u, *g, *v;        // in: the state; out: the final state
  bool* frozen;             // in/out (ULA, kinetic)
  int64_t* bad_step;        // out: 1-based step a chain turned non-finite, 0 if never (ULA, kinetic)
  int64_t* accepted;        // out: accepted post-burn-in steps (MALA, HMC)
  T* trace;                 // out: (n_keep, N, d), or null

  // Counters one step consumes (pysampler.ops.counters of the step's ops).
  uint64_t counters_per_step() const {
    const uint64_t nd = static_cast<uint64_t>(n_chains * d), n = static_cast<uint64_t>(n_chains);
    return algorithm == Algorithm::kKinetic ? 2 * nd : (algorithm == Algorithm::kUla ? nd : nd + n);
  }
};

// The buffers of one block (SoA, B lanes).
template <typename T>
struct Block {
  int64_t B, d, n0, nb;
  std::vector<T> x, g, u, xn, gn, un, v, vn, p0, p, h, a, c, chk, keep, scratch;
  std::vector<float> z, z_aos, rand;

  Block(int64_t B_, int64_t d_, const Energy<T>& e)
      : B(B_), d(d_), n0(0), nb(0), x(d_ * B_), g(d_ * B_), u(B_), xn(d_ * B_), gn(d_ * B_), un(B_), h(B_), a(B_),
        c(B_), chk(B_), keep(B_), scratch(std::max<int64_t>(e.scratch_size(B_), 1)), z(d_ * B_),
        z_aos(d_ * B_ + kNoiseBlock), rand(B_ + kNoiseBlock) {}

  T* col(std::vector<T>& buf, int64_t j) { return buf.data() + j * B; }

  // rows n0 .. n0+nb of an (N, d) tensor into SoA (padding lanes zero), and back.
  void load(const T* src, std::vector<T>& dst) const {
    std::fill(dst.begin(), dst.end(), T(0));
    for (int64_t b = 0; b < nb; ++b) {
      for (int64_t j = 0; j < d; ++j) {
        dst[j * B + b] = src[(n0 + b) * d + j];
      }
    }
  }
  void store(const std::vector<T>& src, T* dst) const {
    for (int64_t b = 0; b < nb; ++b) {
      for (int64_t j = 0; j < d; ++j) {
        dst[(n0 + b) * d + j] = src[j * B + b];
      }
    }
  }

  // z[j * B + b] = normal(seed, base + (n0 + b) * d + j) for the block's chains; padding zero.
  void normals(uint64_t seed, uint64_t base) {
    const int64_t n = nb * d;
    const uint64_t first = base + static_cast<uint64_t>(n0 * d);
    for (int64_t s = 0; s < n; s += kNoiseBlock) {
      fill_normals(seed, first + static_cast<uint64_t>(s), std::min(kNoiseBlock, n - s), z_aos.data() + s);
    }
    std::fill(z.begin(), z.end(), 0.0f);
    for (int64_t b = 0; b < nb; ++b) {
      for (int64_t j = 0; j < d; ++j) {
        z[j * B + b] = z_aos[b * d + j];
      }
    }
  }

  // Copy chain b's column of `from` into `to`, for each (to, from) buffer pair.
  void restore(int64_t b, std::initializer_list<std::pair<std::vector<T>*, const std::vector<T>*>> pairs) {
    for (auto [to, from] : pairs) {
      const int64_t rows = static_cast<int64_t>(to->size()) / B;
      for (int64_t j = 0; j < rows; ++j) {
        (*to)[j * B + b] = (*from)[j * B + b];
      }
    }
  }
};

template <typename T>
using VecT = at::vec::Vectorized<T>;

// chk[b] = sum over j of 0 * t[j, b] for each buffer: NaN exactly where a column has NaN or inf.
template <typename T>
void nonfinite_check(Block<T>& blk, std::initializer_list<const std::vector<T>*> bufs) {
  using Vec = VecT<T>;
  for (int64_t b = 0; b < blk.B; b += Vec::size()) {
    Vec acc(0);
    for (const auto* buf : bufs) {
      for (int64_t j = 0; j < blk.d; ++j) {
        acc = acc + Vec::loadu(buf->data() + j * blk.B + b) * Vec(T(0));
      }
    }
    acc.store(blk.chk.data() + b);
  }
}

template <typename T>
void record(const Run<T>& run, Block<T>& blk, int64_t i) {
  if (run.trace == nullptr || i < run.record_from || (i - run.record_from + 1) % run.thin != 0) {
    return;
  }
  const int64_t slot = (i - run.record_from + 1) / run.thin - 1;
  blk.store(blk.x, run.trace + slot * run.n_chains * run.d);
}

// ULA / kinetic: chains whose new state is non-finite (or that were frozen) keep their old one.
template <typename T>
void commit_unadjusted(const Run<T>& run, Block<T>& blk, int64_t i, bool kinetic) {
  if (kinetic) {
    nonfinite_check(blk, {&blk.xn, &blk.gn, &blk.vn});
  } else {
    nonfinite_check(blk, {&blk.xn, &blk.gn});
  }
  for (int64_t b = 0; b < blk.nb; ++b) {
    const int64_t n = blk.n0 + b;
    const bool finite = std::isfinite(blk.chk[b]) && std::isfinite(blk.un[b]);
    if (!finite && !run.frozen[n]) {
      run.frozen[n] = true;
      run.bad_step[n] = i + 1;
    }
    if (run.frozen[n]) {
      blk.un[b] = blk.u[b];
      if (kinetic) {
        blk.restore(b, {{&blk.xn, &blk.x}, {&blk.gn, &blk.g}, {&blk.vn, &blk.v}});
      } else {
        blk.restore(b, {{&blk.xn, &blk.x}, {&blk.gn, &blk.g}});
      }
    }
  }
  std::swap(blk.x, blk.xn);
  std::swap(blk.g, blk.gn);
  std::swap(blk.u, blk.un);
  if (kinetic) {
    std::swap(blk.v, blk.vn);
  }
}

// MALA / HMC: accepted chains take the proposal (xn, un, gn), the others keep their state. The
// block's uniforms (counters uniform_base + n) come a vector at a time; the state is then chosen
// lane by lane with one blend per row (most chains of a tuned sampler are rejected a third to
// half of the time, so per-chain copies would touch every row anyway).
template <typename T>
void commit_adjusted(const Run<T>& run, Block<T>& blk, int64_t i, uint64_t uniform_base,
                     const std::vector<T>& log_alpha) {
  using Vec = VecT<T>;
  const int64_t B = blk.B;
  for (int64_t s = 0; s < blk.nb; s += kNoiseBlock) {
    fill_uniforms(run.seed, uniform_base + static_cast<uint64_t>(blk.n0 + s), std::min(kNoiseBlock, blk.nb - s),
                  blk.rand.data() + s);
  }
  for (int64_t b = 0; b < B; ++b) {
    T prob;
    const bool accept = b < blk.nb && mh_accept(log_alpha[b], blk.rand[b], prob);
    blk.keep[b] = accept ? T(1) : T(0);
    if (accept && i >= run.record_from) {
      ++run.accepted[blk.n0 + b];
    }
  }
  const auto choose = [&](std::vector<T>& proposal, const std::vector<T>& current) {
    for (int64_t e = 0; e < static_cast<int64_t>(proposal.size()); e += Vec::size()) {
      const Vec take = Vec::loadu(blk.keep.data() + e % B) != Vec(T(0));
      Vec::blendv(Vec::loadu(current.data() + e), Vec::loadu(proposal.data() + e), take).store(proposal.data() + e);
    }
  };
  choose(blk.un, blk.u);
  choose(blk.xn, blk.x);
  choose(blk.gn, blk.g);
  std::swap(blk.x, blk.xn);
  std::swap(blk.g, blk.gn);
  std::swap(blk.u, blk.un);
}

// x' = (x - h g) + s z, s = sqrt(2h) * noise_scale (pysampler::ula_step); into xn.
template <typename T>
void langevin_proposal(Block<T>& blk, bool noise) {
  using Vec = VecT<T>;
  for (int64_t j = 0; j < blk.d; ++j) {
    for (int64_t b = 0; b < blk.B; b += Vec::size()) {
      const Vec xv = Vec::loadu(blk.col(blk.x, j) + b);
      const Vec gv = Vec::loadu(blk.col(blk.g, j) + b);
      Vec r = xv - Vec::loadu(blk.h.data() + b) * gv;
      if (noise) {
        r = r + Vec::loadu(blk.c.data() + b) * load_noise<T>(blk.z.data() + j * blk.B + b);
      }
      r.store(blk.col(blk.xn, j) + b);
    }
  }
}

template <typename T>
void run_block(const Run<T>& run, Block<T>& blk) {
  using Vec = VecT<T>;
  const int64_t B = blk.B, d = blk.d, nb = blk.nb, n0 = blk.n0;
  const uint64_t nd = static_cast<uint64_t>(run.n_chains * d);
  blk.load(run.x, blk.x);
  blk.load(run.g, blk.g);
  std::fill(blk.u.begin(), blk.u.end(), T(0));
  std::fill(blk.h.begin(), blk.h.end(), run.step[n0]);  // padding lanes: any valid step size
  for (int64_t b = 0; b < nb; ++b) {
    blk.u[b] = run.u[n0 + b];
    blk.h[b] = run.step[n0 + b];
  }
  const bool kinetic = run.algorithm == Algorithm::kKinetic;
  if (kinetic) {
    blk.v.assign(d * B, T(0));
    blk.vn.assign(d * B, T(0));
    blk.load(run.v, blk.v);
  }
  if (run.algorithm == Algorithm::kHmc) {
    blk.p0.assign(d * B, T(0));
    blk.p.assign(d * B, T(0));
  }
  // Per-chain coefficients: c = sqrt(2h) * noise_scale (Langevin); kinetic: a = exp(-gamma h / 2),
  // c = sqrt(-expm1(-gamma h)) (pysampler::kinetic_oba's exact OU coefficients).
  for (int64_t b = 0; b < B; ++b) {
    const T h = blk.h[b];
    if (kinetic) {
      const T gh = run.friction[n0 + std::min(b, nb - 1)] * h;
      blk.a[b] = std::exp(T(-0.5) * gh);
      blk.c[b] = std::sqrt(-std::expm1(-gh));
    } else {
      blk.c[b] = std::sqrt(T(2) * h) * (run.algorithm == Algorithm::kUla ? run.noise_scale : T(1));
    }
  }
  std::vector<T> log_alpha(B);
  const Vec half(T(0.5));
  for (int64_t i = 0; i < run.n_steps; ++i) {
    const uint64_t base = run.offset + static_cast<uint64_t>(i) * run.counters_per_step();
    switch (run.algorithm) {
      case Algorithm::kUla: {
        const bool noise = run.noise_scale != T(0);
        if (noise) {
          blk.normals(run.seed, base);
        }
        langevin_proposal(blk, noise);
        run.energy.eval(blk.xn.data(), blk.un.data(), blk.gn.data(), B, blk.scratch.data());
        commit_unadjusted(run, blk, i, false);
        break;
      }
      case Algorithm::kMala: {
        blk.normals(run.seed, base);
        langevin_proposal(blk, true);
        run.energy.eval(blk.xn.data(), blk.un.data(), blk.gn.data(), B, blk.scratch.data());
        // log alpha = U(x) - U(y) - (|x - y + h grad_y|^2 - |y - x + h grad|^2) / (4h)  (pysampler::mala_accept)
        for (int64_t b = 0; b < B; b += Vec::size()) {
          const Vec hv = Vec::loadu(blk.h.data() + b);
          Vec fwd(0), bwd(0);
          for (int64_t j = 0; j < d; ++j) {
            const Vec diff = Vec::loadu(blk.col(blk.xn, j) + b) - Vec::loadu(blk.col(blk.x, j) + b);
            const Vec fa = diff + hv * Vec::loadu(blk.col(blk.g, j) + b);
            const Vec ba = hv * Vec::loadu(blk.col(blk.gn, j) + b) - diff;
            fwd = fwd + fa * fa;
            bwd = bwd + ba * ba;
          }
          (Vec::loadu(blk.u.data() + b) - Vec::loadu(blk.un.data() + b) - (bwd - fwd) / (Vec(T(4)) * hv))
              .store(log_alpha.data() + b);
        }
        commit_adjusted(run, blk, i, base + nd, log_alpha);
        break;
      }
      case Algorithm::kKinetic: {
        // O(h/2) B(h/2) A(h) (pysampler::kinetic_oba), gradient, B(h/2) O(h/2) (pysampler::kinetic_bo)
        blk.normals(run.seed, base);
        for (int64_t j = 0; j < d; ++j) {
          for (int64_t b = 0; b < B; b += Vec::size()) {
            const Vec hv = Vec::loadu(blk.h.data() + b);
            Vec vv = Vec::loadu(blk.a.data() + b) * Vec::loadu(blk.col(blk.v, j) + b) +
                     Vec::loadu(blk.c.data() + b) * load_noise<T>(blk.z.data() + j * B + b);
            vv = vv - half * hv * Vec::loadu(blk.col(blk.g, j) + b);
            (Vec::loadu(blk.col(blk.x, j) + b) + hv * vv).store(blk.col(blk.xn, j) + b);
            vv.store(blk.col(blk.vn, j) + b);
          }
        }
        run.energy.eval(blk.xn.data(), blk.un.data(), blk.gn.data(), B, blk.scratch.data());
        blk.normals(run.seed, base + nd);
        for (int64_t j = 0; j < d; ++j) {
          for (int64_t b = 0; b < B; b += Vec::size()) {
            const Vec hv = Vec::loadu(blk.h.data() + b);
            Vec vv = Vec::loadu(blk.col(blk.vn, j) + b) - half * hv * Vec::loadu(blk.col(blk.gn, j) + b);
            vv = Vec::loadu(blk.a.data() + b) * vv + Vec::loadu(blk.c.data() + b) * load_noise<T>(blk.z.data() + j * B + b);
            vv.store(blk.col(blk.vn, j) + b);
          }
        }
        commit_unadjusted(run, blk, i, true);
        break;
      }
      case Algorithm::kHmc: {
        // p0 ~ N(0, I) (pysampler::momentum); L leapfrog steps, kick h/2 then h (merged kicks,
        // pysampler::leapfrog_kick_drift); the closing half kick inside the accept (pysampler::hmc_accept).
        blk.normals(run.seed, base);
        for (int64_t e = 0; e < d * B; ++e) {
          blk.p0[e] = static_cast<T>(blk.z[e]);
        }
        blk.p = blk.p0;
        std::copy(blk.x.begin(), blk.x.end(), blk.xn.begin());
        std::copy(blk.g.begin(), blk.g.end(), blk.gn.begin());
        for (int64_t l = 0; l < run.n_leapfrog; ++l) {
          for (int64_t j = 0; j < d; ++j) {
            for (int64_t b = 0; b < B; b += Vec::size()) {
              const Vec hv = Vec::loadu(blk.h.data() + b);
              const Vec kv = l == 0 ? half * hv : hv;
              const Vec pv = Vec::loadu(blk.col(blk.p, j) + b) - kv * Vec::loadu(blk.col(blk.gn, j) + b);
              pv.store(blk.col(blk.p, j) + b);
              (Vec::loadu(blk.col(blk.xn, j) + b) + hv * pv).store(blk.col(blk.xn, j) + b);
            }
          }
          run.energy.eval(blk.xn.data(), blk.un.data(), blk.gn.data(), B, blk.scratch.data());
        }
        // H = U + |p|^2 / 2 with p - (h/2) grad_y; a non-finite y rejects (its check sum is NaN).
        nonfinite_check(blk, {&blk.xn});
        for (int64_t b = 0; b < B; b += Vec::size()) {
          const Vec kv = half * Vec::loadu(blk.h.data() + b);
          Vec ke0(0), ke1(0);
          for (int64_t j = 0; j < d; ++j) {
            const Vec p0v = Vec::loadu(blk.col(blk.p0, j) + b);
            const Vec pe = Vec::loadu(blk.col(blk.p, j) + b) - kv * Vec::loadu(blk.col(blk.gn, j) + b);
            ke0 = ke0 + p0v * p0v;
            ke1 = ke1 + pe * pe;
          }
          const Vec h0 = Vec::loadu(blk.u.data() + b) + half * ke0;
          const Vec h1 = Vec::loadu(blk.un.data() + b) + half * ke1;
          (h0 - h1 + Vec::loadu(blk.chk.data() + b)).store(log_alpha.data() + b);
        }
        commit_adjusted(run, blk, i, base + nd, log_alpha);
        break;
      }
    }
    record(run, blk, i);
  }
  blk.store(blk.x, run.x);
  blk.store(blk.g, run.g);
  for (int64_t b = 0; b < nb; ++b) {
    run.u[n0 + b] = blk.u[b];
  }
  if (kinetic) {
    blk.store(blk.v, run.v);
  }
}

// Chains per block: a multiple of two vector widths (gemm_soa's unit), about 2K elements of
// state per buffer. MLP energies take 128 chains in float32, 64 in float64: large enough for the
// BLAS's kernels to run near peak, small enough that a block's activations (a few width x B
// values) stay in L2 (128 was fastest of 64-1024 on the 2-core CI Xeon for W3's 128-wide MLP,
// 10-15% ahead of 256 once the first and last layers were fused into the activations).
template <typename T>
int64_t block_chains(int64_t d, int64_t n_chains, const Energy<T>& e) {
  const int64_t unit = 2 * VecT<T>::size();
  int64_t b = e.kind == EnergyKind::kMlp ? static_cast<int64_t>(512 / sizeof(T))
                                         : std::clamp<int64_t>(2048 / std::max<int64_t>(d, 1), unit, 256);
  b = std::min(b, (n_chains + unit - 1) / unit * unit);
  return std::max(unit, b / unit * unit);
}

FusedResult fused_chain_cpu(const std::string& sampler, const at::Tensor& x, const at::Tensor& energy,
                            const at::Tensor& grad, const std::optional<at::Tensor>& v, const at::Tensor& step_size,
                            const std::optional<at::Tensor>& friction, const at::Tensor& frozen, const at::Tensor& rng,
                            int64_t n_steps, int64_t record_from, int64_t thin, int64_t n_leapfrog, double noise_scale,
                            const std::string& target, at::TensorList params) {
  constexpr const char* op = "pysampler::fused_chain: ";
  const Algorithm algorithm = parse_algorithm(op, sampler);
  check_fused_chain_args(op, x, energy, grad, v, step_size, friction, frozen, rng, n_steps, record_from, thin,
                         n_leapfrog, noise_scale, algorithm == Algorithm::kKinetic);
  check_cpu_state_type(op, x);
  const auto [seed, offset] = read_rng(op, rng);
  const int64_t n_chains = x.size(0), d = x.numel() / std::max<int64_t>(n_chains, 1);
  const int64_t n_keep = thin > 0 ? (n_steps - record_from) / thin : 0;

  at::Tensor x_out = x.contiguous().clone(), u_out = energy.contiguous().clone(), g_out = grad.contiguous().clone();
  at::Tensor v_out = algorithm == Algorithm::kKinetic ? v->contiguous().clone() : at::empty({0}, x.options());
  at::Tensor frozen_out = frozen.contiguous().clone();
  at::Tensor bad_step = at::zeros({n_chains}, x.options().dtype(at::kLong));
  at::Tensor accepted = at::zeros({n_chains}, x.options().dtype(at::kLong));
  std::vector<int64_t> trace_shape{n_keep};
  trace_shape.insert(trace_shape.end(), x.sizes().begin(), x.sizes().end());
  at::Tensor trace = at::empty(trace_shape, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (n_chains == 0 || n_steps == 0) {
    return {x_out, u_out, g_out, v_out, frozen_out, bad_step, accepted, trace};
  }
  const std::vector<at::Tensor> param_list(params.begin(), params.end());
  const at::Tensor hc = step_size.contiguous();
  const at::Tensor fc = friction.has_value() ? friction->contiguous() : at::Tensor();

  const auto launch = [&](auto zero) {
    using T = decltype(zero);
    Run<T> run{algorithm,
               make_energy<T>(op, target, param_list, d, x),
               n_chains, d, n_steps, record_from, thin, n_leapfrog,
               static_cast<T>(noise_scale), seed, offset,
               hc.const_data_ptr<T>(), fc.defined() ? fc.const_data_ptr<T>() : nullptr,
               x_out.mutable_data_ptr<T>(), u_out.mutable_data_ptr<T>(), g_out.mutable_data_ptr<T>(),
               algorithm == Algorithm::kKinetic ? v_out.mutable_data_ptr<T>() : nullptr,
               frozen_out.mutable_data_ptr<bool>(), bad_step.mutable_data_ptr<int64_t>(),
               accepted.mutable_data_ptr<int64_t>(), n_keep > 0 ? trace.mutable_data_ptr<T>() : nullptr};
    const int64_t B = block_chains<T>(d, n_chains, run.energy);
    const int64_t n_blocks = (n_chains + B - 1) / B;
    at::parallel_for(0, n_blocks, 1, [&](int64_t begin, int64_t end) {
      Block<T> blk(B, d, run.energy);
      for (int64_t blk_i = begin; blk_i < end; ++blk_i) {
        blk.n0 = blk_i * B;
        blk.nb = std::min(B, n_chains - blk.n0);
        run_block(run, blk);
      }
    });
  };
  if (x.scalar_type() == at::kFloat) {
    launch(0.0f);
  } else {
    launch(0.0);
  }
  return {x_out, u_out, g_out, v_out, frozen_out, bad_step, accepted, trace};
}

}  // namespace

void register_fused_ops(torch::Library& m) { m.impl("fused_chain", &fused_chain_cpu); }

}  // namespace pysampler::cpu::CPU_CAPABILITY
