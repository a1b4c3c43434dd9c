// A small persistent thread pool (std::thread) owned by the engine, independent of torch's
// intra-op pool, so the engine's thread count is set on its own (set_num_threads).
#pragma once

#include <cstdint>
#include <functional>

namespace onebit {

// Runs fn(item) for item in [0, n_items) on `num_threads` threads (the caller included).
// Items are handed out dynamically; each item must write disjoint output.  Calls from
// several Python threads are serialized.  fn must not throw.
void parallel_for(int num_threads, int64_t n_items, const std::function<void(int64_t)>& fn);

// Number of hardware threads (>= 1).
int hardware_threads();

}  // namespace onebit
