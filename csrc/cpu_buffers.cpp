// The CPU kernels' output-buffer cache (why: csrc/cpu_buffers.h).
#include "cpu_buffers.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace pysampler::cpu {
namespace {

constexpr size_t kMinCachedBytes = size_t{1} << 20;  // below this, glibc's free lists already recycle
constexpr int64_t kDefaultLimitBytes = int64_t{1} << 30;

int64_t limit_from_environment() {
  const char* mb = std::getenv("PYSAMPLER_CPU_CACHE_MB");
  if (mb == nullptr || mb[0] == '\0') return kDefaultLimitBytes;
  char* end = nullptr;
  const long long value = std::strtoll(mb, &end, 10);
  TORCH_CHECK(end != mb && *end == '\0' && value >= 0,
              "PYSAMPLER_CPU_CACHE_MB must be a non-negative whole number of MiB, got '", mb, "'");
  return static_cast<int64_t>(value) << 20;
}

// A block as the DataPtr's context: where it starts and how many bytes it has.
struct Block {
  void* data;
  size_t bytes;
};

class BufferCache final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t bytes) override {
    if (bytes < kMinCachedBytes) return c10::GetCPUAllocator()->allocate(bytes);
    Block* block = take(bytes);
    if (block == nullptr) block = new Block{c10::alloc_cpu(bytes), bytes};
    return {block->data, block, &BufferCache::give_back, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, size_t count) const override { default_copy_data(dest, src, count); }

  int64_t set_limit(int64_t bytes) {
    TORCH_CHECK(bytes >= 0, "cpu_buffer_cache_limit: bytes must be >= 0, got ", bytes);
    std::vector<Block*> released;
    int64_t previous;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      previous = limit_;
      limit_ = bytes;
      // Free the largest blocks first until the cached bytes fit the new cap.
      while (cached_ > limit_ && !free_.empty()) {
        auto largest = free_.begin();
        for (auto it = free_.begin(); it != free_.end(); ++it) {
          if (it->first > largest->first) largest = it;
        }
        released.push_back(largest->second.back());
        largest->second.pop_back();
        cached_ -= static_cast<int64_t>(largest->first);
        if (largest->second.empty()) free_.erase(largest);
      }
    }
    for (Block* block : released) release(block);
    return previous;
  }

  int64_t cached_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return cached_;
  }

  static BufferCache& instance() {
    // Never destroyed: tensors still alive at exit give their blocks back through it.
    static BufferCache* const cache = new BufferCache();
    return *cache;
  }

 private:
  Block* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(bytes);
    if (it == free_.end()) return nullptr;
    Block* block = it->second.back();
    it->second.pop_back();
    if (it->second.empty()) free_.erase(it);
    cached_ -= static_cast<int64_t>(bytes);
    return block;
  }

  static void give_back(void* context) {
    auto* block = static_cast<Block*>(context);
    BufferCache& cache = instance();
    {
      std::lock_guard<std::mutex> lock(cache.mutex_);
      if (cache.cached_ + static_cast<int64_t>(block->bytes) <= cache.limit_) {
        cache.free_[block->bytes].push_back(block);
        cache.cached_ += static_cast<int64_t>(block->bytes);
        return;
      }
    }
    release(block);
  }

  static void release(Block* block) {
    c10::free_cpu(block->data);
    delete block;
  }

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<Block*>> free_;  // free blocks by exact size
  int64_t cached_ = 0;
  int64_t limit_ = limit_from_environment();
};

}  // namespace

at::Tensor new_output(c10::IntArrayRef sizes, const c10::TensorOptions& options) {
  TORCH_INTERNAL_ASSERT(options.device().is_cpu());
  return at::detail::empty_generic(sizes, &BufferCache::instance(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), c10::MemoryFormat::Contiguous);
}

int64_t set_buffer_cache_limit(int64_t bytes) { return BufferCache::instance().set_limit(bytes); }

int64_t buffer_cache_bytes() { return BufferCache::instance().cached_bytes(); }

}  // namespace pysampler::cpu

// No tensor arguments: CompositeExplicitAutograd serves the calls (as for cpu_capability).
TORCH_LIBRARY_IMPL(pysampler, CompositeExplicitAutograd, m) {
  m.impl("cpu_buffer_cache_limit", &pysampler::cpu::set_buffer_cache_limit);
  m.impl("cpu_buffer_cache_bytes", &pysampler::cpu::buffer_cache_bytes);
}
