// HBNN's weight quantizer, row by row (see train_hbnn.h).
//
// A row's work: one pass for sum |x|; per selecting level one pass over the elements still in play for
// their distances (and their range) and a histogram of the distances' bit patterns over that range, of
// about as many bins as elements (non-negative floats order like their bit patterns), one pass collecting
// the threshold's bin (nth_element within it gives the exact order statistic, like np.partition) and one
// pass that stops the chosen ones and compacts the rest (index, |x|, residual), in index order, for the
// next level (a level where everyone stops needs no pass but its sum); then one pass over the row writes
// the approximation from x, the bit map and the scales (and takes max |x|): no level writes
// approximations through scattered indices or carries them along. The passes run AVX-512 or AVX2 code
// where the CPU has it (picked at run time), else scalar loops: the same results, bit for bit.
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
#define ONEBIT_AVX2 __attribute__((target("avx2,popcnt")))  // (no fma: products and sums round apart)
#endif

namespace onebit {
namespace {

constexpr int kBins = 1 << 12;  // the most bins of a distance histogram (of a range of their bit patterns)

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
  std::vector<uint32_t> bin;    // the bit patterns of the threshold's bin (n + 16 entries, a count of them used)
  std::vector<uint32_t> hist = std::vector<uint32_t>(2 * kBins);

  void reserve(int64_t n) {
    const int64_t size = n + 16;  // the vector passes store whole vectors: 16 lanes of slack
    if (static_cast<int64_t>(idx.size()) < size) {
      idx.resize(size);
      val.resize(size);
      dist.resize(size);
      mag.resize(size);
      lvl.resize(size);
      bin.resize(size);
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

// The bit patterns of the m distances d that lie in [first, last] (first <= last < 2^31), in order, to out.
int64_t collect_bin(const float* d, int64_t m, uint32_t first, uint32_t last, uint32_t* out);

// The k-th smallest (1-based, 1 <= k <= m) of the m distances d (>= 0, not NaN, bit patterns in
// [base, base + bins * 2^shift), bins <= kBins) and how many of those equal to it fall within the k smallest:
// a histogram of (bits - base) >> shift (two sub-histograms: runs of one bin do not wait on each other's
// increments), then nth_element within the bin that holds the k-th.
Threshold kth_smallest(const float* d, int64_t m, int64_t k, Scratch& s, uint32_t base, int shift,
                       int bins = kBins) {
  uint32_t* h = s.hist.data();
  std::fill(h, h + 2 * bins, 0u);
  int64_t i = 0;
  for (; i + 2 <= m; i += 2) {
    ++h[(bits_of(d[i]) - base) >> shift];
    ++h[bins + ((bits_of(d[i + 1]) - base) >> shift)];
  }
  if (i < m) ++h[(bits_of(d[i]) - base) >> shift];
  int64_t before = 0;
  uint32_t bin = 0;
  for (;; ++bin) {
    const int64_t in_bin = static_cast<int64_t>(h[bin]) + h[bins + bin];
    if (before + in_bin >= k) break;
    before += in_bin;
  }
  // the bin's patterns: (bits - base) >> shift == bin, i.e. bits in [first, last] (all below 2^31)
  const uint64_t first = base + (uint64_t{bin} << shift);
  const uint64_t last = std::min<uint64_t>(first + (uint64_t{1} << shift) - 1, INT32_MAX);
  uint32_t* const kept = s.bin.data();
  const int64_t in_bin = collect_bin(d, m, static_cast<uint32_t>(first), static_cast<uint32_t>(last), kept);
  uint32_t* const nth = kept + (k - before - 1);
  std::nth_element(kept, nth, kept + in_bin);
  const uint32_t t = *nth;
  int64_t below = before, ties = 0;
  for (int64_t j = 0; j < in_bin; ++j) {
    below += kept[j] < t;
    ties += kept[j] == t;
  }
  return {float_of(t), k - below, ties};
}

inline float distance(float v, float mean) { return std::fabs(std::fabs(v) - mean); }

// --- the scalar loops (the reference, and the vector passes' tails) ---

// bracket(): the count of distances below lo, and those in [lo, hi] copied to cand, in order.
int64_t bracket_scalar(const float* v, int64_t m, float mean, float lo, float hi, float* cand, int64_t* n_cand) {
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

int64_t collect_bin_scalar(const float* d, int64_t m, uint32_t first, uint32_t last, uint32_t* out) {
  int64_t c = 0;
  for (int64_t i = 0; i < m; ++i) {
    const uint32_t b = bits_of(d[i]);
    out[c] = b;
    c += (b >= first) & (b <= last);
  }
  return c;
}

// binarize_row's level 1: where bm >= 2, (x - mu*sign(x), bm) appended to (res, lvl); returns how many.
int64_t level_one_scalar(const float* x, const int8_t* bm, int64_t n, float mu, float* res, int32_t* lvl) {
  int64_t w = 0;
  for (int64_t i = 0; i < n; ++i) {
    res[w] = x[i] - mu * sign_of(x[i]);
    lvl[w] = bm[i];
    w += bm[i] >= 2;
  }
  return w;
}

// binarize_row's level j >= 2 over the carried elements [from, w), `next` of them already kept:
// res -= mu*sign(res) where lvl > level, those kept (compacted); returns how many in all.
int64_t level_up_scalar(int64_t from, int64_t w, int level, float mu, float* res, int32_t* lvl, int64_t next) {
  for (int64_t k = from; k < w; ++k) {
    const int32_t code = lvl[k];
    lvl[next] = code;
    res[next] = res[k] - mu * sign_of(res[k]);
    next += code > level;
  }
  return next;
}

// The approximation of n elements under their bit map and the levels' scales mu[0..top): per element
// a = mu_1*sign(x), R = x - a, then for each level j <= bm: step = mu_j*sign(R), a += step, R -= step
// (the torch path's operations in its order). Returns max |x| (the clip STE's question: any |x| > 1?).
float approx_span_scalar(const float* x, const int8_t* bm, int64_t n, const float* mu, int top, float* approx) {
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

// --- the vectorized passes (AVX-512 or AVX2, the widest the CPU has; the scalar loops give the same
// values: every vector lane does the scalar loop's float operations, and compaction keeps index order) ---
enum VectorIsa : int { kScalarLoops = 0, kAvx2 = 1, kAvx512 = 2 };
std::atomic<int> g_widest{kAvx512};  // hbnn_vector_isa(): the tests' cap on the passes' ISA

int cpu_isa() {
#ifdef ONEBIT_HBNN_X86
  static const int isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
      return kAvx512;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") ? kAvx2 : kScalarLoops;
  }();
  return isa;
#else
  return kScalarLoops;
#endif
}

inline int vector_isa() { return std::min(cpu_isa(), g_widest.load(std::memory_order_relaxed)); }

#ifdef ONEBIT_HBNN_X86

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

// AVX2 (eight lanes): whole vectors, then the scalar loop over the last n mod 8 elements. Compaction: the
// kept lanes' indices (from the 8-bit movemask, 4 bits each, lowest lane first) permute the vector, whose
// whole is stored at the output's end and the end advanced by popcount (the buffers have slack for it).
constexpr uint32_t packed_lanes(unsigned keep) {
  uint32_t packed = 0;
  for (unsigned lane = 0, at = 0; lane < 8; ++lane)
    if ((keep >> lane) & 1u) packed |= lane << (4 * at++);
  return packed;
}

// Per 8-bit mask: the compaction's packed lanes, and first_level's bit map bytes (1 stops, 2 goes on).
struct Avx2Tables {
  uint32_t lanes[256];
  uint64_t codes[256];
  constexpr Avx2Tables() : lanes(), codes() {
    for (unsigned keep = 0; keep < 256; ++keep) {
      lanes[keep] = packed_lanes(keep);
      for (unsigned lane = 0; lane < 8; ++lane) codes[keep] |= uint64_t{1u + ((keep >> lane) & 1u)} << (8 * lane);
    }
  }
};
constexpr Avx2Tables kAvx2Tables{};

ONEBIT_AVX2 inline __m256i kept_lanes(unsigned keep) {
  const __m256i packed = _mm256_set1_epi32(static_cast<int>(kAvx2Tables.lanes[keep]));
  return _mm256_and_si256(_mm256_srlv_epi32(packed, _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)),
                          _mm256_set1_epi32(7));
}
ONEBIT_AVX2 inline int append8(float* p, unsigned keep, __m256i lanes, __m256 v) {
  _mm256_storeu_ps(p, _mm256_permutevar8x32_ps(v, lanes));
  return _mm_popcnt_u32(keep);
}
template <typename Int>
ONEBIT_AVX2 inline void append8(Int* p, __m256i lanes, __m256i v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_permutevar8x32_epi32(v, lanes));
}

ONEBIT_AVX2 inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
ONEBIT_AVX2 inline unsigned mask8(__m256 lanes) { return static_cast<unsigned>(_mm256_movemask_ps(lanes)); }
ONEBIT_AVX2 inline unsigned mask8(__m256i lanes) { return mask8(_mm256_castsi256_ps(lanes)); }
// mu*sign(v) per lane: mu*-1 where v < 0, else mu*1
ONEBIT_AVX2 inline __m256 signed8(__m256 v, __m256 pos, __m256 neg) {
  return _mm256_blendv_ps(pos, neg, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
}
ONEBIT_AVX2 inline __m256i codes8(const int8_t* bm) {
  return _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(bm)));
}

// abs_sum's 32 lanes in eight vectors of four: lane l sums the elements k = l mod 32, in order; the last
// m mod 32 elements by masked loads (the other lanes add +0.0: a sum of |x| is never -0.0, so no change),
// then combine()'s additions in its order, in registers.
ONEBIT_AVX2 double abs_sum_avx2(const float* v, int64_t m) {
  const __m256d sign = _mm256_set1_pd(-0.0);
  __m256d acc[8];
  for (__m256d& a : acc) a = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + kLanes <= m; i += kLanes)
    for (int q = 0; q < 8; ++q)
      acc[q] = _mm256_add_pd(acc[q], _mm256_andnot_pd(sign, _mm256_cvtps_pd(_mm_loadu_ps(v + i + 4 * q))));
  const __m128i lane = _mm_setr_epi32(0, 1, 2, 3);
  for (int q = 0; i + 4 * q < m; ++q) {
    const __m128i live = _mm_cmpgt_epi32(_mm_set1_epi32(static_cast<int>(m - i - 4 * q)), lane);
    const __m256d tail = _mm256_cvtps_pd(_mm_maskload_ps(v + i + 4 * q, live));
    acc[q] = _mm256_add_pd(acc[q], _mm256_andnot_pd(sign, tail));
  }
  // acc[q] holds lanes 4q..4q+3: b[0..3] = (a[l] + a[l+8]) + (a[l+16] + a[l+24]) from acc 0, 2, 4, 6,
  // b[4..7] from acc 1, 3, 5, 7; then ((b0 + b1) + (b2 + b3)) + ((b4 + b5) + (b6 + b7))
  const __m256d low = _mm256_add_pd(_mm256_add_pd(acc[0], acc[2]), _mm256_add_pd(acc[4], acc[6]));
  const __m256d high = _mm256_add_pd(_mm256_add_pd(acc[1], acc[3]), _mm256_add_pd(acc[5], acc[7]));
  const __m256d pairs = _mm256_hadd_pd(low, high);  // b0+b1, b4+b5, b2+b3, b6+b7
  const __m128d halves = _mm_add_pd(_mm256_castpd256_pd128(pairs), _mm256_extractf128_pd(pairs, 1));
  return _mm_cvtsd_f64(halves) + _mm_cvtsd_f64(_mm_unpackhi_pd(halves, halves));
}

ONEBIT_AVX2 int64_t collect_bin_avx2(const float* d, int64_t m, uint32_t first, uint32_t last, uint32_t* out) {
  const __m256i below = _mm256_set1_epi32(static_cast<int>(first) - 1), above = _mm256_set1_epi32(static_cast<int>(last));
  int64_t c = 0, i = 0;
  for (; i + 8 <= m; i += 8) {
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(d + i));
    const unsigned in = mask8(_mm256_andnot_si256(_mm256_cmpgt_epi32(b, above), _mm256_cmpgt_epi32(b, below)));
    if (!in) continue;
    append8(out + c, kept_lanes(in), b);
    c += _mm_popcnt_u32(in);
  }
  return c + collect_bin_scalar(d + i, m - i, first, last, out + c);
}

ONEBIT_AVX2 int64_t bracket_avx2(const float* v, int64_t m, float mean, float lo, float hi, float* cand,
                                 int64_t* n_cand) {
  const __m256 vmean = _mm256_set1_ps(mean), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  int64_t below = 0, c = 0, k = 0;
  for (; k + 8 <= m; k += 8) {
    const __m256 d = abs8(_mm256_sub_ps(abs8(_mm256_loadu_ps(v + k)), vmean));
    below += _mm_popcnt_u32(mask8(_mm256_cmp_ps(d, vlo, _CMP_LT_OQ)));
    const unsigned in = mask8(_mm256_and_ps(_mm256_cmp_ps(d, vlo, _CMP_GE_OQ), _mm256_cmp_ps(d, vhi, _CMP_LE_OQ)));
    c += append8(cand + c, in, kept_lanes(in), d);
  }
  int64_t tail = 0;
  below += bracket_scalar(v + k, m - k, mean, lo, hi, cand + c, &tail);
  *n_cand = c + tail;
  return below;
}

ONEBIT_AVX2 int64_t level_one_avx2(const float* x, const int8_t* bm, int64_t n, float mu, float* res,
                                   int32_t* lvl) {
  const __m256 pos = _mm256_set1_ps(mu * 1.0f), neg = _mm256_set1_ps(mu * -1.0f);
  const __m256i one = _mm256_set1_epi32(1);
  int64_t w = 0, k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256i code = codes8(bm + k);
    const unsigned deeper = mask8(_mm256_cmpgt_epi32(code, one));
    if (!deeper) continue;
    const __m256 v = _mm256_loadu_ps(x + k);
    const __m256i lanes = kept_lanes(deeper);
    append8(lvl + w, lanes, code);
    w += append8(res + w, deeper, lanes, _mm256_sub_ps(v, signed8(v, pos, neg)));
  }
  return w + level_one_scalar(x + k, bm + k, n - k, mu, res + w, lvl + w);
}

// (in place: the kept lanes go to next <= k, after the block at k is loaded)
ONEBIT_AVX2 int64_t level_up_avx2(int64_t w, int level, float mu, float* res, int32_t* lvl) {
  const __m256 pos = _mm256_set1_ps(mu * 1.0f), neg = _mm256_set1_ps(mu * -1.0f);
  const __m256i vlevel = _mm256_set1_epi32(level);
  int64_t next = 0, k = 0;
  for (; k + 8 <= w; k += 8) {
    const __m256i code = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lvl + k));
    const unsigned go = mask8(_mm256_cmpgt_epi32(code, vlevel));
    if (!go) continue;
    const __m256 r = _mm256_loadu_ps(res + k);
    const __m256i lanes = kept_lanes(go);
    append8(lvl + next, lanes, code);
    next += append8(res + next, go, lanes, _mm256_sub_ps(r, signed8(r, pos, neg)));
  }
  return level_up_scalar(k, w, level, mu, res, lvl, next);
}

ONEBIT_AVX2 float approx_span_avx2(const float* x, const int8_t* bm, int64_t n, const float* mu, int top,
                                   float* approx) {
  __m256 pos[kHbnnMaxLevels], neg[kHbnnMaxLevels];
  for (int j = 0; j < top; ++j) {
    pos[j] = _mm256_set1_ps(mu[j] * 1.0f);
    neg[j] = _mm256_set1_ps(mu[j] * -1.0f);
  }
  __m256 most = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    most = _mm256_max_ps(most, abs8(v));
    __m256 a = signed8(v, pos[0], neg[0]);
    if (top > 1) {
      const __m256i code = codes8(bm + k);
      __m256 r = _mm256_sub_ps(v, a);
      for (int j = 1; j < top; ++j) {
        const __m256 active = _mm256_castsi256_ps(_mm256_cmpgt_epi32(code, _mm256_set1_epi32(j)));
        if (!mask8(active)) break;
        const __m256 step = signed8(r, pos[j], neg[j]);
        a = _mm256_blendv_ps(a, _mm256_add_ps(a, step), active);
        r = _mm256_sub_ps(r, step);
      }
    }
    _mm256_storeu_ps(approx + k, a);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, most);
  const float tail = approx_span_scalar(x + k, bm + k, n - k, mu, top, approx + k);
  return std::max(tail, *std::max_element(lanes, lanes + 8));
}
#endif

int64_t collect_bin(const float* d, int64_t m, uint32_t first, uint32_t last, uint32_t* out) {
#ifdef ONEBIT_HBNN_X86
  if (vector_isa() != kScalarLoops) return collect_bin_avx2(d, m, first, last, out);
#endif
  return collect_bin_scalar(d, m, first, last, out);
}

double abs_sum_any(const float* v, int64_t m) {
#ifdef ONEBIT_HBNN_X86
  switch (vector_isa()) {
    case kAvx512: return abs_sum_512(v, m);
    case kAvx2: return abs_sum_avx2(v, m);
  }
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
  switch (vector_isa()) {
    case kAvx512: return bracket_512(v, m, mean, lo, hi, cand, n_cand);
    case kAvx2: return bracket_avx2(v, m, mean, lo, hi, cand, n_cand);
  }
#endif
  return bracket_scalar(v, m, mean, lo, hi, cand, n_cand);
}

int64_t level_one(const float* x, const int8_t* bm, int64_t n, float mu, float* res, int32_t* lvl) {
#ifdef ONEBIT_HBNN_X86
  switch (vector_isa()) {
    case kAvx512: return level_one_512(x, bm, n, mu, res, lvl);
    case kAvx2: return level_one_avx2(x, bm, n, mu, res, lvl);
  }
#endif
  return level_one_scalar(x, bm, n, mu, res, lvl);
}

int64_t level_up(int64_t w, int level, float mu, float* res, int32_t* lvl) {
#ifdef ONEBIT_HBNN_X86
  switch (vector_isa()) {
    case kAvx512: return level_up_512(w, level, mu, res, lvl);
    case kAvx2: return level_up_avx2(w, level, mu, res, lvl);
  }
#endif
  return level_up_scalar(0, w, level, mu, res, lvl, 0);
}

float approx_span(const float* x, const int8_t* bm, int64_t n, const float* mu, int top, float* approx) {
#ifdef ONEBIT_HBNN_X86
  switch (vector_isa()) {
    case kAvx512: return approx_span_512(x, bm, n, mu, top, approx);
    case kAvx2: return approx_span_avx2(x, bm, n, mu, top, approx);
  }
#endif
  return approx_span_scalar(x, bm, n, mu, top, approx);
}

// The distances | |v[k]| - mean | of the m values into dist; returns the range of their bit patterns.
struct BitRange {
  uint32_t lo, hi;
};

BitRange distances_scalar(const float* v, int64_t m, float mean, float* dist) {
  BitRange range{~0u, 0u};
  for (int64_t k = 0; k < m; ++k) {
    dist[k] = distance(v[k], mean);
    range.lo = std::min(range.lo, bits_of(dist[k]));
    range.hi = std::max(range.hi, bits_of(dist[k]));
  }
  return range;
}

#ifdef ONEBIT_HBNN_X86
// (the bit patterns of non-negative floats are below 2^31: signed integer min and max order them)
ONEBIT_AVX2 BitRange distances_avx2(const float* v, int64_t m, float mean, float* dist) {
  const __m256 vmean = _mm256_set1_ps(mean);
  __m256i lo = _mm256_set1_epi32(INT32_MAX), hi = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 8 <= m; k += 8) {
    const __m256 d = abs8(_mm256_sub_ps(abs8(_mm256_loadu_ps(v + k)), vmean));
    _mm256_storeu_ps(dist + k, d);
    lo = _mm256_min_epi32(lo, _mm256_castps_si256(d));
    hi = _mm256_max_epi32(hi, _mm256_castps_si256(d));
  }
  alignas(32) uint32_t lows[8], highs[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lows), lo);
  _mm256_store_si256(reinterpret_cast<__m256i*>(highs), hi);
  BitRange range = distances_scalar(v + k, m - k, mean, dist + k);
  range.lo = std::min(range.lo, *std::min_element(lows, lows + 8));
  range.hi = std::max(range.hi, *std::max_element(highs, highs + 8));
  return range;
}
#endif

// The count-th smallest distance of all m values (1 <= count <= m): kth_smallest over a histogram fitted
// to their range, of about m bins (a short row's fill and scan of the histogram cost no more than its pass).
Threshold kth_of_all(const float* v, int64_t m, float mean, int64_t count, Scratch& s) {
  float* dist = s.dist.data();
#ifdef ONEBIT_HBNN_X86
  const BitRange range = vector_isa() != kScalarLoops ? distances_avx2(v, m, mean, dist)
                                                      : distances_scalar(v, m, mean, dist);
#else
  const BitRange range = distances_scalar(v, m, mean, dist);
#endif
  const int bins = static_cast<int>(std::clamp<int64_t>(m, 64, kBins));
  int shift = 0;
  while (((range.hi - range.lo) >> shift) >= static_cast<uint32_t>(bins)) ++shift;
  return kth_smallest(dist, m, count, s, range.lo, shift, bins);
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
  return kth_of_all(v, m, mean, count, s);
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

// Level 1 over the n elements at x (row indices from offset): bm = 1 where the element stops, 2 where it
// goes on (then carried: idx, |x|, x - mu*sign(x)). Returns how many go on. (The vector passes' tails
// take a fresh Decider: they run only where every tie stops, so no count of ties carries over.)
int64_t first_level_scalar(const float* x, int64_t n, int64_t offset, float mu, const Rule& rule, int8_t* bm,
                           const Carried& out) {
  Decider decider{rule};
  int64_t w = 0;
  for (int64_t i = 0; i < n; ++i) {
    const bool stop = decider.stops(x[i]);
    bm[i] = stop ? 1 : 2;
    out.idx[w] = static_cast<uint32_t>(i + offset);
    out.mag[w] = std::fabs(x[i]);
    out.res[w] = x[i] - mu * sign_of(x[i]);
    w += !stop;
  }
  return w;
}

// Level j >= 2 over the carried elements [from, w), `next` of them already kept: those that go on are kept
// (compacted) with res -= mu*sign(res); returns how many in all. src: the distances' source, mag (paper)
// or res (residual rule).
int64_t next_level_scalar(int64_t from, int64_t w, float mu, const Rule& rule, bool paper, const Carried& c,
                          int64_t next) {
  Decider decider{rule};
  for (int64_t k = from; k < w; ++k) {
    const float r = c.res[k], m = c.mag[k];
    const bool stop = decider.stops(paper ? m : r);
    c.idx[next] = c.idx[k];
    c.mag[next] = m;
    c.res[next] = r - mu * sign_of(r);
    next += !stop;
  }
  return next;
}

#ifdef ONEBIT_HBNN_X86
ONEBIT_AVX512 inline __mmask16 goes_on(const Rule& rule, __mmask16 live, __m512 src) {
  if (rule.kind == Rule::kNone) return live;
  if (rule.kind == Rule::kAll) return 0;
  const __m512 d = _mm512_abs_ps(_mm512_sub_ps(_mm512_abs_ps(src), _mm512_set1_ps(rule.center)));
  return _mm512_mask_cmp_ps_mask(live, d, _mm512_set1_ps(rule.t.value), _CMP_GT_OQ);
}

// first_level_scalar's vector form, where every tie stops (rule.vector_ok()). (The rule's fields and the
// arrays in locals: the compiler would reload them after every store.)
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

// next_level_scalar's vector form over the w carried elements, where every tie stops (rule.vector_ok()).
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

ONEBIT_AVX2 inline unsigned goes_on8(const Rule& rule, __m256 src) {
  if (rule.kind == Rule::kNone) return 0xFFu;
  if (rule.kind == Rule::kAll) return 0u;
  const __m256 d = abs8(_mm256_sub_ps(abs8(src), _mm256_set1_ps(rule.center)));
  return mask8(_mm256_cmp_ps(d, _mm256_set1_ps(rule.t.value), _CMP_GT_OQ));
}

ONEBIT_AVX2 int64_t first_level_avx2(const float* x, int64_t n, int64_t offset, float mu, const Rule& rule,
                                     int8_t* bm, const Carried& out) {
  const __m256 pos = _mm256_set1_ps(mu * 1.0f), neg = _mm256_set1_ps(mu * -1.0f);
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const Rule local = rule;
  uint32_t* const idx = out.idx;
  float* const mag = out.mag;
  float* const res = out.res;
  int64_t w = 0, k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256 v = _mm256_loadu_ps(x + k);
    const unsigned go = goes_on8(local, v);
    std::memcpy(bm + k, &kAvx2Tables.codes[go], 8);
    if (!go) continue;
    const __m256i lanes = kept_lanes(go);
    append8(idx + w, lanes, _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(k + offset)), iota));
    append8(mag + w, go, lanes, abs8(v));
    w += append8(res + w, go, lanes, _mm256_sub_ps(v, signed8(v, pos, neg)));
  }
  return w + first_level_scalar(x + k, n - k, offset + k, mu, local, bm + k, Carried{idx + w, mag + w, res + w});
}

// (in place: the kept lanes go to next <= k, after the block at k is loaded)
ONEBIT_AVX2 int64_t next_level_avx2(int64_t w, float mu, const Rule& rule, bool paper, const Carried& c) {
  const __m256 pos = _mm256_set1_ps(mu * 1.0f), neg = _mm256_set1_ps(mu * -1.0f);
  const Rule local = rule;
  uint32_t* const idx = c.idx;
  float* const mag = c.mag;
  float* const res = c.res;
  int64_t next = 0, k = 0;
  for (; k + 8 <= w; k += 8) {
    const __m256 r = _mm256_loadu_ps(res + k);
    const __m256 m = paper ? _mm256_loadu_ps(mag + k) : _mm256_setzero_ps();
    const unsigned go = goes_on8(local, paper ? m : r);
    if (!go) continue;
    const __m256i lanes = kept_lanes(go);
    append8(idx + next, lanes, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx + k)));
    if (paper) append8(mag + next, go, lanes, m);  // the residual rule orders by res
    next += append8(res + next, go, lanes, _mm256_sub_ps(r, signed8(r, pos, neg)));
  }
  return next_level_scalar(k, w, mu, local, paper, Carried{idx, mag, res}, next);
}
#endif

// The vector form of a level over [offset, offset + n) of the row (level 1) or of the n carried elements
// (level >= 2) on the CPU's widest ISA (scalar loops where it has none); only where rule.vector_ok().
int64_t level_vector(int level, const float* x, int64_t n, int64_t offset, float mu, const Rule& rule, bool paper,
                     int8_t* bm, const Carried& c) {
#ifdef ONEBIT_HBNN_X86
  switch (vector_isa()) {
    case kAvx512:
      return level == 1 ? first_level_512(x, n, offset, mu, rule, bm, c) : next_level_512(n, mu, rule, paper, c);
    case kAvx2:
      return level == 1 ? first_level_avx2(x, n, offset, mu, rule, bm, c) : next_level_avx2(n, mu, rule, paper, c);
  }
#endif
  return level == 1 ? first_level_scalar(x, n, offset, mu, rule, bm, c) : next_level_scalar(0, n, mu, rule, paper, c, 0);
}

// One level over the n (level 1: the row x) elements in play on one thread.
int64_t level_pass(int level, const float* x, int64_t n, float mu, const Rule& rule, bool paper, int8_t* bm,
                   const Carried& c) {
  if (vector_isa() != kScalarLoops && rule.vector_ok()) return level_vector(level, x, n, 0, mu, rule, paper, bm, c);
  return level == 1 ? first_level_scalar(x, n, 0, mu, rule, bm, c) : next_level_scalar(0, n, mu, rule, paper, c, 0);
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
    } else if (parts > 1 && vector_isa() != kScalarLoops && rule.vector_ok()) {
      int64_t begin[kMaxParts], got[kMaxParts];
      in_parts(parts, w, [&](int p, int64_t b, int64_t e) {
        begin[p] = b;
        got[p] = level_vector(level, x + b, e - b, b, mu, rule, paper, bm + b, {c.idx + b, c.mag + b, c.res + b});
      });
      next = gather(parts, begin, got, c.idx, c.mag, c.res);
    } else {
      next = level_pass(level, x, w, mu, rule, paper, bm, c);
    }
    for (int64_t k = 0; level > 1 && k < next; ++k) bm[c.idx[k]] = static_cast<int8_t>(level + 1);
    w = next;
  }
  // (not reached: the counts sum to n, so the last level stops everyone)
  for (int64_t k = 0; k < w; ++k) bm[c.idx[k]] = static_cast<int8_t>(levels);
  return top;
}

}  // namespace

int hbnn_vector_isa(int widest) {
  g_widest.store(std::clamp(widest, static_cast<int>(kScalarLoops), static_cast<int>(kAvx512)));
  return vector_isa();
}

bool hbnn_scalar_only(bool on) { return hbnn_vector_isa(on ? kScalarLoops : kAvx512) == kScalarLoops; }

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
