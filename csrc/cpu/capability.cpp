// One capability build's entry points for csrc/cpu_dispatch.cpp (see csrc/cpu/ops.h).
#include "noise.h"
#include "ops.h"

namespace pysampler::cpu::CPU_CAPABILITY {

void register_kernels(torch::Library& m) {
  register_ula_ops(m);
  register_kinetic_ops(m);
  register_hmc_ops(m);
  register_accept_ops(m);
  register_diffusion_ops(m);
  register_fused_ops(m);
}

bool kernels_usable() {
#if defined(PYSAMPLER_NOISE_SIMD)
  return sleef_available();
#else
  return true;
#endif
}

}  // namespace pysampler::cpu::CPU_CAPABILITY
