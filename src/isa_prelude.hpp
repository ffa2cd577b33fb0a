// src/isa_prelude.hpp: the shared part of simmim::kernels's sources (src/dispatch.cpp, src/isa_*.cpp).
//
// src/isa_avx2.cpp and src/isa_avx512.cpp are compiled with -mavx2 -mfma ... / -mavx512f ... (CMakeLists.txt). A
// function the linker deduplicates (an inline function, a template instantiation) compiled there could replace the
// baseline copy of another object and crash a CPU without that ISA; so everything they instantiate has names of
// its own: the kernels live in their ISA namespace (kernels/isa.hpp: isa_fma3_avx2, isa_avx512bw), xsimd and Eigen
// are renamed by a macro (simmim_xsimd_avx2, simmim_eigen_avx512, ...; src/dispatch.cpp does the same for the
// baseline), double precision (Eigen) is left to the baseline, and the
// argument checks (std::string code) run in the public entry points of src/dispatch.cpp. A CTest test
// (isa.object_symbols, scripts/check-isa-objects.py) checks the objects for any other shared function with
// instructions beyond the baseline.
#pragma once

#include "simmim/kernels/dispatch.hpp"

/// SIMMIM_KERNELS_MULTI_ISA (set by CMakeLists.txt on x86-64 with GCC or Clang): src/isa_*.cpp are compiled.
#if !defined(SIMMIM_KERNELS_MULTI_ISA) || defined(SIMMIM_NO_SIMD)
#undef SIMMIM_KERNELS_MULTI_ISA
#define SIMMIM_KERNELS_MULTI_ISA 0
#endif

namespace simmim::kernels::dispatch::detail {
/// The double-precision kernels of every level: the baseline's (src/dispatch.cpp).
extern const Kernels<double> baseline_f64;
#if SIMMIM_KERNELS_MULTI_ISA
extern const Table avx512_table;  // src/isa_avx512.cpp
extern const Table avx2_table;    // src/isa_avx2.cpp
#endif
}  // namespace simmim::kernels::dispatch::detail

/// A table of this translation unit's float kernels (their ISA namespace is the one its flags select).
#define SIMMIM_KERNELS_TABLE(NAME)                                                                                       \
    {NAME, ::simmim::kernels::gemm_float_path,                                                                           \
     {&::simmim::kernels::gemm_detail::gemm_entry<float>, &::simmim::ops::fused_attention_detail::forward_entry<float>,  \
      &::simmim::ops::fused_attention_detail::backward_entry<float>,                                                     \
      &::simmim::ops::attention_bias_detail::forward_entry<float>,                                                       \
      &::simmim::ops::attention_bias_detail::backward_entry<float>,                                                      \
      &::simmim::ops::gelu_rows::bias_gelu_tile<float>, &::simmim::ops::gelu_rows::gelu_backward_tile<float>},           \
     &::simmim::kernels::dispatch::detail::baseline_f64}
