// Which kernel paths this CPU can run, and the path for a kernel id (run-time dispatch).
#include <stdexcept>
#include <string>

#include "engine.h"

namespace onebit {

bool cpu_supports(int isa) {
  switch (isa) {
    case kPortable:
    case kReference: return true;
#if defined(__x86_64__) && defined(__GNUC__)
    case kPopcnt:
      __builtin_cpu_init();
      return __builtin_cpu_supports("popcnt");
    case kAvx2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    case kAvx512:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq");
#endif
    default: return false;
  }
}

const Isa& get_isa(int isa) {
  if (isa < 0 || isa >= kNumIsa) throw std::invalid_argument("unknown kernel id " + std::to_string(isa));
  if (!cpu_supports(isa)) throw std::invalid_argument("kernel not supported by this CPU");
  switch (isa) {
    case kPopcnt: return isa_popcnt();
    case kAvx2: return isa_avx2();
    case kAvx512: return isa_avx512();
    case kReference: return isa_reference();
    default: return isa_portable();
  }
}

}  // namespace onebit
