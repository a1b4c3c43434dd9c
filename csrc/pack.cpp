#include <algorithm>
#include <vector>

#include "engine.h"
#include "ops.h"
#include "thread_pool.h"

namespace onebit {

void pack_nchw(const float* x, int64_t N, int64_t C, int64_t HW, const float* thr, uint64_t* out,
               int num_threads) {
  const int64_t KW = (C + 63) / 64;
  // One item = one image and one 64-channel word; the inner loop runs over contiguous pixels.
  parallel_for(num_threads, N * KW, [&](int64_t item) {
    const int64_t n = item / KW, k = item % KW;
    std::vector<uint64_t> acc(static_cast<size_t>(HW), 0);
    const int nb = static_cast<int>(std::min<int64_t>(64, C - 64 * k));
    for (int b = 0; b < nb; ++b) {
      const int64_t c = 64 * k + b;
      const float t = thr ? thr[c] : 0.0f;
      const float* xs = x + (n * C + c) * HW;
      uint64_t* a = acc.data();
      for (int64_t i = 0; i < HW; ++i) a[i] |= static_cast<uint64_t>((xs[i] + t) < 0.0f) << b;
    }
    uint64_t* o = out + n * HW * KW + k;
    for (int64_t i = 0; i < HW; ++i) o[i * KW] = acc[static_cast<size_t>(i)];
  });
}

void pack_rows(const float* x, int64_t P, int64_t C, const float* thr, uint64_t* out, int isa, int num_threads) {
  const PackRowsFn fn = get_isa(isa).pack_rows;
  const int64_t KW = (C + 63) / 64;
  // Chunks of >= 16K floats: small tensors are packed on the calling thread (a wake-up of the
  // pool costs more than packing them).
  const int64_t chunk = std::max<int64_t>(16, 16384 / C);
  parallel_for(num_threads, (P + chunk - 1) / chunk, [&](int64_t item) {
    const int64_t p0 = item * chunk, p1 = std::min(P, p0 + chunk);
    fn(x + p0 * C, p1 - p0, C, thr, out + p0 * KW);
  });
}

}  // namespace onebit
