// Output buffers of the CPU kernels, recycled instead of handed back to the C library.
//
// glibc's malloc serves every block above 32 MiB with a fresh mmap and unmaps it on free, so a
// step op that returns a (4096, 3072) float32 tensor pays the kernel's page faults on all 12,288
// of its pages, every call: about 15 ms on the 2-core CI machine, where the op's own work takes
// 5-15 ms. A sampler frees its previous state each step and asks for the same shapes again, so the
// CPU ops draw their outputs from a cache of freed blocks (exact byte size, blocks of at least
// 1 MiB; smaller ones glibc recycles itself), as the CUDA caching allocator does on the GPU.
// Cached (free) bytes are capped: 1 GiB by default, PYSAMPLER_CPU_CACHE_MB at load, or
// pysampler::cpu_buffer_cache_limit(bytes) at run time (0 empties the cache and disables it).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>

#include <cstdint>

namespace pysampler::cpu {

// An uninitialised contiguous tensor of these sizes and options, its storage from the cache.
at::Tensor new_output(c10::IntArrayRef sizes, const c10::TensorOptions& options);

// new_output with `like`'s sizes and options (contiguous whatever like's strides).
inline at::Tensor new_output_like(const at::Tensor& like) { return new_output(like.sizes(), like.options()); }

// Sets the cap on cached free bytes (freeing blocks above it) and returns the previous cap.
int64_t set_buffer_cache_limit(int64_t bytes);

// Bytes now held free in the cache.
int64_t buffer_cache_bytes();

}  // namespace pysampler::cpu
