// simmim/kernels/simd.hpp: the instruction-set mapping of simmim's element-wise kernels, kept apart
// from their maths (ops/*.hpp), plus the vectorised special functions those kernels need.
//
// The ISA is chosen at compile time from the consumer's flags (these element-wise kernels are not part of the
// run-time dispatch of simmim::kernels, kernels/dispatch.hpp; their symbols live in the ISA namespace of
// kernels/isa.hpp): xsimd's default architecture for -march=... (AVX-512, AVX2+FMA, AVX, SSE4, SSE2,
// NEON). An op takes its SIMD path when SIMMIM_SIMD is 1 and simd_enabled<T> is true, and otherwise
// runs its scalar `<name>_reference`. SIMMIM_SIMD is 0 when the consumer defines SIMMIM_NO_SIMD or
// when xsimd finds no ISA (it then defines XSIMD_NO_SUPPORTED_ARCHITECTURE and no batch type at all).
//
// Numerics (no -ffast-math assumptions; every function here is IEEE-clean and NaN-propagating):
//   erf(Batch<float>)   rational minimax approximation, max abs error < 5e-7 vs std::erf on [-10, 10]
//   erf(Batch<double>)  std::erf per lane (xsimd's double erf is only ~8e-15 relative)
//   exp(Batch<T>)       xsimd::exp (Cephes-style; ~1 ulp in float and double)
// Every function is a pure per-lane function of its input, so a kernel's element-wise results do
// not depend on an element's position in its buffer (tails are run through a zero-padded batch).
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>

#include "simmim/kernels/isa.hpp"

#if !defined(SIMMIM_NO_SIMD)
#include <xsimd/xsimd.hpp>
#if !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
#define SIMMIM_SIMD 1
#endif
#endif
#if !defined(SIMMIM_SIMD)
#define SIMMIM_SIMD 0
#endif

namespace simmim::kernels {
SIMMIM_ISA_BEGIN

/// Element count below which a kernel runs on the calling thread: an OpenMP fork/join costs more than
/// the work (and much more when the cores are oversubscribed). Results never depend on it.
inline constexpr std::ptrdiff_t kParallelMinWork = std::ptrdiff_t(1) << 15;

#if SIMMIM_SIMD

// GCC 12.1-12.2's AVX-512 headers define _mm512_undefined_ps() as a self-initialised variable and then
// warn about it (-Wuninitialized, GCC bug 105593, fixed in 12.3) wherever xsimd's min, max, hadd or
// exp get inlined; the code is correct, so silence that one false positive for the wrappers below.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

/// The ISA every kernel of this translation unit uses (xsimd's best for the compile flags).
using arch = xsimd::default_arch;

/// True when the ISA has a register for T (e.g. false for double on 32-bit NEON).
template <class T>
inline constexpr bool simd_enabled = xsimd::has_simd_register<T, arch>::value;

/// One SIMD register of T.
template <class T>
using Batch = xsimd::batch<T, arch>;

/// Lanes of Batch<T>.
template <class T>
inline constexpr std::ptrdiff_t lanes = static_cast<std::ptrdiff_t>(Batch<T>::size);

/// Name of the ISA in use, e.g. "avx512bw", "fma3+avx2", "sse2".
inline const char* isa_name() noexcept { return arch::name(); }

/// Horizontal sum of the lanes (fixed order for a given ISA, so deterministic).
template <class T>
T hsum(const Batch<T>& v) noexcept {
    return xsimd::hadd(v);
}

/// e^x per lane.
template <class T>
Batch<T> exp(const Batch<T>& x) noexcept {
    return xsimd::exp(x);
}

/// erf(x) per lane.
/// float: the 13/8-degree odd/even rational minimax interpolant of Eigen 3.4 (generic_fast_erf_float in
/// unsupported/Eigen/src/SpecialFunctions/SpecialFunctionsImpl.h, MPL-2.0), valid on [-4, 4]; outside
/// it fl(erf(x)) = +-1 and the input is clamped. Max abs error 3.8e-7 with FMA, 4.7e-7 without.
/// double: std::erf on each lane, for its <= 1 ulp accuracy.
template <class T>
Batch<T> erf(const Batch<T>& a) noexcept {
    using B = Batch<T>;
    if constexpr (std::is_same_v<T, float>) {
        const B x = xsimd::max(xsimd::min(a, B(4.0f)), B(-4.0f));
        const B x2 = x * x;
        B p = xsimd::fma(x2, B(-2.72614225801306e-10f), B(2.77068142495902e-08f));
        p = xsimd::fma(x2, p, B(-2.10102402082508e-06f));
        p = xsimd::fma(x2, p, B(-5.69250639462346e-05f));
        p = xsimd::fma(x2, p, B(-7.34990630326855e-04f));
        p = xsimd::fma(x2, p, B(-2.95459980854025e-03f));
        p = xsimd::fma(x2, p, B(-1.60960333262415e-02f));
        B q = xsimd::fma(x2, B(-1.45660718464996e-05f), B(-2.13374055278905e-04f));
        q = xsimd::fma(x2, q, B(-1.68282697438203e-03f));
        q = xsimd::fma(x2, q, B(-7.37332916720468e-03f));
        q = xsimd::fma(x2, q, B(-1.42647390514189e-02f));
        // min/max do not propagate NaN on every ISA: restore it explicitly
        return xsimd::select(xsimd::isnan(a), a, x * p / q);
    } else {
        T v[B::size];
        a.store_unaligned(v);
        for (T& e : v) e = std::erf(e);
        return B::load_unaligned(v);
    }
}

/// Loads p[0, n), n <= lanes<T>, into a batch whose other lanes are zero (the tail of an element-wise
/// kernel goes through the same batch code as its body, so an element's result never depends on its
/// position in the buffer).
template <class T>
Batch<T> load_partial(const T* p, std::ptrdiff_t n) noexcept {
    T v[Batch<T>::size] = {};
    for (std::ptrdiff_t i = 0; i < n; ++i) v[i] = p[i];
    return Batch<T>::load_unaligned(v);
}

/// Stores the first n <= lanes<T> lanes of v to p[0, n).
template <class T>
void store_partial(T* p, const Batch<T>& v, std::ptrdiff_t n) noexcept {
    T lanes_of_v[Batch<T>::size];
    v.store_unaligned(lanes_of_v);
    for (std::ptrdiff_t i = 0; i < n; ++i) p[i] = lanes_of_v[i];
}

/// One load for kernels written once for the batch body and the scalar tail: V is Batch<T> or T.
template <class V, class T>
V load(const T* p) noexcept {
    if constexpr (std::is_same_v<V, T>)
        return *p;
    else
        return V::load_unaligned(p);
}

/// sum over i in [0, n) of term(i, tag), ggml style: four independent batch accumulators, then one,
/// then a scalar tail. term(i, Batch<T>{}) returns the batch of terms [i, i + lanes<T>) and
/// term(i, T{}) the scalar term i (write it once as a generic lambda over the tag's type). The order
/// of the additions depends only on n, so the result is deterministic.
template <class T, class Term>
T reduce_sum(std::ptrdiff_t n, Term&& term) {
    using B = Batch<T>;
    constexpr std::ptrdiff_t W = lanes<T>;
    B acc0(T(0)), acc1(T(0)), acc2(T(0)), acc3(T(0));
    std::ptrdiff_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        acc0 += term(i, B{});
        acc1 += term(i + W, B{});
        acc2 += term(i + 2 * W, B{});
        acc3 += term(i + 3 * W, B{});
    }
    for (; i + W <= n; i += W) acc0 += term(i, B{});
    T sum = hsum<T>((acc0 + acc1) + (acc2 + acc3));
    for (; i < n; ++i) sum += term(i, T{});
    return sum;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#else

template <class T>
inline constexpr bool simd_enabled = false;

inline const char* isa_name() noexcept { return "scalar"; }

#endif

SIMMIM_ISA_END
}  // namespace simmim::kernels
