// simmim/kernels/isa.hpp: the name of the instruction set a translation unit's kernels are compiled for, and the
// inline namespace that keeps kernels compiled for different instruction sets apart.
//
// The heavy kernels (kernels/simd.hpp, kernels/gemm.hpp, ops/attention_fused.hpp, ops/attention_bias.hpp) pick
// their code from the compiler's ISA macros. The compiled kernels library (simmim::kernels, kernels/dispatch.hpp)
// compiles them several times in one program, once per instruction set, and picks one at run time; so their
// inline functions and templates live in `inline namespace isa_<level>` (SIMMIM_ISA_BEGIN / SIMMIM_ISA_END),
// which gives each ISA's copy its own symbols. The namespace is inline: code names them as before
// (simmim::kernels::Batch, simmim::ops::detail::...), and a header-only program sees no difference.
//
// The level is computed from the ISA macros where this header is first included (simmim::kernels's per-ISA
// sources include it only after defining them).
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
#elif defined(__ARM_NEON) || defined(__ARM_NEON__)
#define SIMMIM_KERNELS_ISA_LEVEL neon
#else
#define SIMMIM_KERNELS_ISA_LEVEL generic
#endif
#define SIMMIM_KERNELS_CAT3_(a, b, c) a##b##c
#define SIMMIM_KERNELS_CAT3(a, b, c) SIMMIM_KERNELS_CAT3_(a, b, c)
/// The inline namespace of this translation unit's kernels, e.g. isa_avx512bw, isa_sse2, isa_nosimd_sse2.
#define SIMMIM_KERNELS_ISA_NAMESPACE SIMMIM_KERNELS_CAT3(isa_, SIMMIM_KERNELS_ISA_SIMD, SIMMIM_KERNELS_ISA_LEVEL)
/// Opens / closes the ISA namespace inside namespace simmim::kernels or simmim::ops.
#define SIMMIM_ISA_BEGIN inline namespace SIMMIM_KERNELS_ISA_NAMESPACE {
#define SIMMIM_ISA_END }
