// The engine's multi-threading: torch's OpenMP team when the process has one (no
// oversubscription with torch's own threads), else a small persistent std::thread pool.  The
// engine's thread count is set on its own either way (set_num_threads).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace onebit {

// Runs fn(item) for item in [0, n_items) on `num_threads` threads (the caller included).
// Items are handed out dynamically; each item must write disjoint output.  Calls from
// several Python threads are serialized.  fn must not throw.
void parallel_for(int num_threads, int64_t n_items, const std::function<void(int64_t)>& fn);

// Runs fn(begin, end) over [0, n_items) in units of `grain` items (the last may be shorter).
// Each thread owns a contiguous segment of the units (usually the same one on every call: the
// calling thread arrives first and takes the first) and takes them one at a time; a thread whose
// segment is done takes the rest of another's, so the threads finish together and a thread that
// starts late (a vCPU busy elsewhere) only means the others take its share.
void parallel_ranges(int num_threads, int64_t n_items, int64_t grain,
                     const std::function<void(int64_t, int64_t)>& fn);

// Runs fn(lo, len) over [0, n) in consecutive spans of at most `span` elements (the unit a thread
// takes at a time: a span's data stays in its cache), on `num_threads` threads.
template <typename Fn>
void over_spans(int64_t n, int64_t span, int num_threads, Fn fn) {
  parallel_ranges(num_threads, (n + span - 1) / span, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) fn(s * span, std::min(span, n - s * span));
  });
}

// Where the time of the last parallel_ranges call went, recorded while profiling is on (a
// benchmark's diagnostic; off by default, when it costs one relaxed load per call): the region's
// wall time (hand-out to join), each thread's time inside fn, and when each thread started and
// finished its share, in seconds from the region's start.
struct RegionProfile {
  double wall = 0;
  std::vector<double> busy, start, end;
};
void set_region_profiling(bool on);
RegionProfile last_region_profile();

enum ThreadBackend : int { kThreadsOwn = 0, kThreadsOpenMP = 1 };

// Forces a backend ("own" or "openmp"); returns "" or the reason it cannot be used.
std::string set_thread_backend(const std::string& name);
// "own" or "openmp:<path of the runtime>".
std::string thread_backend();

// Number of hardware threads (>= 1).
int hardware_threads();

}  // namespace onebit
