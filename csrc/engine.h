// onebit packed 1-bit inference engine: shared declarations.
//
// Bit convention: bit 1 = -1, bit 0 = +1 (a real v maps to +1 iff v >= 0).
// Activations are NHWC with channels packed into 64-bit words (bit c%64 of word c/64);
// tail bits of the last word are zero.
//
// Weights are laid out for the kernels as [plane][cout_block][kh][kw][KW][32]: blocks of
// 32 output channels are innermost so one step of the inner loop XORs one broadcast
// activation word with 32 contiguous weight words (4 zmm / 8 ymm vectors), and the
// per-output-channel popcount sums stay in vector lanes (no horizontal reductions).
#pragma once

#include <cstddef>
#include <cstdint>

namespace onebit {

constexpr int kBlock = 32;     // output channels per weight block
constexpr int kMaxPix = 8;     // output pixels per call of a block kernel

// Arguments of one block-kernel call: popcount sums for kBlock output channels and
// npix (<= kMaxPix) horizontally adjacent output pixels.
struct BlockArgs {
  const uint64_t* const* rows;  // kh pointers; rows[i][p * xstride + t] is the activation word
                                // of output pixel p at kernel row i, step t in [0, L)
  int kh;                       // kernel rows
  int L;                        // words per kernel row = kw * words_per_pixel
  int64_t xstride;              // words between adjacent output pixels (stride * words_per_pixel)
  int npix;                     // 1..kMaxPix
  const uint64_t* w;            // [kh][L][kBlock] weight words of this block
  const uint64_t* m;            // same layout, plane mask words, or nullptr (no mask)
  int32_t* S;                   // out: [npix][kBlock] sum of popcount((x ^ w) [& m])
};

struct ConvCtx;  // conv_impl.h
using ItemFn = void (*)(const ConvCtx&, int64_t item);
struct DepthwiseCtx;  // depthwise_impl.h
// One output row (image n, output row oh: row = n * OH + oh) of a depthwise convolution, every
// pixel and channel.
using DepthwiseRowFn = void (*)(const DepthwiseCtx&, int64_t row);
// Register-only xor + popcount (+ accumulate) loop: returns binary ops per second.
using PeakFn = double (*)(int64_t iterations);
// Sign-packs P rows of C contiguous floats: out[p][k] bit b = (x[p][64k+b] + thr[64k+b]) < 0
// (thr may be null: no threshold); tail bits of the last word are zero.
using PackRowsFn = void (*)(const float* x, int64_t P, int64_t C, const float* thr, uint64_t* out);

// One kernel path: its instantiations of the convolution work item (conv_impl.h) and of the
// depthwise row (depthwise_impl.h), its packer and its peak probe.
struct Isa {
  const char* name;
  ItemFn run_item;  // one work item of a convolution (see conv_impl.h)
  DepthwiseRowFn depthwise_row;
  PeakFn peak;
  PackRowsFn pack_rows;
};

// The kernel paths in the engine's numbering, and their names: the one list (the Python layer
// reads it from the extension).  The production paths come slowest first; the reference path
// (isa_reference.cpp: the plain definition every other path is checked against, never chosen
// automatically) comes last.
enum IsaId : int { kPortable = 0, kPopcnt = 1, kAvx2 = 2, kAvx512 = 3, kReference = 4, kNumIsa = 5 };
inline constexpr const char* kKernelNames[kNumIsa] = {"portable", "popcnt", "avx2", "avx512", "reference"};

const Isa& isa_portable();
const Isa& isa_popcnt();  // only valid if cpu_supports(kPopcnt)
const Isa& isa_avx2();    // only valid if cpu_supports(kAvx2)
const Isa& isa_avx512();  // only valid if cpu_supports(kAvx512)
const Isa& isa_reference();
bool cpu_supports(int isa);
const Isa& get_isa(int isa);  // throws std::invalid_argument if unknown / unsupported

}  // namespace onebit
