#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define ONEBIT_HAVE_GETPID 1
#endif

#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#define ONEBIT_HAVE_OMP_LOOKUP 1
#endif

#include <cstdlib>
#include <cstring>
#include <string>

namespace onebit {
namespace {

// Calls fn(i) for the items [0, n_items) that `next` hands to this thread, one at a time (the
// loop every participant of a parallel_for runs, in either backend).
void take_items(std::atomic<int64_t>& next, int64_t n_items, const std::function<void(int64_t)>& fn) {
  for (;;) {
    const int64_t i = next.fetch_add(1, std::memory_order_relaxed);
    if (i >= n_items) break;
    fn(i);
  }
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spin for this long before blocking: back-to-back engine calls (a chain of binary layers, a
// benchmark loop) then find the workers awake, as a futex wake-up per layer would eat a large
// part of the 2-thread speedup.  Time-based rather than a count of pause instructions, whose
// latency differs ~10x between CPUs (Skylake-X ~140 cycles, Zen 3 ~10); kept short because a
// spinning worker takes a core from whatever runs between layers (torch's own threads).
constexpr auto kSpinTime = std::chrono::microseconds(100);

// Spins until pred() or the spin time has passed; returns pred().
template <class Pred>
bool spin_until(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
  for (;;) {
    for (int s = 0; s < 64; ++s) {
      if (pred()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return pred();
  }
}

class Pool {
 public:
  ~Pool() { stop_workers(); }

  void run(int num_threads, int64_t n_items, const std::function<void(int64_t)>& fn) {
    std::lock_guard<std::mutex> call_lock(call_mutex_);
    if (num_threads <= 1) {
      for (int64_t i = 0; i < n_items; ++i) fn(i);
      return;
    }
    ensure_workers(num_threads - 1);
    {
      std::lock_guard<std::mutex> lk(mutex_);
      fn_ = &fn;
      n_items_ = n_items;
      next_.store(0, std::memory_order_relaxed);
      participants_ = num_threads - 1;
      active_.store(num_threads - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_start_.notify_all();
    work();
    if (!spin_until([&] { return active_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lk(mutex_);
      cv_done_.wait(lk, [&] { return active_.load(std::memory_order_acquire) == 0; });
    }
    fn_ = nullptr;
  }

 private:
  void work() { take_items(next_, n_items_, *fn_); }

  // `seen` starts at the generation current when the worker was created (before the job that
  // needed it is published), so a worker that starts late still takes part in that job.
  void worker_main(int index, uint64_t seen) {
    for (;;) {
      uint64_t g = seen;
      spin_until([&] {
        g = generation_.load(std::memory_order_acquire);
        return g != seen || stop_.load(std::memory_order_relaxed);
      });
      if (g == seen && !stop_.load(std::memory_order_relaxed)) {
        std::unique_lock<std::mutex> lk(mutex_);
        cv_start_.wait(lk, [&] {
          return stop_.load(std::memory_order_relaxed) || generation_.load(std::memory_order_acquire) != seen;
        });
        g = generation_.load(std::memory_order_acquire);
      }
      if (stop_.load(std::memory_order_relaxed)) return;
      seen = g;
      if (index >= participants_) continue;  // not needed for this job
      work();
      if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(mutex_);
        cv_done_.notify_one();
      }
    }
  }

  // (A fork()ed child never reuses its parent's pool: see pool().)
  void ensure_workers(int n) {
    if (static_cast<int>(workers_.size()) >= n) return;
    for (int i = static_cast<int>(workers_.size()); i < n; ++i)
      workers_.emplace_back([this, i, g = generation_.load()] { worker_main(i, g); });
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(mutex_);
      stop_.store(true);
    }
    cv_start_.notify_all();
    for (auto& t : workers_)
      if (t.joinable()) t.join();
    workers_.clear();
  }

  std::mutex call_mutex_;
  std::mutex mutex_;
  std::condition_variable cv_start_, cv_done_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t)>* fn_ = nullptr;
  int64_t n_items_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> active_{0};
  int participants_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
};

std::mutex pool_mutex;
Pool* the_pool = nullptr;
#ifdef ONEBIT_HAVE_GETPID
pid_t pool_pid = 0;
#endif

Pool& pool() {
  // Intentionally leaked: joining threads during interpreter shutdown is not safe.  A fork()ed
  // child gets a new pool: its copy of the parent's has no threads, and condition variables
  // that still count the parent's waiters, which would never wake the child's new workers.
  std::lock_guard<std::mutex> lk(pool_mutex);
#ifdef ONEBIT_HAVE_GETPID
  if (the_pool != nullptr && pool_pid != getpid()) the_pool = nullptr;
  pool_pid = getpid();
#endif
  if (the_pool == nullptr) the_pool = new Pool();
  return *the_pool;
}

// --- torch's OpenMP runtime as the thread pool ---------------------------------------------
// torch's CPU builds run their intra-op work on an OpenMP team (libgomp on Linux) whose idle
// threads keep spinning for a while after every torch op.  A second pool of our own would then
// fight them for the cores whenever a network mixes torch layers with packed ones: measured on
// a 2-core machine, a packed ResNet-18 ran slower on 2 threads than on 1.  So when the process
// has a GNU OpenMP runtime loaded (torch's), the engine hands its items to that runtime's team
// (GOMP_parallel, the entry point compiled `#pragma omp parallel` code calls) and the same
// threads serve both; otherwise, or with ONEBIT_THREADS=own, it uses the pool above.

using GompParallelFn = void (*)(void (*)(void*), void*, unsigned, unsigned);

struct OmpJob {
  const std::function<void(int64_t)>* fn;
  int64_t n_items;
  std::atomic<int64_t> next{0};
};

void omp_team_body(void* data) {
  OmpJob& job = *static_cast<OmpJob*>(data);
  take_items(job.next, job.n_items, *job.fn);
}

struct OmpRuntime {
  GompParallelFn parallel = nullptr;
  std::string path;
};

#ifdef ONEBIT_HAVE_OMP_LOOKUP
int find_gomp(struct dl_phdr_info* info, size_t, void* out) {
  const char* name = info->dlpi_name;
  if (name == nullptr || std::strstr(name, "libgomp") == nullptr) return 0;
  *static_cast<std::string*>(out) = name;
  return 1;
}
#endif

OmpRuntime find_omp_runtime() {
  OmpRuntime rt;
#ifdef ONEBIT_HAVE_OMP_LOOKUP
  std::string path;
  dl_iterate_phdr(&find_gomp, &path);
  if (path.empty()) return rt;
  void* handle = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD);  // already loaded: no new copy
  if (handle == nullptr) return rt;
  rt.parallel = reinterpret_cast<GompParallelFn>(dlsym(handle, "GOMP_parallel"));
  if (rt.parallel != nullptr) rt.path = path;
#endif
  return rt;
}

std::mutex backend_mutex;
int backend_choice = -1;  // -1: not decided yet, else a ThreadBackend
OmpRuntime omp_runtime;
#ifdef ONEBIT_HAVE_GETPID
pid_t omp_pid = 0;  // the process that chose the OpenMP team
#endif

// libgomp's team does not survive fork(): a child that starts a parallel region with the
// parent's team state can hang.  A forked child therefore uses the own pool (which re-creates
// its threads after a fork).
bool omp_usable_here() {
#ifdef ONEBIT_HAVE_GETPID
  return omp_pid == getpid();
#else
  return true;
#endif
}

// The backend for this call; decided at the first parallel call (torch is loaded by then).
int current_backend() {
  std::lock_guard<std::mutex> lk(backend_mutex);
  if (backend_choice < 0) {
    const char* env = std::getenv("ONEBIT_THREADS");
    const bool own = env != nullptr && std::strcmp(env, "own") == 0;
    if (!own) omp_runtime = find_omp_runtime();
    backend_choice = omp_runtime.parallel != nullptr ? kThreadsOpenMP : kThreadsOwn;
#ifdef ONEBIT_HAVE_GETPID
    omp_pid = getpid();
#endif
  }
  return backend_choice == kThreadsOpenMP && !omp_usable_here() ? kThreadsOwn : backend_choice;
}

}  // namespace

void parallel_for(int num_threads, int64_t n_items, const std::function<void(int64_t)>& fn) {
  if (n_items <= 0) return;
  if (num_threads < 1) num_threads = 1;
  if (num_threads > n_items) num_threads = static_cast<int>(n_items);
  if (num_threads > 1 && current_backend() == kThreadsOpenMP) {
    OmpJob job{&fn, n_items};
    omp_runtime.parallel(&omp_team_body, &job, static_cast<unsigned>(num_threads), 0u);
    return;
  }
  pool().run(num_threads, n_items, fn);
}

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::atomic<bool> profiling_on{false};
std::mutex profile_mutex;
RegionProfile last_profile;

// times: busy[threads], then (multi-threaded regions) start[threads] and end[threads].
void record_region(double wall, const double* times, int threads) {
  std::lock_guard<std::mutex> lk(profile_mutex);
  last_profile.wall = wall;
  last_profile.busy.assign(times, times + threads);
  if (threads > 1) {
    last_profile.start.assign(times + threads, times + 2 * threads);
    last_profile.end.assign(times + 2 * threads, times + 3 * threads);
  } else {
    last_profile.start.assign(1, 0.0);
    last_profile.end.assign(1, wall);
  }
}

}  // namespace

void parallel_ranges(int num_threads, int64_t n_items, int64_t grain,
                     const std::function<void(int64_t, int64_t)>& fn) {
  if (n_items <= 0) return;
  if (grain < 1) grain = 1;
  const int64_t units = (n_items + grain - 1) / grain;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, units)));
  if (threads == 1) {
    if (!profiling_on.load(std::memory_order_relaxed)) {
      fn(0, n_items);
      return;
    }
    const auto t0 = Clock::now();
    fn(0, n_items);
    const double t = seconds_since(t0);
    record_region(t, &t, 1);
    return;
  }
  // Each slot owns a contiguous segment of the units and works it front to back, one unit per
  // claim; a slot whose segment is done helps the others with theirs.
  struct alignas(64) Segment {
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  std::unique_ptr<Segment[]> seg(new Segment[threads]);
  for (int t = 0; t < threads; ++t) {
    seg[t].next.store(units * t / threads, std::memory_order_relaxed);
    seg[t].end = units * (t + 1) / threads;
  }
  const bool profiling = profiling_on.load(std::memory_order_relaxed);
  // profiling only: per thread, time in fn, then start and end of its share
  std::unique_ptr<double[]> times(profiling ? new double[3 * threads]() : nullptr);
  const auto region_start = Clock::now();
  parallel_for(threads, threads, [&](int64_t slot) {
    if (profiling) times[threads + slot] = seconds_since(region_start);
    for (int k = 0; k < threads; ++k) {
      Segment& s = seg[(slot + k) % threads];
      for (;;) {
        const int64_t u = s.next.fetch_add(1, std::memory_order_relaxed);
        if (u >= s.end) break;
        if (!profiling) {
          fn(u * grain, std::min(n_items, (u + 1) * grain));
          continue;
        }
        const auto t0 = Clock::now();
        fn(u * grain, std::min(n_items, (u + 1) * grain));
        times[slot] += seconds_since(t0);
      }
    }
    if (profiling) times[2 * threads + slot] = seconds_since(region_start);
  });
  if (profiling) record_region(seconds_since(region_start), times.get(), threads);
}

RegionProfile last_region_profile() {
  std::lock_guard<std::mutex> lk(profile_mutex);
  return last_profile;
}

void set_region_profiling(bool on) { profiling_on.store(on, std::memory_order_relaxed); }

std::string set_thread_backend(const std::string& name) {
  std::lock_guard<std::mutex> lk(backend_mutex);
  if (name == "own") {
    backend_choice = kThreadsOwn;
  } else if (name == "openmp") {
    if (omp_runtime.parallel == nullptr) omp_runtime = find_omp_runtime();
    if (omp_runtime.parallel == nullptr) return "no GNU OpenMP runtime (libgomp) is loaded in this process";
    backend_choice = kThreadsOpenMP;
#ifdef ONEBIT_HAVE_GETPID
    omp_pid = getpid();
#endif
  } else {
    return "unknown thread backend '" + name + "' (valid: own, openmp)";
  }
  return "";
}

std::string thread_backend() {
  const int b = current_backend();
  std::lock_guard<std::mutex> lk(backend_mutex);
  return b == kThreadsOpenMP ? "openmp:" + omp_runtime.path : "own";
}

int hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

}  // namespace onebit
