// simmim/kernels/compiled.hpp: support for the opt-in compiled kernels (CMake target simmim::kernels).
//
// With SIMMIM_EXTERN_KERNELS defined (simmim::kernels defines it for the targets linking it), the
// headers of the heavy kernels (kernels/gemm.hpp, ops/attention_fused.hpp, ops/attention_bias.hpp)
// declare their float and double instantiations `extern template`: a translation unit no longer
// compiles them, the library's src/*.cpp do, once. Without the macro everything is header-only.
//
// The kernels pick their code path from the compiler's ISA macros (-march), so the library and its
// users must be compiled for the same ISA, like every translation unit of a header-only program.
// The guard below makes a mismatch a link error instead of an ODR violation: each user translation
// unit refers to a symbol naming its ISA, which the library defines only for the ISA it was built
// for (undefined reference to `simmim_kernels_built_for_<isa>`: rebuild simmim::kernels with the
// same -march, or drop SIMMIM_EXTERN_KERNELS).
#pragma once

#if defined(SIMMIM_NO_SIMD)
#define SIMMIM_KERNELS_ISA_SIMD nosimd_
#else
#define SIMMIM_KERNELS_ISA_SIMD
#endif
// The x86 levels xsimd 8 tells apart, best first (its default_arch), plus the FMA variants.
#if defined(__AVX512BW__)
#define SIMMIM_KERNELS_ISA_LEVEL avx512bw
#elif defined(__AVX512DQ__)
#define SIMMIM_KERNELS_ISA_LEVEL avx512dq
#elif defined(__AVX512CD__)
#define SIMMIM_KERNELS_ISA_LEVEL avx512cd
#elif defined(__AVX512F__)
#define SIMMIM_KERNELS_ISA_LEVEL avx512f
#elif defined(__AVX2__) && defined(__FMA__)
#define SIMMIM_KERNELS_ISA_LEVEL fma3_avx2
#elif defined(__AVX2__)
#define SIMMIM_KERNELS_ISA_LEVEL avx2
#elif defined(__AVX__) && defined(__FMA__)
#define SIMMIM_KERNELS_ISA_LEVEL fma3_avx
#elif defined(__AVX__)
#define SIMMIM_KERNELS_ISA_LEVEL avx
#elif defined(__SSE4_2__) && defined(__FMA__)
#define SIMMIM_KERNELS_ISA_LEVEL fma3_sse4_2
#elif defined(__SSE4_2__)
#define SIMMIM_KERNELS_ISA_LEVEL sse4_2
#elif defined(__SSE4_1__)
#define SIMMIM_KERNELS_ISA_LEVEL sse4_1
#elif defined(__SSSE3__)
#define SIMMIM_KERNELS_ISA_LEVEL ssse3
#elif defined(__SSE3__)
#define SIMMIM_KERNELS_ISA_LEVEL sse3
#elif defined(__SSE2__)
#define SIMMIM_KERNELS_ISA_LEVEL sse2
#else
#define SIMMIM_KERNELS_ISA_LEVEL generic
#endif
#define SIMMIM_KERNELS_CAT3_(a, b, c) a##b##c
#define SIMMIM_KERNELS_CAT3(a, b, c) SIMMIM_KERNELS_CAT3_(a, b, c)
/// Name of the symbol the library defines for the ISA it was compiled for.
#define SIMMIM_KERNELS_ISA_SYMBOL \
    SIMMIM_KERNELS_CAT3(simmim_kernels_built_for_, SIMMIM_KERNELS_ISA_SIMD, SIMMIM_KERNELS_ISA_LEVEL)

#if defined(SIMMIM_EXTERN_KERNELS) && !defined(SIMMIM_BUILDING_KERNELS)
extern "C" const char SIMMIM_KERNELS_ISA_SYMBOL;
namespace {
// Kept (`used`) so that every translation unit using the compiled kernels refers to the ISA symbol.
[[gnu::used]] const char* const simmim_kernels_isa_check = &SIMMIM_KERNELS_ISA_SYMBOL;
}  // namespace
#endif
