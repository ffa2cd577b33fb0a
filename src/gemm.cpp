// src/gemm.cpp: the float and double instantiations of simmim/kernels/gemm.hpp
// for the compiled kernels library simmim::kernels (see simmim/kernels/compiled.hpp). Same code
// as the header-only build: compile it with the same flags (-march, -ffp-contract, ...) as the
// programs linking it.
#define SIMMIM_EXTERN_KERNELS 1
#define SIMMIM_BUILDING_KERNELS 1
#include "simmim/kernels/gemm.hpp"

// The symbol every user translation unit refers to (simmim/kernels/compiled.hpp): defined for the
// ISA this library is compiled for only.
extern "C" {
extern const char SIMMIM_KERNELS_ISA_SYMBOL;
const char SIMMIM_KERNELS_ISA_SYMBOL = 0;
}

namespace simmim::kernels {
SIMMIM_GEMM_INSTANTIATION(, float)
SIMMIM_GEMM_INSTANTIATION(, double)
}  // namespace simmim::kernels
