// The CPU kernels of csrc/cpu/ and how they are built: once per CPU capability.
//
// Every .cpp in csrc/cpu/ is compiled once per capability (CMakeLists.txt), the way ATen builds its
// own CPU kernels: as DEFAULT (any CPU of the architecture) and, on x86-64, as AVX2 (-mavx2 -mfma,
// where at::vec::Vectorized is 8 float lanes and the Philox normals run eight counters at a time)
// and AVX512 (-mavx512f/bw/vl/dq: 16 float lanes, and sixteen Philox counters at a time). The macros
// CPU_CAPABILITY (DEFAULT, AVX2 or AVX512) and CPU_CAPABILITY_<name> say which build a file is in;
// everything a file defines lives in namespace pysampler::cpu::CPU_CAPABILITY, so the builds never
// share a symbol. csrc/cpu_dispatch.cpp registers one build's ops with the dispatcher when the
// library loads: the best the CPU has (PYSAMPLER_NO_AVX512=1 stops at AVX2, PYSAMPLER_NO_AVX2=1
// forces DEFAULT).
#pragma once

#include <torch/library.h>

namespace pysampler::cpu::CPU_CAPABILITY {

// Each kernel file registers its ops' CPU implementations (m: the pysampler library's CPU block).
void register_ula_ops(torch::Library& m);
void register_kinetic_ops(torch::Library& m);
void register_hmc_ops(torch::Library& m);
void register_accept_ops(torch::Library& m);
void register_diffusion_ops(torch::Library& m);
void register_fused_ops(torch::Library& m);

// All of the above (csrc/cpu/capability.cpp).
void register_kernels(torch::Library& m);

// Whether this build's kernels can run in this process, given a CPU with the capability's
// instructions: AVX2 and AVX512 also need SLEEF's vector logf / cosf from libtorch_cpu.
bool kernels_usable();

}  // namespace pysampler::cpu::CPU_CAPABILITY
