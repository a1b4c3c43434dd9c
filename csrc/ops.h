// Engine operations over raw, validated buffers (the nanobind layer checks shapes).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace onebit {

// x: (N, C, HW) float32; out: (N, HW, ceil(C/64)) words.  bit = (x[c] + thr[c]) < 0.
void pack_nchw(const float* x, int64_t N, int64_t C, int64_t HW, const float* thr, uint64_t* out,
               int num_threads);
// x: (P, C) float32 (channels contiguous); out: (P, ceil(C/64)) words.
// Uses kernel path `isa`'s packer (all paths give identical bits).
void pack_rows(const float* x, int64_t P, int64_t C, const float* thr, uint64_t* out, int isa, int num_threads);

// A process-unique id for each Weights (caches keyed by weights never confuse two layers, even
// when one is freed and another allocated at the same address).
uint64_t new_weights_uid();

// Packed weights in the kernel layout, owned by the engine (built once per layer).
struct Weights {
  uint64_t uid = new_weights_uid();
  int64_t J = 1, cin = 0, cout = 0, kh = 1, kw = 1, KW = 0, ncb = 0, cpad = 0;
  std::vector<uint64_t> w;     // (J, ncb, kh, kw, KW, 32)
  std::vector<uint64_t> m;     // same layout, or empty (no masks)
  std::vector<int32_t> base;   // (J, cpad): active weight bits over all taps
  // (J, kh+1, kw+1, cpad): 2-D prefix sums over the taps of the sum of active weight signs per
  // tap, [a][b] = sum over taps (i, j) with i < a, j < b: the signs of any rectangle of taps in
  // four lookups (0-padding borders).
  std::vector<int32_t> wsum_prefix;
  std::vector<float> mu;       // (J, cpad): per-plane scales
};

// Fills w.wsum_prefix (w's J, kh, kw, cout and cpad set) from the per-tap sums of the active weight
// signs, wsum (J, cout, kh*kw); padded channels stay 0.
void set_tap_sign_sums(Weights& w, const int32_t* wsum);

struct DepthwisePlan;  // depthwise_impl.h

// The integer form of a bits-output transform for one set of single-plane weights: output bit
// q is 1 exactly when the layer's integer dot product D = base - (2*popcount + correction) lies
// in [lo[q], hi[q]] (see sign_intervals in conv.cpp).
struct SignIntervals {
  uint64_t weights_uid = 0;
  std::vector<int32_t> lo, hi;  // (cpad)
};

// Fused output transform, per output channel (padded to a multiple of 32 channels).
struct Transform {
  int64_t cout = 0, cpad = 0;
  std::vector<float> scale, bias, prelu, thr;  // prelu / thr empty when absent
  float cmin = 0, cmax = 0;
  bool bits = false;  // output re-binarized bits instead of float32
  // Forms of this transform prepared for the weights it has run with (a transform normally
  // belongs to one layer; a few entries cover a transform shared by several), through
  // cached_for_weights: SignIntervals for convolutions, DepthwisePlan (per-channel output
  // tables and bit-sliced bounds) for depthwise layers.
  mutable std::mutex cache_mutex;
  mutable std::vector<std::shared_ptr<const SignIntervals>> intervals;
  mutable std::vector<std::shared_ptr<const DepthwisePlan>> depthwise_plans;
};

// The entry of one of t's caches for the weights with id `uid` (entries have a weights_uid),
// made by make() on a miss; at most 8 entries, the oldest evicted; a null result is not kept.
template <class T, class Make>
std::shared_ptr<const T> cached_for_weights(const Transform& t, std::vector<std::shared_ptr<const T>>& cache,
                                            uint64_t uid, Make make) {
  {
    std::lock_guard<std::mutex> lock(t.cache_mutex);
    for (const auto& entry : cache)
      if (entry->weights_uid == uid) return entry;
  }
  std::shared_ptr<const T> entry = make();  // outside the lock: may take a while
  if (!entry) return nullptr;
  std::lock_guard<std::mutex> lock(t.cache_mutex);
  if (cache.size() >= 8) cache.erase(cache.begin());
  cache.push_back(entry);
  return entry;
}

struct ConvCall {
  const uint64_t* x = nullptr;  // (N, H, W, KW)
  int64_t N = 0, H = 0, W = 0;
  int sh = 1, sw = 1, ph = 0, pw = 0, pad_value = 0;
  void* out = nullptr;          // float (N, OH, OW, cout) or words (N, OH, OW, ceil(cout/64))
  // Float output only (conv2d, groups 1): a tensor of the output's shape added after the scale and
  // bias, before PReLU and clamp (a ResNet block's shortcut and its activation, fused), or nullptr.
  const float* residual = nullptr;
  // Float output only (conv2d, groups 1): also write the next layer's input sign bits, bit =
  // (y + threshold) < 0 of the final y, to words (N, OH, OW, ceil(cout/64)) (threshold padded to
  // cpad channels, or nullptr for 0), the packing the next binary layer would apply to the float
  // output; or nullptr.
  uint64_t* out_bits = nullptr;
  const float* bits_threshold = nullptr;
  int isa = 0;
  int num_threads = 1;
};

int64_t conv_out_size(int64_t in, int k, int stride, int pad);
void conv2d(const Weights& w, const Transform& t, const ConvCall& call);

// Packed depthwise weights (groups == in_channels == out_channels = C): per plane and tap one
// row of sign words in the activation layout (bit c%64 of word c/64 = weight of channel c).
struct DepthwiseWeights {
  uint64_t uid = new_weights_uid();
  int64_t J = 1, C = 0, kh = 1, kw = 1, KW = 0;
  std::vector<uint64_t> w;  // (J, kh*kw, KW), tail bits zero
  std::vector<uint64_t> m;  // same layout (plane masks, tail bits zero), or empty (no masks)
  std::vector<float> mu;    // (J, C): per-plane scales
};

// Depthwise binary convolution (depthwise.cpp, depthwise_impl.h): x (N, H, W, KW) words; out float
// (N, OH, OW, C) or words (N, OH, OW, KW) as the transform says; call.isa picks the kernel path,
// whose instantiation of the row kernel (Isa::depthwise_row) runs every output row.
void depthwise_conv2d(const DepthwiseWeights& w, const Transform& t, const ConvCall& call);

}  // namespace onebit
