// Registers the CPU implementations of the pysampler ops: the kernels of csrc/cpu/ built for the
// best capability this CPU has (csrc/cpu/ops.h), chosen once, when the library loads.
//
// PYSAMPLER_NO_AVX512=1 (set before the library loads) stops at the AVX2 build, PYSAMPLER_NO_AVX2=1
// forces DEFAULT; the tests use them to check the builds agree. pysampler::cpu_capability() says
// which one runs.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>

namespace pysampler::cpu {

namespace DEFAULT {
void register_kernels(torch::Library& m);
}  // namespace DEFAULT

#if defined(PYSAMPLER_CPU_AVX2)
namespace AVX2 {
void register_kernels(torch::Library& m);
bool kernels_usable();
}  // namespace AVX2
#endif

#if defined(PYSAMPLER_CPU_AVX512)
namespace AVX512 {
void register_kernels(torch::Library& m);
bool kernels_usable();
}  // namespace AVX512
#endif

namespace {

bool env_flag(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && value[0] != '\0' && std::string(value) != "0";
}

// The capability build whose kernels serve this process: "AVX512", "AVX2" or "DEFAULT".
const char* chosen_capability() {
  static const char* const chosen = [] {
#if defined(PYSAMPLER_CPU_AVX512)
    // The feature check comes first: AVX512::kernels_usable is AVX-512 code.
    if (!env_flag("PYSAMPLER_NO_AVX2") && !env_flag("PYSAMPLER_NO_AVX512") && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma") && AVX512::kernels_usable()) {
      return "AVX512";
    }
#endif
#if defined(PYSAMPLER_CPU_AVX2)
    // The feature check comes first: AVX2::kernels_usable is AVX2 code.
    if (!env_flag("PYSAMPLER_NO_AVX2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        AVX2::kernels_usable()) {
      return "AVX2";
    }
#endif
    return "DEFAULT";
  }();
  return chosen;
}

std::string cpu_capability_op() { return chosen_capability(); }

}  // namespace
}  // namespace pysampler::cpu

// No tensor arguments: CompositeExplicitAutograd serves the call (as for philox_words).
TORCH_LIBRARY_IMPL(pysampler, CompositeExplicitAutograd, m) {
  m.impl("cpu_capability", &pysampler::cpu::cpu_capability_op);
}

TORCH_LIBRARY_IMPL(pysampler, CPU, m) {
#if defined(PYSAMPLER_CPU_AVX512)
  if (std::string(pysampler::cpu::chosen_capability()) == "AVX512") {
    pysampler::cpu::AVX512::register_kernels(m);
    return;
  }
#endif
#if defined(PYSAMPLER_CPU_AVX2)
  if (std::string(pysampler::cpu::chosen_capability()) == "AVX2") {
    pysampler::cpu::AVX2::register_kernels(m);
    return;
  }
#endif
  pysampler::cpu::DEFAULT::register_kernels(m);
}
