// src/isa_avx512.cpp: the float kernels of simmim::kernels for AVX-512 (F, BW, DQ, VL, CD, with AVX2 and FMA), chosen
// at run time (kernels/dispatch.hpp). Compiled with those -m flags (CMakeLists.txt); see src/isa_prelude.hpp for
// how nothing compiled here can stand in for a baseline function.
// The public entry points (kernels::gemm, which the attention calls) are src/dispatch.cpp's, never compiled here.
#define SIMMIM_EXTERN_KERNELS 1
#define SIMMIM_BUILDING_KERNELS 1
#include "isa_prelude.hpp"

#if SIMMIM_KERNELS_MULTI_ISA
#if !defined(__AVX512F__) || !defined(__AVX512BW__) || !defined(__AVX512DQ__) || !defined(__AVX512VL__) || !defined(__FMA__)
#error "src/isa_avx512.cpp must be compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512cd -mavx2 -mfma"
#endif
#define SIMMIM_ISA_XSIMD simmim_xsimd_avx512
#define SIMMIM_ISA_EIGEN simmim_eigen_avx512
#define SIMMIM_ISA_TABLE avx512_table
#define SIMMIM_ISA_NAME "avx512"
#include "isa_kernels.inc"
#endif
