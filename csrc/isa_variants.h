// A file's kernel header compiled once per instruction set, and the variant the CPU runs picked at
// run time (the same binary runs on any x86-64 CPU), for train_quantizers.cpp and train_fda.cpp:
// the baseline ISA, AVX2 with FMA and AVX-512 (F, DQ) with FMA, each in its own namespace
// (isa_default, isa_avx2, isa_avx512; the last two with GCC on x86-64 only) and `#pragma GCC target`
// region. Include it once, inside the namespace the variants belong to, after defining
// ONEBIT_ISA_HEADER (the kernel header, a quoted file name) and, where a second header builds on the
// first, ONEBIT_ISA_HEADER_2. ONEBIT_ISA_PICK(make) is then make(ns) for the widest variant the CPU
// runs (make: a macro building the file's table of kernels from a namespace). Not a public header:
// no include guard on purpose. (train_pcpp.cpp keeps its own list: no FMA, to stay bit-exact with
// torch, and no AVX2 variant.)

namespace isa_default {
#include ONEBIT_ISA_HEADER
#ifdef ONEBIT_ISA_HEADER_2
#include ONEBIT_ISA_HEADER_2
#endif
}  // namespace isa_default

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ONEBIT_ISA_X86 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
#include ONEBIT_ISA_HEADER
#ifdef ONEBIT_ISA_HEADER_2
#include ONEBIT_ISA_HEADER_2
#endif
}  // namespace isa_avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx2,fma")
namespace isa_avx512 {
#include ONEBIT_ISA_HEADER
#ifdef ONEBIT_ISA_HEADER_2
#include ONEBIT_ISA_HEADER_2
#endif
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

// 2: AVX-512 F and DQ with FMA, 1: AVX2 with FMA, 0: neither (or not GCC on x86-64).
inline int isa_level() {
#ifdef ONEBIT_ISA_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
    return 2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
  return 0;
}

#ifdef ONEBIT_ISA_X86
#define ONEBIT_ISA_PICK(make) \
  [](int level) { return level == 2 ? make(isa_avx512) : level == 1 ? make(isa_avx2) : make(isa_default); }(isa_level())
#else
#define ONEBIT_ISA_PICK(make) make(isa_default)
#endif
