// src/isa_avx2.cpp: the float kernels of simmim::kernels for AVX2 + FMA, chosen at run time (kernels/dispatch.hpp).
// Compiled with -mavx2 -mfma ... (CMakeLists.txt); see src/isa_prelude.hpp for how nothing compiled here can stand
// in for a baseline function.
// The public entry points (kernels::gemm, which the attention calls) are src/dispatch.cpp's, never compiled here.
#define SIMMIM_EXTERN_KERNELS 1
#define SIMMIM_BUILDING_KERNELS 1
#include "isa_prelude.hpp"

#if SIMMIM_KERNELS_MULTI_ISA
#if !defined(__AVX2__) || !defined(__FMA__) || defined(__AVX512F__)
#error "src/isa_avx2.cpp must be compiled with -mavx2 -mfma (and without AVX-512)"
#endif
#define SIMMIM_ISA_XSIMD simmim_xsimd_avx2
#define SIMMIM_ISA_EIGEN simmim_eigen_avx2
#define SIMMIM_ISA_TABLE avx2_table
#define SIMMIM_ISA_NAME "avx2"
#include "isa_kernels.inc"
#endif
