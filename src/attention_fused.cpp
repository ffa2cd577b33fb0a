// src/attention_fused.cpp: the float and double instantiations of simmim/ops/attention_fused.hpp
// for the compiled kernels library simmim::kernels (see simmim/kernels/compiled.hpp). Same code
// as the header-only build: compile it with the same flags (-march, -ffp-contract, ...) as the
// programs linking it.
#define SIMMIM_EXTERN_KERNELS 1
#define SIMMIM_BUILDING_KERNELS 1
#include "simmim/ops/attention_fused.hpp"

namespace simmim::ops {
SIMMIM_ATTENTION_FUSED_INSTANTIATION(, float)
SIMMIM_ATTENTION_FUSED_INSTANTIATION(, double)
}  // namespace simmim::ops
