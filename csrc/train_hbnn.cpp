// HBNN's weight quantizer, row by row (see train_hbnn.h).
//
// A row's work: one pass for sum |x|; per selecting level one pass over the elements still in play for
// their distances and a histogram of the distances' top bits (non-negative floats order like their bit
// patterns), one pass collecting the threshold's bin (nth_element within it gives the exact order
// statistic, like np.partition) and one pass that stops the chosen ones and compacts the rest (index,
// |x|, residual), in index order, for the next level (a level where everyone stops needs no pass but its
// sum); then one pass over the row writes the approximation from x, the bit map and the scales (and
// takes max |x|): no level writes approximations through scattered indices or carries them along.
// Build with -ffp-contract=off (CMakeLists.txt): the products and sums must round like torch's.
#include "train_hbnn.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "thread_pool.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define ONEBIT_HBNN_X86 1
#define ONEBIT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,popcnt")))
#endif

namespace onebit {
namespace {

constexpr int kHistBits = 12;          // distance bins: exponent + 4 mantissa bits (the sign bit is 0)
constexpr int kHistShift = 31 - kHistBits;
constexpr int kBins = 1 << kHistBits;

inline uint32_t bits_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

inline float float_of(uint32_t b) {
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

inline float sign_of(float v) { return v < 0.0f ? -1.0f : 1.0f; }  // onebit's sign: +1 at 0 and -0

// Per-thread scratch, kept between calls (a row's lists are rebuilt from scratch at every call).
struct Scratch {
  std::vector<uint32_t> idx;    // the elements still in play, ascending
  std::vector<float> val;       // per idx entry: |x| (paper) or the residual R (binarization)
  std::vector<float> dist;      // per idx entry: the distance to the level's mean
  std::vector<float> mag;       // per idx entry: |x|
  std::vector<int32_t> lvl;     // binarization: per idx entry, its bit map entry
  std::vector<uint32_t> bin;    // the bit patterns of the threshold's bin
  std::vector<uint32_t> hist = std::vector<uint32_t>(2 * kBins);

  void reserve(int64_t n) {
    const int64_t size = n + 16;  // the vector passes store whole vectors: 16 lanes of slack
    if (static_cast<int64_t>(idx.size()) < size) {
      idx.resize(size);
      val.resize(size);
      dist.resize(size);
      mag.resize(size);
      lvl.resize(size);
    }
  }
};

constexpr int kLanes = 32;  // abs_sum's partial sums

// sum |v| in double: 32 partial sums by index mod 32, in index order, then added pairwise (the same
// order on every ISA: abs_sum_512 keeps them in four vectors of eight).
double combine(const double* a) {
  double b[8];
  for (int l = 0; l < 8; ++l) b[l] = (a[l] + a[l + 8]) + (a[l + 16] + a[l + 24]);
  return ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
}

double abs_sum(const float* v, int64_t m) {
  double a[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= m; i += kLanes)
    for (int l = 0; l < kLanes; ++l) a[l] += std::fabs(static_cast<double>(v[i + l]));
  for (int l = 0; i < m; ++i, ++l) a[l] += std::fabs(static_cast<double>(v[i]));
  return combine(a);
}

// The mean the torch path takes, float32 sum / float32 count (the sum here rounded once from double).
inline float mean_of(double sum, int64_t count) {
  return static_cast<float>(sum) / static_cast<float>(std::max<int64_t>(count, 1));
}

struct Threshold {
  float value;   // the k-th smallest distance
  int64_t room;  // how many of the elements equal to it stop (the first by index)
  int64_t ties;  // how many elements equal it
};

// The k-th smallest (1-based, 1 <= k <= m) of the m distances d (>= 0, not NaN, bit patterns in
// [base, base + 2^(shift+12))) and how many of those equal to it fall within the k smallest: a histogram of
// (bits - base) >> shift (two sub-histograms: runs of one bin do not wait on each other's increments), then
// nth_element within the bin that holds the k-th.
Threshold kth_smallest(const float* d, int64_t m, int64_t k, Scratch& s, uint32_t base = 0,
                       int shift = kHistShift) {
  uint32_t* h = s.hist.data();
  std::fill(h, h + 2 * kBins, 0u);
  int64_t i = 0;
  for (; i + 2 <= m; i += 2) {
    ++h[(bits_of(d[i]) - base) >> shift];
    ++h[kBins + ((bits_of(d[i + 1]) - base) >> shift)];
  }
  if (i < m) ++h[(bits_of(d[i]) - base) >> shift];
  int64_t before = 0;
  uint32_t bin = 0;
  for (;; ++bin) {
    const int64_t in_bin = static_cast<int64_t>(h[bin]) + h[kBins + bin];
    if (before + in_bin >= k) break;
    before += in_bin;
  }
  s.bin.clear();
  for (i = 0; i < m; ++i) {
    const uint32_t b = bits_of(d[i]);
    if (((b - base) >> shift) == bin) s.bin.push_back(b);
  }
  const auto nth = s.bin.begin() + (k - before - 1);
  std::nth_element(s.bin.begin(), nth, s.bin.end());
  const uint32_t t = *nth;
  int64_t below = before, ties = 0;
  for (const uint32_t b : s.bin) {
    below += b < t;
    ties += b == t;
  }
  return {float_of(t), k - below, ties};
}

inline float distance(float v, float mean) { return std::fabs(std::fabs(v) - mean); }

// --- the vectorized passes (AVX-512 where the CPU has it; the scalar loops give the same values) ---
std::atomic<bool> g_scalar_only{false};  // hbnn_scalar_only(): the tests' switch to the scalar loops

#ifdef ONEBIT_HBNN_X86
bool has_avx512() {
  static const bool yes = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }();
  return yes && !g_scalar_only.load(std::memory_order_relaxed);
}

ONEBIT_AVX512 inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1);
}

ONEBIT_AVX512 inline __m512d abs_pd_of(const float* v, __mmask8 live) {
  return _mm512_abs_pd(_mm512_maskz_cvtps_pd(0xFF, _mm256_maskz_loadu_ps(live, v)));
}

// abs_sum's 32 lanes in four vectors: lane l sums the elements k = l mod 32, in order.
ONEBIT_AVX512 double abs_sum_512(const float* v, int64_t m) {
  __m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
  int64_t i = 0;
  for (; i + kLanes <= m; i += kLanes) {
    a0 = _mm512_add_pd(a0, abs_pd_of(v + i, 0xFF));
    a1 = _mm512_add_pd(a1, abs_pd_of(v + i + 8, 0xFF));
    a2 = _mm512_add_pd(a2, abs_pd_of(v + i + 16, 0xFF));
    a3 = _mm512_add_pd(a3, abs_pd_of(v + i + 24, 0xFF));
  }
  __m512d* acc[4] = {&a0, &a1, &a2, &a3};
  for (int q = 0; i < m; i += 8, ++q) {
    const __mmask8 live = m - i >= 8 ? static_cast<__mmask8>(0xFF) : static_cast<__mmask8>((1u << (m - i)) - 1);
    *acc[q] = _mm512_mask_add_pd(*acc[q], live, *acc[q], abs_pd_of(v + i, live));
  }
  alignas(64) double a[kLanes];
  _mm512_store_pd(a, a0);
  _mm512_store_pd(a + 8, a1);
  _mm512_store_pd(a + 16, a2);
  _mm512_store_pd(a + 24, a3);
  return combine(a);
}

// Compress-and-store through a register (vcompress to memory is microcoded on some CPUs): writes a
// whole vector at p, of which the first popcount(keep) lanes count (the buffers have 16 lanes of slack).
ONEBIT_AVX512 inline int append(float* p, __mmask16 keep, __m512 v) {
  _mm512_storeu_ps(p, _mm512_maskz_compress_ps(keep, v));
  return _mm_popcnt_u32(keep);
}
ONEBIT_AVX512 inline void append(uint32_t* p, __mmask16 keep, __m512i v) {
  _mm512_storeu_si512(p, _mm512_maskz_compress_epi32(keep, v));
}
ONEBIT_AVX512 inline void append(int32_t* p, __mmask16 keep, __m512i v) {
  _mm512_storeu_si512(p, _mm512_maskz_compress_epi32(keep, v));
}

// bracket(): the count of distances below lo, and those in [lo, hi] copied to cand, in order.
ONEBIT_AVX512 int64_t bracket_512(const float* v, int64_t m, float mean, float lo, float hi, float* cand,
                                  int64_t* n_cand) {
  const __m512 vmean = _mm512_set1_ps(mean), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  int64_t below = 0, c = 0;
  for (int64_t k = 0; k < m; k += 16) {
    const __mmask16 live = tail_mask(m - k);
    const __m512 d = _mm512_abs_ps(_mm512_sub_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(live, v + k)), vmean));
    below += _mm_popcnt_u32(_mm512_mask_cmp_ps_mask(live, d, vlo, _CMP_LT_OQ));
    const __mmask16 in = _mm512_mask_cmp_ps_mask(_mm512_mask_cmp_ps_mask(live, d, vlo, _CMP_GE_OQ), d, vhi, _CMP_LE_OQ);
    c += append(cand + c, in, d);
  }
  *n_cand = c;
  return below;
}

// binarize_row's level 1: where bm >= 2, (x - mu*sign(x), bm) appended to (res, lvl); returns how many.
ONEBIT_AVX512 int64_t level_one_512(const float* x, const int8_t* bm, int64_t n, float mu, float* res,
                                    int32_t* lvl) {
  const __m512 pos = _mm512_set1_ps(mu * 1.0f), neg = _mm512_set1_ps(mu * -1.0f), zero = _mm512_setzero_ps();
  const __m128i one = _mm_set1_epi8(1);
  int64_t w = 0;
  for (int64_t k = 0; k < n; k += 16) {
    const __mmask16 live = tail_mask(n - k);
    const __m128i code = _mm_maskz_loadu_epi8(live, bm + k);
    const __mmask16 deeper = _mm_mask_cmpgt_epi8_mask(live, code, one);
    if (!deeper) continue;
    const __m512 v = _mm512_maskz_loadu_ps(live, x + k);
    const __m512 a = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), pos, neg);
    append(lvl + w, deeper, _mm512_maskz_cvtepi8_epi32(0xFFFF, code));
    w += append(res + w, deeper, _mm512_sub_ps(v, a));
  }
  return w;
}

// binarize_row's level j >= 2 over the w carried elements: res -= mu*sign(res) where lvl > level, those
// kept (compacted); returns how many.
ONEBIT_AVX512 int64_t level_up_512(int64_t w, int level, float mu, float* res, int32_t* lvl) {
  const __m512 pos = _mm512_set1_ps(mu * 1.0f), neg = _mm512_set1_ps(mu * -1.0f), zero = _mm512_setzero_ps();
  const __m512i vlevel = _mm512_set1_epi32(level);
  int64_t next = 0;
  for (int64_t k = 0; k < w; k += 16) {
    const __mmask16 live = tail_mask(w - k);
    const __m512i code = _mm512_maskz_loadu_epi32(live, lvl + k);
    const __mmask16 go = _mm512_mask_cmpgt_epi32_mask(live, code, vlevel);
    if (!go) continue;
    const __m512 r = _mm512_maskz_loadu_ps(live, res + k);
    const __m512 step = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(r, zero, _CMP_LT_OQ), pos, neg);
    append(lvl + next, go, code);
    next += append(res + next, go, _mm512_sub_ps(r, step));
  }
  return next;
}

// The approximation of n elements under their bit map and the levels' scales mu[0..top): per element
// a = mu_1*sign(x), R = x - a, then for each level j <= bm: step = mu_j*sign(R), a += step, R -= step
// (the torch path's operations in its order). Returns max |x| (the clip STE's question: any |x| > 1?).
ONEBIT_AVX512 float approx_span_512(const float* x, const int8_t* bm, int64_t n, const float* mu, int top,
                                    float* approx) {
  __m512 pos[kHbnnMaxLevels], neg[kHbnnMaxLevels];
  for (int j = 0; j < top; ++j) {
    pos[j] = _mm512_set1_ps(mu[j] * 1.0f);
    neg[j] = _mm512_set1_ps(mu[j] * -1.0f);
  }
  const __m512 zero = _mm512_setzero_ps();
  __m512 most = zero;
  for (int64_t k = 0; k < n; k += 16) {
    const __mmask16 live = tail_mask(n - k);
    const __m512 v = _mm512_maskz_loadu_ps(live, x + k);
    most = _mm512_mask_max_ps(most, live, most, _mm512_abs_ps(v));  // (masked: no undefined lanes)
    __m512 a = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), pos[0], neg[0]);
    if (top > 1) {
      const __m512i code = _mm512_maskz_cvtepi8_epi32(0xFFFF, _mm_maskz_loadu_epi8(live, bm + k));
      __m512 r = _mm512_sub_ps(v, a);
      for (int j = 1; j < top; ++j) {
        const __mmask16 active = _mm512_mask_cmpgt_epi32_mask(live, code, _mm512_set1_epi32(j));
        if (!active) break;
        const __m512 step = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(r, zero, _CMP_LT_OQ), pos[j], neg[j]);
        a = _mm512_mask_add_ps(a, active, a, step);
        r = _mm512_sub_ps(r, step);
      }
    }
    _mm512_mask_storeu_ps(approx + k, live, a);
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, most);
  return *std::max_element(lanes, lanes + 16);
}
#endif

double abs_sum_any(const float* v, int64_t m) {
#ifdef ONEBIT_HBNN_X86
  if (has_avx512()) return abs_sum_512(v, m);
#endif
  return abs_sum(v, m);
}

// --- one row over several threads (vector passes only): contiguous parts, each compacting into its own
// stretch of the output (parts start at multiples of 64 elements, so a part's whole-vector stores stay in
// it), then the stretches moved together in order: the same arrays as one thread writes. ---
constexpr int64_t kBlock = int64_t{1} << 15;        // sums: per block of this many, then in block order
constexpr int64_t kParallelMin = int64_t{1} << 17;  // a pass over fewer elements runs on one thread
constexpr int kMaxParts = 16;

template <typename Fn>
void in_parts(int parts, int64_t m, const Fn& fn) {
  if (parts <= 1) {
    fn(0, int64_t{0}, m);
    return;
  }
  const int64_t step = ((m + parts - 1) / parts + 63) / 64 * 64;
  parallel_for(parts, parts, [&](int64_t p) {
    const int64_t begin = std::min(m, p * step);
    fn(static_cast<int>(p), begin, std::min(m, begin + step));
  });
}

// sum |v| by blocks of kBlock (abs_sum of each, added in block order): the same on any number of threads.
double abs_sum_blocks(const float* v, int64_t m, int parts) {
  const int64_t blocks = (m + kBlock - 1) / kBlock;
  auto block = [&](int64_t b) { return abs_sum_any(v + b * kBlock, std::min(kBlock, m - b * kBlock)); };
  double total = 0.0;
  if (parts <= 1 || blocks < 2) {
    for (int64_t b = 0; b < blocks; ++b) total += block(b);
    return total;
  }
  std::vector<double> sums(blocks);
  parallel_for(parts, blocks, [&](int64_t b) { sums[b] = block(b); });
  for (const double sum : sums) total += sum;
  return total;
}

// Moves the parts' stretches [begin[p], begin[p] + got[p]) of each array together; returns the total.
template <typename... Arrays>
int64_t gather(int parts, const int64_t* begin, const int64_t* got, Arrays*... arrays) {
  int64_t total = 0;
  for (int p = 0; p < parts; ++p) {
    if (begin[p] != total) (std::memmove(arrays + total, arrays + begin[p], got[p] * sizeof(*arrays)), ...);
    total += got[p];
  }
  return total;
}

int64_t bracket(const float* v, int64_t m, float mean, float lo, float hi, float* cand, int64_t* n_cand) {
#ifdef ONEBIT_HBNN_X86
  if (has_avx512()) return bracket_512(v, m, mean, lo, hi, cand, n_cand);
#endif
  int64_t below = 0, c = 0;
  for (int64_t k = 0; k < m; ++k) {
    const float d = distance(v[k], mean);
    below += d < lo;
    cand[c] = d;
    c += (d >= lo) & (d <= hi);
  }
  *n_cand = c;
  return below;
}

int64_t level_one(const float* x, const int8_t* bm, int64_t n, float mu, float* res, int32_t* lvl) {
#ifdef ONEBIT_HBNN_X86
  if (has_avx512()) return level_one_512(x, bm, n, mu, res, lvl);
#endif
  int64_t w = 0;
  for (int64_t i = 0; i < n; ++i) {
    res[w] = x[i] - mu * sign_of(x[i]);
    lvl[w] = bm[i];
    w += bm[i] >= 2;
  }
  return w;
}

int64_t level_up(int64_t w, int level, float mu, float* res, int32_t* lvl) {
#ifdef ONEBIT_HBNN_X86
  if (has_avx512()) return level_up_512(w, level, mu, res, lvl);
#endif
  int64_t next = 0;
  for (int64_t k = 0; k < w; ++k) {
    const int32_t code = lvl[k];
    lvl[next] = code;
    res[next] = res[k] - mu * sign_of(res[k]);
    next += code > level;
  }
  return next;
}

float approx_span(const float* x, const int8_t* bm, int64_t n, const float* mu, int top, float* approx) {
#ifdef ONEBIT_HBNN_X86
  if (has_avx512()) return approx_span_512(x, bm, n, mu, top, approx);
#endif
  float most = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    most = std::max(most, std::fabs(v));
    float a = mu[0] * sign_of(v), r = v - a;
    for (int j = 1; j < top && bm[i] > j; ++j) {
      const float step = mu[j] * sign_of(r);
      a = a + step;
      r = r - step;
    }
    approx[i] = a;
  }
  return most;
}

// The count-th smallest distance | |v[k]| - mean | of the m values (1 <= count < m): the distances of an
// evenly spaced sample bracket it, one pass counts those below the bracket and keeps those inside, and
// kth_smallest finds it among them (when the bracket misses it, which the margin makes rare, among all).
Threshold select(const float* v, int64_t m, float mean, int64_t count, Scratch& s, int parts) {
  float* dist = s.dist.data();
  constexpr int64_t kSample = 1024;
  if (m > 8 * kSample) {
    float sample[kSample];
    for (int64_t j = 0; j < kSample; ++j) sample[j] = distance(v[j * m / kSample], mean);
    const double p = static_cast<double>(count) / m, rank = p * kSample;
    const double margin = 4.0 * std::sqrt(kSample * p * (1 - p)) + 2.0;
    const int64_t lo_rank = static_cast<int64_t>(std::floor(rank - margin));
    const int64_t hi_rank = static_cast<int64_t>(std::ceil(rank + margin));
    if (lo_rank >= 0) std::nth_element(sample, sample + lo_rank, sample + kSample);
    if (hi_rank < kSample)
      std::nth_element(sample + std::max<int64_t>(lo_rank + 1, 0), sample + hi_rank, sample + kSample);
    const float lo = lo_rank < 0 ? -1.0f : sample[lo_rank];
    const float hi = hi_rank >= kSample ? INFINITY : sample[hi_rank];
    int64_t n_cand = 0, below = 0;
    if (parts <= 1) {
      below = bracket(v, m, mean, lo, hi, dist, &n_cand);
    } else {
      int64_t begin[kMaxParts], got[kMaxParts], under[kMaxParts];
      in_parts(parts, m, [&](int p, int64_t b, int64_t e) {
        begin[p] = b;
        under[p] = bracket(v + b, e - b, mean, lo, hi, dist + b, &got[p]);
      });
      for (int p = 0; p < parts; ++p) below += under[p];
      n_cand = gather(parts, begin, got, dist);
    }
    if (below < count && count <= below + n_cand) {
      const uint32_t base = lo < 0 ? 0u : bits_of(lo), span = bits_of(hi) - base;
      int shift = 0;
      while ((span >> shift) >= static_cast<uint32_t>(kBins)) ++shift;
      return kth_smallest(dist, n_cand, count - below, s, base, shift);
    }
  }
  for (int64_t k = 0; k < m; ++k) dist[k] = distance(v[k], mean);
  return kth_smallest(dist, m, count, s);
}

// The scales of one row's residual binarization under its bit map (level 1 over every element, level
// j >= 2 over bitmap >= j; the approximation is approx_row's); x_abs_sum = sum |x| (abs_sum). Returns the
// row's top level (0: a level above the maximum).
int binarize_row(const float* x, int64_t n, const int8_t* bm, double x_abs_sum, float* scales,
                 int64_t scale_stride, Scratch& s) {
  const float mu1 = mean_of(x_abs_sum, n);
  scales[0] = mu1;
  float* res = s.val.data();
  int64_t w = level_one(x, bm, n, mu1, res, s.lvl.data());
  int top = 1;
  for (int level = 2; w > 0; ++level) {
    if (level > kHbnnMaxLevels) return 0;
    const float mu = mean_of(abs_sum_blocks(res, w, 1), w);
    scales[(level - 1) * scale_stride] = mu;
    top = level;
    w = level_up(w, level, mu, res, s.lvl.data());
  }
  return top;
}

// The row's approximation from its bit map and its top scales (approx_span, split over `parts` threads);
// returns max |x|.
float approx_row(const float* x, const int8_t* bm, int64_t n, const float* scales, int64_t scale_stride, int top,
                 float* approx, int parts) {
  float mu[kHbnnMaxLevels];
  for (int j = 0; j < top; ++j) mu[j] = scales[j * scale_stride];
  float most[kMaxParts] = {};
  in_parts(parts, n, [&](int p, int64_t b, int64_t e) { most[p] = approx_span(x + b, bm + b, e - b, mu, top, approx + b); });
  return *std::max_element(most, most + std::max(parts, 1));
}

// Which of a level's elements stop: none, all, or those of distance | |src| - center | below the
// threshold and the first ties by index up to its room.
struct Rule {
  enum Kind { kNone, kAll, kThreshold } kind;
  float center;
  Threshold t;
  bool vector_ok() const { return kind != kThreshold || t.ties == t.room; }  // stop <=> distance <= t
};

// The arrays carried from level to level, one entry per element still in play, in index order.
struct Carried {
  uint32_t* idx;
  float* mag;  // |x| (Algorithm 1 orders by it)
  float* res;  // the residual R_j
};

#ifdef ONEBIT_HBNN_X86
ONEBIT_AVX512 inline __mmask16 goes_on(const Rule& rule, __mmask16 live, __m512 src) {
  if (rule.kind == Rule::kNone) return live;
  if (rule.kind == Rule::kAll) return 0;
  const __m512 d = _mm512_abs_ps(_mm512_sub_ps(_mm512_abs_ps(src), _mm512_set1_ps(rule.center)));
  return _mm512_mask_cmp_ps_mask(live, d, _mm512_set1_ps(rule.t.value), _CMP_GT_OQ);
}

// Level 1 over the whole row: bm = 1 where the element stops, 2 where it goes on (then carried: idx, |x|,
// x - mu*sign(x)). Returns how many go on. (The rule's fields and the arrays in locals: the compiler would
// reload them after every store.)
ONEBIT_AVX512 int64_t first_level_512(const float* x, int64_t n, int64_t offset, float mu, const Rule& rule,
                                      int8_t* bm, const Carried& out) {
  const __m512 pos = _mm512_set1_ps(mu * 1.0f), neg = _mm512_set1_ps(mu * -1.0f), zero = _mm512_setzero_ps();
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m128i one = _mm_set1_epi8(1), two = _mm_set1_epi8(2);
  const Rule local = rule;
  uint32_t* const idx = out.idx;
  float* const mag = out.mag;
  float* const res = out.res;
  int64_t w = 0;
  for (int64_t k = 0; k < n; k += 16) {
    const __mmask16 live = tail_mask(n - k);
    const __m512 v = _mm512_maskz_loadu_ps(live, x + k);
    const __mmask16 go = goes_on(local, live, v);
    _mm_mask_storeu_epi8(bm + k, live, _mm_mask_blend_epi8(go, one, two));
    if (!go) continue;
    const __m512 a = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), pos, neg);
    append(idx + w, go, _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(k + offset)), iota));
    append(mag + w, go, _mm512_abs_ps(v));
    w += append(res + w, go, _mm512_sub_ps(v, a));
  }
  return w;
}

// Level j >= 2 over the w carried elements: those that go on are kept (compacted) with res -= mu*sign(res).
// src: the distances' source, mag (paper) or res (residual rule).
ONEBIT_AVX512 int64_t next_level_512(int64_t w, float mu, const Rule& rule, bool paper, const Carried& c) {
  const __m512 pos = _mm512_set1_ps(mu * 1.0f), neg = _mm512_set1_ps(mu * -1.0f), zero = _mm512_setzero_ps();
  const Rule local = rule;
  uint32_t* const idx = c.idx;
  float* const mag = c.mag;
  float* const res = c.res;
  int64_t next = 0;
  for (int64_t k = 0; k < w; k += 16) {
    const __mmask16 live = tail_mask(w - k);
    const __m512 r = _mm512_maskz_loadu_ps(live, res + k);
    const __m512 m = paper ? _mm512_maskz_loadu_ps(live, mag + k) : _mm512_setzero_ps();
    const __mmask16 go = goes_on(local, live, paper ? m : r);
    if (!go) continue;
    const __m512 step = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(r, zero, _CMP_LT_OQ), pos, neg);
    append(idx + next, go, _mm512_maskz_loadu_epi32(live, idx + k));
    if (paper) append(mag + next, go, m);  // the residual rule orders by res
    next += append(res + next, go, _mm512_sub_ps(r, step));
  }
  return next;
}
#endif

// The scalar levels: the same values, and the general tie rule.
struct Decider {
  const Rule& rule;
  int64_t taken = 0;
  bool stops(float src) {
    if (rule.kind != Rule::kThreshold) return rule.kind == Rule::kAll;
    const float d = distance(src, rule.center);
    const bool tie = d == rule.t.value;
    const bool stop = (d < rule.t.value) | (tie & (taken < rule.t.room));
    taken += tie & stop;
    return stop;
  }
};

int64_t first_level(const float* x, int64_t n, float mu, const Rule& rule, int8_t* bm, const Carried& out) {
#ifdef ONEBIT_HBNN_X86
  if (has_avx512() && rule.vector_ok()) return first_level_512(x, n, 0, mu, rule, bm, out);
#endif
  Decider decider{rule};
  int64_t w = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool stop = decider.stops(x[i]);
    bm[i] = stop ? 1 : 2;
    out.idx[w] = static_cast<uint32_t>(i);
    out.mag[w] = std::fabs(x[i]);
    out.res[w] = x[i] - mu * sign_of(x[i]);
    w += !stop;
  }
  return w;
}

int64_t next_level(int64_t w, float mu, const Rule& rule, bool paper, const Carried& c) {
#ifdef ONEBIT_HBNN_X86
  if (has_avx512() && rule.vector_ok()) return next_level_512(w, mu, rule, paper, c);
#endif
  Decider decider{rule};
  int64_t next = 0;
  for (int64_t k = 0; k < w; ++k) {
    const float r = c.res[k], m = c.mag[k];
    const bool stop = decider.stops(paper ? m : r);
    c.idx[next] = c.idx[k];
    c.mag[next] = m;
    c.res[next] = r - mu * sign_of(r);
    next += !stop;
  }
  return next;
}

// kHbnnPaper and kHbnnResidual: the map and the binarization in one sweep of the levels. At level j
// (w elements in play, all active at j): mu_j = mean |R_j|; the stopping rule from the level's count
// (Algorithm 1: distances of |x| to their mean over the w; the residual rule: of |R_j| to mu_j); one pass
// carries the rest with R_{j+1} = R_j - mu_j*sign(R_j). Writes the map and the scales; returns the top level.
int select_row(bool paper, const float* x, int64_t n, const int64_t* counts, int levels, int8_t* bm,
               float* scales, int64_t scale_stride, Scratch& s, int threads) {
  auto parts_for = [&](int64_t m) { return m >= kParallelMin ? std::min(threads, kMaxParts) : 1; };
  const double x_abs_sum = abs_sum_blocks(x, n, parts_for(n));
  if (!std::isfinite(x_abs_sum)) return 0;
  const Carried c{s.idx.data(), s.mag.data(), s.val.data()};
  int64_t w = n;
  int top = 0;
  for (int level = 1; level <= levels && w > 0; ++level) {
    const int parts = parts_for(w);
    const float mu = level == 1 ? mean_of(x_abs_sum, n) : mean_of(abs_sum_blocks(c.res, w, parts), w);
    scales[(level - 1) * scale_stride] = mu;
    top = level;
    const int64_t count = std::min(counts[level - 1], w);
    Rule rule{count == 0 ? Rule::kNone : count == w ? Rule::kAll : Rule::kThreshold, mu, {0.0f, 0, 0}};
    if (rule.kind == Rule::kThreshold) {
      const float* src = level == 1 ? x : paper ? c.mag : c.res;
      if (paper && level > 1) rule.center = mean_of(abs_sum_blocks(c.mag, w, parts), w);
      rule.t = select(src, w, rule.center, count, s, parts);
    }
    int64_t next = 0;
    if (level > 1 && rule.kind == Rule::kAll) {
      // everyone stops at this level (the last one, usually): their bm already says so
#ifdef ONEBIT_HBNN_X86
    } else if (parts > 1 && has_avx512() && rule.vector_ok()) {
      int64_t begin[kMaxParts], got[kMaxParts];
      in_parts(parts, w, [&](int p, int64_t b, int64_t e) {
        const Carried part{c.idx + b, c.mag + b, c.res + b};
        begin[p] = b;
        got[p] = level == 1 ? first_level_512(x + b, e - b, b, mu, rule, bm + b, part)
                            : next_level_512(e - b, mu, rule, paper, part);
      });
      next = gather(parts, begin, got, c.idx, c.mag, c.res);
#endif
    } else {
      next = level == 1 ? first_level(x, n, mu, rule, bm, c) : next_level(w, mu, rule, paper, c);
    }
    for (int64_t k = 0; level > 1 && k < next; ++k) bm[c.idx[k]] = static_cast<int8_t>(level + 1);
    w = next;
  }
  // (not reached: the counts sum to n, so the last level stops everyone)
  for (int64_t k = 0; k < w; ++k) bm[c.idx[k]] = static_cast<int8_t>(levels);
  return top;
}

}  // namespace

bool hbnn_scalar_only(bool on) {
  g_scalar_only.store(on);
#ifdef ONEBIT_HBNN_X86
  return !has_avx512();
#else
  return true;
#endif
}

int hbnn_binarize(int mode, const float* x, int64_t rows, int64_t n, const int64_t* counts, int levels,
                  int8_t* bitmap, float* approx, float* scales, float* max_abs, int num_threads) {
  std::atomic<int> top{1};
  std::atomic<bool> failed{false};
  const int row_threads = rows == 1 ? num_threads : 1;  // one row: its passes split; several: rows split
  auto row = [&](int64_t r) {
    thread_local Scratch s;
    s.reserve(n);
    const float* xr = x + r * n;
    int8_t* bm = bitmap + r * n;
    const int parts = n >= kParallelMin ? std::min(row_threads, kMaxParts) : 1;
    int got = 0;
    if (mode == kHbnnPaper || mode == kHbnnResidual) {
      got = select_row(mode == kHbnnPaper, xr, n, counts, levels, bm, scales + r, rows, s, row_threads);
    } else {
      const double sum = abs_sum_blocks(xr, n, parts);
      got = std::isfinite(sum) ? binarize_row(xr, n, bm, sum, scales + r, rows, s) : 0;
    }
    if (got == 0) {
      failed.store(true, std::memory_order_relaxed);
      return;
    }
    const float most = approx_row(xr, bm, n, scales + r, rows, got, approx + r * n, parts);
    if (max_abs) max_abs[r] = most;
    int seen = top.load(std::memory_order_relaxed);
    while (got > seen && !top.compare_exchange_weak(seen, got, std::memory_order_relaxed)) {
    }
  };
  const int threads = static_cast<int>(std::min<int64_t>(num_threads, rows));
  if (threads <= 1) {
    for (int64_t r = 0; r < rows; ++r) row(r);
  } else {
    parallel_for(threads, rows, row);
  }
  return failed.load() ? 0 : top.load();
}

}  // namespace onebit
