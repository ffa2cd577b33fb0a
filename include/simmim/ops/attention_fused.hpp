// simmim/ops/attention_fused.hpp: fused multi-head self-attention core (FlashAttention-2 style).
//
// Same maths and layouts as the naive reference in simmim/ops/attention.hpp, without ever
// materialising the (N, N) probability matrix of the whole batch:
//   qkv  (B, N, 3, H, Dh)  row (b, n) holds q | k | v, each (H, Dh)
//   out  (B, N, H, Dh)
//   lse  (B, H, N)         lse[b, h, i] = log sum_j exp(s_ij), s_ij = q_i . k_j / sqrt(Dh)
// P = softmax_keys(s), out = P v. Backward recomputes P = exp(s - lse) and accumulates (+=) dq,
// dk, dv into dqkv.
//
// Two paths per head (docs/attention.md):
//  - single key tile, N <= kMaxKeyTile (256; every ViT preset): all keys in one tile. Forward
//    works in strips of 6 queries (scores, softmax, P V and the output written in one pass, no
//    online-softmax rescaling); backward keeps P and dS of the head (N x N, in per-thread scratch)
//    and writes dq, dk, dv straight into dqkv, with D_i = sum_j P_ij dP_ij instead of dout . out.
//    A last key vector holding only 1-3 keys (N = 16 k + 1: a class token) is done as dot products.
//  - key tiles, N > kMaxKeyTile: blocks of 72 queries walk balanced key tiles of <= 256 keys with an
//    online softmax (running max m, running sum l, output rescaled by exp(m_old - m_new)); backward
//    accumulates per-head dq, dk, dv buffers tile by tile.
// Parallelism: one OpenMP `parallel for` over the B*H heads; each head runs single-threaded in
// per-thread scratch, which lives in a buffer cached per calling thread (grown when needed, never
// shrunk, freed at thread exit), so repeated calls do not allocate.
// SIMD: xsimd at the ISA the consumer compiles for (-march=...; with simmim::kernels linked, the ISA chosen at run
// time, kernels/dispatch.hpp), plus an AVX-512 16 x 16 transpose
// for packing K^T / V^T (float). Defining SIMMIM_NO_SIMD, or compiling for a target xsimd does not
// support, selects a scalar path with the same tiling (define it identically in every translation
// unit of a program, like -march itself). Dh = 32 and Dh = 64 have compile-time kernels that read
// q, k, v, dout straight from the input rows; other Dh are padded to the SIMD width in scratch.
// Accuracy: exp is Cephes expf with AVX-512's scalef for float on AVX-512, xsimd::exp otherwise
// (also Cephes), log is xsimd::log; std::exp / std::log on the scalar path. Tests bound the exp
// error by 2e-7 relative in float and 2 ulp in double for x <= 0; no -ffast-math assumptions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "simmim/kernels/dispatch.hpp"
#include "simmim/kernels/isa.hpp"

#ifndef SIMMIM_NO_SIMD
#include <xsimd/xsimd.hpp>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#endif

// GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsic headers (the `__Y = __Y`
// idiom of _mm512_undefined_*) once xsimd code is inlined at -O2/-O3: a compiler false positive,
// silenced for this header only.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace simmim::ops {
SIMMIM_ISA_BEGIN

namespace fused_attention_detail {

#if !defined(SIMMIM_NO_SIMD) && !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
inline constexpr bool kUsesSimd = true;

/// The few vector operations the kernels need, on xsimd's default batch for the target ISA.
template <class T>
struct Simd {
    using V = xsimd::batch<T>;
    static constexpr int width = static_cast<int>(V::size);
    static V load(const T* p) { return V::load_unaligned(p); }
    static void store(T* p, const V& v) { v.store_unaligned(p); }
    static V splat(T x) { return V(x); }
    static V fma(const V& a, const V& b, const V& c) { return xsimd::fma(a, b, c); }
    static V max(const V& a, const V& b) { return xsimd::max(a, b); }
    static V exp(const V& x) {
#if defined(__AVX512F__)
        if constexpr (width == 16 && std::is_same_v<T, float>) return exp_avx512(x);
#endif
        return xsimd::exp(x);
    }
    static V log(const V& x) { return xsimd::log(x); }
#if defined(__AVX512F__)
    /// exp for 16 floats: Cephes expf (n = round(x log2 e), r = x - n ln 2 in two parts, degree-5
    /// polynomial) with AVX-512's scalef for the 2^n, which under- and overflows like exp itself.
    /// About 13 instructions, without xsimd's special-case selects. max(-150, x) maps -inf to a
    /// result of 0 and keeps NaN (the second operand of max is returned when one is NaN).
    static V exp_avx512(const V& xv) {
        const __m512 x = _mm512_max_ps(_mm512_set1_ps(-150.0f), xv);
        const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
        r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
        __m512 p = _mm512_set1_ps(1.9875691500e-4f);
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
        p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
        return _mm512_scalef_ps(p, n);
    }
#endif
    static T sum(const V& x) { return xsimd::hadd(x); }
    static T max_element(const V& x) {
#if defined(__AVX512F__)
        if constexpr (width == 16 && std::is_same_v<T, float>) return _mm512_reduce_max_ps(x);
        if constexpr (width == 8 && std::is_same_v<T, double>) return _mm512_reduce_max_pd(x);
#endif
        alignas(64) T lanes[width];
        x.store_aligned(lanes);
        T m = lanes[0];
        for (int i = 1; i < width; ++i) m = std::max(m, lanes[i]);
        return m;
    }
    /// Lanes [0, valid) of x, `fill` in lanes [valid, width).
    static V keep_first(const V& x, int valid, T fill) {
        alignas(64) T iota[width];
        for (int i = 0; i < width; ++i) iota[i] = static_cast<T>(i);
        return xsimd::select(V::load_aligned(iota) < V(static_cast<T>(valid)), x, V(fill));
    }
};
#else
inline constexpr bool kUsesSimd = false;

/// Scalar stand-in for the vector operations: width 1, plain IEEE arithmetic.
template <class T>
struct Simd {
    using V = T;
    static constexpr int width = 1;
    static V load(const T* p) { return *p; }
    static void store(T* p, V v) { *p = v; }
    static V splat(T x) { return x; }
    static V fma(V a, V b, V c) { return a * b + c; }
    static V max(V a, V b) { return std::max(a, b); }
    static V exp(V x) { return std::exp(x); }
    static V log(V x) { return std::log(x); }
    static T sum(V x) { return x; }
    static T max_element(V x) { return x; }
    static V keep_first(V x, int valid, T fill) { return valid > 0 ? x : fill; }
};
#endif

constexpr int round_up(int x, int unit) { return (x + unit - 1) / unit * unit; }
constexpr int lcm(int a, int b) {
    int x = a, y = b;
    while (y != 0) { const int t = x % y; x = y; y = t; }
    return a / x * b;
}

/// Largest key count handled as one tile (single-tile path); longer sequences use key tiles of at
/// most this many keys.
inline constexpr int kMaxKeyTile = 256;

/// Tile geometry for scalar type T (the kernels keep Rows x ColVecs vectors in registers).
///   score products S = Q K^T, dP = dO V^T: kRows query rows x up to 4 vectors of keys;
///   row products O += P V, dQ += dS K:      kRows query rows x up to 4 vectors of Dh;
///   key products dV += P^T dO, dK += dS^T Q: kRowsKey key rows x kColVecsKey vectors of Dh
///   (key-tiled path; the single-tile path uses key_strip_product on strips of kKeyStrip keys).
/// Queries are padded to kRows, keys to kKeyUnit; a key-tiled block is kBlockQ queries.
template <class T>
struct Tiling {
    static constexpr int W = Simd<T>::width;
    static constexpr int kRows = 6;
    static constexpr int kColVecs = 4;
    static constexpr int kRowsKey = 8;      // key-tiled path
    static constexpr int kColVecsKey = 2;
    static constexpr int kKeyStrip = 12;    // single-tile path: keys per key_strip_product call
    static constexpr int kKeyUnit = lcm(W, kRowsKey);
    static constexpr int kBlockQ = round_up(72, kRows);
    /// Padded head width: a whole number of vectors.
    static constexpr int padded_dh(int dh) { return round_up(dh, W); }
    /// Key tile of the key-tiled path: N split into equal tiles of at most kMaxKeyTile keys.
    static int key_tile(int n) {
        const int tiles = (n + kMaxKeyTile - 1) / kMaxKeyTile;
        return round_up((n + tiles - 1) / tiles, kKeyUnit);
    }
};

// Transposed operands (K^T, V^T) are stored as panels of W keys: element (d, j) of a (dhp, nk)
// matrix lives at [((j / W) * dhp + d) * W + j % W], so a kernel reads one vector per panel and
// row d.

/// C (MR, NV*W) = A (MR, kd) * Bt (kd, NV*W). A rows have stride lda; Bt is NV consecutive
/// panels (panel stride dhp*W). Sums over d < kd (DH > 0: kd = DH known at compile time); Bt rows
/// [kd, dhp) are never read.
template <class T, int MR, int NV, int DH>
inline void kernel_nt(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* bt, int kd_runtime, int dhp) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::width;
    const int kd = DH > 0 ? DH : kd_runtime;
    const std::ptrdiff_t panel = static_cast<std::ptrdiff_t>(dhp) * W;
    V acc[MR][NV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) acc[r][v] = S::splat(T(0));
    for (int d = 0; d < kd; ++d) {
        V b[NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) b[v] = S::load(bt + v * panel + d * W);
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
            const V ar = S::splat(a[r * lda + d]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) acc[r][v] = S::fma(ar, b[v], acc[r][v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) S::store(c + r * ldc + v * W, acc[r][v]);
}

/// C (MR, CV*W) (+)= A (MR, kd) * B (kd, CV*W), with A(r, k) = a[r*lda + k], or a[k*lda + r] when
/// TRANS_A. B rows have stride ldb. ZERO: C is overwritten (the accumulators start at 0), else
/// accumulated into.
template <class T, int MR, int CV, bool TRANS_A, bool ZERO>
inline void kernel_nn(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* b, std::ptrdiff_t ldb, int kd) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::width;
    V acc[MR][CV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
        for (int v = 0; v < CV; ++v) acc[r][v] = ZERO ? S::splat(T(0)) : S::load(c + r * ldc + v * W);
    for (int k = 0; k < kd; ++k) {
        V bk[CV];
#pragma GCC unroll 16
        for (int v = 0; v < CV; ++v) bk[v] = S::load(b + k * ldb + v * W);
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
            const V ar = S::splat(TRANS_A ? a[k * lda + r] : a[r * lda + k]);
#pragma GCC unroll 16
            for (int v = 0; v < CV; ++v) acc[r][v] = S::fma(ar, bk[v], acc[r][v]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
        for (int v = 0; v < CV; ++v) S::store(c + r * ldc + v * W, acc[r][v]);
}

/// One strip of kRows rows: C (kRows, cols) = A (kRows, kd) * Bt (kd, cols), Bt in panels of a
/// (dhp, *) matrix; cols a multiple of W. Column vectors go in chunks of 4 (3 + 2 for 5, 3 for 3).
template <class T, int DH>
inline void strip_nt(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* bt, int cols, int kd, int dhp) {
    using G = Tiling<T>;
    constexpr int MR = G::kRows, W = G::W;
    const std::ptrdiff_t panel = static_cast<std::ptrdiff_t>(dhp) * W;
    int v = 0;
    const int nv = cols / W;
    while (v < nv) {
        const int left = nv - v;
        const std::ptrdiff_t j = static_cast<std::ptrdiff_t>(v) * W;
        if (left >= 6 || left == 4) {
            kernel_nt<T, MR, 4, DH>(c + j, ldc, a, lda, bt + v * panel, kd, dhp);
            v += 4;
        } else if (left == 5 || left == 3) {
            kernel_nt<T, MR, 3, DH>(c + j, ldc, a, lda, bt + v * panel, kd, dhp);
            v += 3;
        } else if (left == 2) {
            kernel_nt<T, MR, 2, DH>(c + j, ldc, a, lda, bt + v * panel, kd, dhp);
            v += 2;
        } else {
            kernel_nt<T, MR, 1, DH>(c + j, ldc, a, lda, bt + v * panel, kd, dhp);
            v += 1;
        }
    }
}

/// Keys of the last, partial key vector that are cheaper as dot products with their rows (Dh / W
/// FMAs and a reduction per query and key) than as one more panel column (Dh FMAs per query for
/// W keys): N % W keys when few enough, else 0. Only for a compile-time Dh (rows read in place).
template <class T, int DH>
constexpr int lone_keys(int n) {
    constexpr int W = Simd<T>::width;
    if constexpr (DH <= 0 || W == 1) {
        return 0;
    } else {
        const int left = n % W;
        return left * (DH / W + 12) < DH ? left : 0;  // a reduction costs about 12 instructions
    }
}

/// Scores of one strip of kRows rows against keys [0, nkv) (nkv = N rounded up to W): the whole
/// key vectors from the panels bt, and the `lone` keys of the last vector (see lone_keys) as dot
/// products of the A rows with the key rows b (stride ldb); the rest of that vector is set to 0.
template <class T, int DH>
inline void strip_scores(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* bt, const T* b,
                         std::ptrdiff_t ldb, int nkv, int lone, int kd, int dhp) {
    using Sd = Simd<T>;
    constexpr int MR = Tiling<T>::kRows, W = Sd::width;
    if (lone == 0) {
        strip_nt<T, DH>(c, ldc, a, lda, bt, nkv, kd, dhp);
        return;
    }
    const int full = nkv - W;
    if (full > 0) strip_nt<T, DH>(c, ldc, a, lda, bt, full, kd, dhp);
    for (int r = 0; r < MR; ++r) std::fill(c + r * ldc + full + lone, c + r * ldc + nkv, T(0));
    for (int t = 0; t < lone; ++t) {
        const T* bj = b + (full + t) * ldb;
        typename Sd::V acc[MR];
        for (int r = 0; r < MR; ++r) acc[r] = Sd::splat(T(0));
        for (int d = 0; d < kd; d += W) {
            const auto bv = Sd::load(bj + d);
#pragma GCC unroll 16
            for (int r = 0; r < MR; ++r) acc[r] = Sd::fma(Sd::load(a + r * lda + d), bv, acc[r]);
        }
        for (int r = 0; r < MR; ++r) c[r * ldc + full + t] = Sd::sum(acc[r]);
    }
}

/// C (rows, dhp) (+)= A (rows, kd) * B (kd, dhp), A(r, k) as in kernel_nn; rows a multiple of
/// kRowsKey when TRANS_A and of kRows otherwise, dhp of W. DHP > 0: dhp known at compile time.
template <class T, bool TRANS_A, bool ZERO, int DHP>
inline void gemm_nn(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* b, std::ptrdiff_t ldb, int rows,
                    int dhp_runtime, int kd) {
    using G = Tiling<T>;
    constexpr int MR = TRANS_A ? G::kRowsKey : G::kRows, CV = TRANS_A ? G::kColVecsKey : G::kColVecs, W = G::W;
    const int dhp = DHP > 0 ? DHP : dhp_runtime;
    for (int r = 0; r < rows; r += MR) {
        T* cr = c + r * ldc;
        const T* ar = TRANS_A ? a + r : a + r * lda;
        int j = 0;
        for (; j + CV * W <= dhp; j += CV * W) kernel_nn<T, MR, CV, TRANS_A, ZERO>(cr + j, ldc, ar, lda, b + j, ldb, kd);
        // Remaining 1 .. CV-1 vectors, in chunks of 2 and 1.
        if constexpr (CV > 2) {
            for (; j + 2 * W <= dhp; j += 2 * W) kernel_nn<T, MR, 2, TRANS_A, ZERO>(cr + j, ldc, ar, lda, b + j, ldb, kd);
        }
        for (; j < dhp; j += W) kernel_nn<T, MR, 1, TRANS_A, ZERO>(cr + j, ldc, ar, lda, b + j, ldb, kd);
    }
}

/// Rows [0, rows) of C (rows, dhp) = A^T B for one strip of keys: A(r, k) = a[k * lda + r] for
/// r < rows (columns of P or dS), B (kd, dhp) with row stride ldb, k < kd. Register tiles of 24
/// accumulators (6 rows x 4 vectors, 12 x 2, 12 x 1, by the vectors left); rows past a whole tile
/// go in chunks of 4, 2 and 1, so no column of A at or past `rows` is read.
template <class T, int DHP>
inline void key_strip_product(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* b, std::ptrdiff_t ldb,
                              int rows, int dhp_runtime, int kd) {
    constexpr int W = Simd<T>::width;
    const int dhp = DHP > 0 ? DHP : dhp_runtime;
    int j = 0;
    const auto columns = [&](auto cv, auto mr) {
        constexpr int CV = decltype(cv)::value, MR = decltype(mr)::value;
        int r = 0;
        for (; r + MR <= rows; r += MR) kernel_nn<T, MR, CV, true, true>(c + r * ldc + j, ldc, a + r, lda, b + j, ldb, kd);
        for (; r + 4 <= rows; r += 4) kernel_nn<T, 4, CV, true, true>(c + r * ldc + j, ldc, a + r, lda, b + j, ldb, kd);
        for (; r + 2 <= rows; r += 2) kernel_nn<T, 2, CV, true, true>(c + r * ldc + j, ldc, a + r, lda, b + j, ldb, kd);
        if (r < rows) kernel_nn<T, 1, CV, true, true>(c + r * ldc + j, ldc, a + r, lda, b + j, ldb, kd);
        j += CV * W;
    };
    while (j < dhp) {
        const int left = (dhp - j) / W;
        if (left >= 4)
            columns(std::integral_constant<int, 4>{}, std::integral_constant<int, 6>{});
        else if (left >= 2)
            columns(std::integral_constant<int, 2>{}, std::integral_constant<int, 12>{});
        else
            columns(std::integral_constant<int, 1>{}, std::integral_constant<int, 12>{});
    }
}

enum class RowOp { copy, scale, add };

/// dst[0, n) = src[0, n) (copy), = src[0, n) * factor (scale), or += src[0, n) (add); vectorised.
template <RowOp OP, class T>
inline void row_op(T* dst, const T* src, int n, T factor = T(1)) {
    using Sd = Simd<T>;
    constexpr int W = Sd::width;
    const auto vf = Sd::splat(factor);
    const auto apply = [&](auto d, auto s) {
        if constexpr (OP == RowOp::copy) return s;
        else if constexpr (OP == RowOp::scale) return s * vf;
        else return d + s;
    };
    int i = 0;
    for (; i + W <= n; i += W) Sd::store(dst + i, apply(Sd::load(dst + i), Sd::load(src + i)));
    for (; i < n; ++i) {
        if constexpr (OP == RowOp::copy) dst[i] = src[i];
        else if constexpr (OP == RowOp::scale) dst[i] = src[i] * factor;
        else dst[i] += src[i];
    }
}

/// a[0, n) . b[0, n), vectorised.
template <class T>
inline T dot(const T* a, const T* b, int n) {
    using Sd = Simd<T>;
    constexpr int W = Sd::width;
    auto acc = Sd::splat(T(0));
    int i = 0;
    for (; i + W <= n; i += W) acc = Sd::fma(Sd::load(a + i), Sd::load(b + i), acc);
    T sum = Sd::sum(acc);
    for (; i < n; ++i) sum += a[i] * b[i];
    return sum;
}

/// Copies `rows` rows of width dh (source row stride lds) into dst (padded_rows, dhp), zero
/// padding the columns [dh, dhp) and the rows [rows, padded_rows). DH > 0: dh known at compile time.
template <class T, int DH>
inline void pack_rows(T* dst, int dhp, const T* src, std::ptrdiff_t lds, int rows, int padded_rows, int dh_runtime) {
    const int dh = DH > 0 ? DH : dh_runtime;
    for (int i = 0; i < rows; ++i) {
        T* d = dst + static_cast<std::ptrdiff_t>(i) * dhp;
        row_op<RowOp::copy>(d, src + i * lds, dh);
        std::fill(d + dh, d + dhp, T(0));
    }
    std::fill(dst + static_cast<std::ptrdiff_t>(rows) * dhp, dst + static_cast<std::ptrdiff_t>(padded_rows) * dhp, T(0));
}

/// Scalar version of pack_panels (every T and ISA; the reference the tests compare with).
template <class T>
inline void pack_panels_scalar(T* dst, int dhp, const T* src, std::ptrdiff_t lds, int rows, int padded_rows, int dh) {
    constexpr int W = Simd<T>::width;
    for (int j = 0; j < padded_rows; ++j) {
        T* col = dst + (static_cast<std::ptrdiff_t>(j / W) * dhp) * W + j % W;
        const T* row = src + j * lds;
        const int valid = j < rows ? dh : 0;
        for (int d = 0; d < valid; ++d) col[d * W] = row[d];
        for (int d = valid; d < dhp; ++d) col[d * W] = T(0);
    }
}

#if !defined(SIMMIM_NO_SIMD) && !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE) && defined(__AVX512F__)
inline constexpr bool kPanelTranspose = true;

/// In-register transpose of a 16 x 16 float block (r[i] = row i on entry, column i on exit).
inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // After this, r[4i + c] holds, in 128-bit lane L, column 4L + c of rows 4i .. 4i + 3.
    for (int i = 0; i < 4; ++i) {
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int c = 0; c < 4; ++c) {
        const __m512 u0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88), u1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
        const __m512 u2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88), u3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
        t[c] = _mm512_shuffle_f32x4(u0, u2, 0x88);
        t[8 + c] = _mm512_shuffle_f32x4(u0, u2, 0xdd);
        t[4 + c] = _mm512_shuffle_f32x4(u1, u3, 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(u1, u3, 0xdd);
    }
    for (int i = 0; i < 16; ++i) r[i] = t[i];
}
#else
inline constexpr bool kPanelTranspose = false;
#endif

/// Writes the transpose of `rows` rows of width dh (source row stride lds) as panels of W
/// columns: dst holds the (dhp, padded_rows) matrix, zero outside (dh, rows). padded_rows is a
/// multiple of W. Float with AVX-512: 16 x 16 register transposes; otherwise pack_panels_scalar.
template <class T, int DH>
inline void pack_panels(T* dst, int dhp, const T* src, std::ptrdiff_t lds, int rows, int padded_rows, int dh_runtime) {
    const int dh = DH > 0 ? DH : dh_runtime;
#if !defined(SIMMIM_NO_SIMD) && !defined(XSIMD_NO_SUPPORTED_ARCHITECTURE) && defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float> && Simd<T>::width == 16) {
        __m512 r[16];
        for (int p = 0; p < padded_rows; p += 16) {
            const int valid_rows = std::clamp(rows - p, 0, 16);
            for (int d0 = 0; d0 < dhp; d0 += 16) {
                const int valid_cols = std::clamp(dh - d0, 0, 16);
                const __mmask16 mask = static_cast<__mmask16>((1u << valid_cols) - 1u);
                for (int i = 0; i < 16; ++i) {
                    const float* row = src + (p + i) * lds + d0;
                    if (i >= valid_rows || valid_cols == 0)
                        r[i] = _mm512_setzero_ps();
                    else if (valid_cols == 16)
                        r[i] = _mm512_loadu_ps(row);
                    else
                        r[i] = _mm512_maskz_loadu_ps(mask, row);
                }
                transpose16(r);
                float* out = dst + (static_cast<std::ptrdiff_t>(p / 16) * dhp + d0) * 16;
                for (int i = 0; i < 16; ++i) _mm512_storeu_ps(out + i * 16, r[i]);
            }
        }
        return;
    }
#endif
    pack_panels_scalar(dst, dhp, src, lds, rows, padded_rows, dh);
}

/// Sets columns [valid, cols) of a (rows, cols) tile to -inf, so that exp() maps them to 0.
template <class T>
inline void mask_key_padding(T* s, std::ptrdiff_t lds, int rows, int valid, int cols) {
    if (valid == cols) return;
    for (int r = 0; r < rows; ++r) std::fill(s + r * lds + valid, s + r * lds + cols, -std::numeric_limits<T>::infinity());
}

/// Per-call scratch: `threads` regions of `per_thread` elements, 64-byte aligned, carved out of a
/// buffer that each calling thread keeps between calls (grown when too small, freed at thread
/// exit). Contents are uninitialised.
template <class T>
class Scratch {
public:
    Scratch(int threads, std::size_t per_thread) : stride_(aligned(per_thread)) {
        const std::size_t need = stride_ * static_cast<std::size_t>(threads) + kAlign;
        Cache& cache = thread_cache();
        if (cache.size < need) {
            cache.storage.reset();  // release first: the peak holds only one buffer
            cache.storage.reset(new T[need]);
            cache.size = need;
        }
        void* p = cache.storage.get();
        std::size_t space = need * sizeof(T);
        base_ = static_cast<T*>(std::align(64, sizeof(T), p, space));
    }
    T* region(int thread) const { return base_ + stride_ * static_cast<std::size_t>(thread); }
    /// Elements a buffer of n elements occupies, keeping the next one 64-byte aligned.
    static std::size_t aligned(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

private:
    struct Cache {
        std::unique_ptr<T[]> storage;
        std::size_t size = 0;
    };
    static Cache& thread_cache() {
        thread_local Cache cache;
        return cache;
    }
    static constexpr std::size_t kAlign = 64 / sizeof(T);
    std::size_t stride_;
    T* base_ = nullptr;
};

/// Hands out consecutive aligned buffers from one thread's region.
template <class T>
class Carver {
public:
    explicit Carver(T* base) : next_(base) {}
    T* take(std::size_t n) {
        T* p = next_;
        next_ += Scratch<T>::aligned(n);
        return p;
    }

private:
    T* next_;
};

struct Shape {
    int B, N, H, Dh;
    std::ptrdiff_t D() const { return static_cast<std::ptrdiff_t>(H) * Dh; }
};

struct NamedTensor {
    const void* data;
    const char* name;
};

inline void validate(const char* fn, const Shape& s, std::initializer_list<NamedTensor> tensors) {
    const auto where = std::string("simmim::ops::") + fn + ": ";
    const auto dims = "B=" + std::to_string(s.B) + " N=" + std::to_string(s.N) + " H=" + std::to_string(s.H) +
                      " Dh=" + std::to_string(s.Dh);
    if (s.B <= 0 || s.N <= 0 || s.H <= 0 || s.Dh <= 0)
        throw std::runtime_error(where + "expected B, N, H, Dh > 0, found " + dims);
    // Tensor offsets are std::ptrdiff_t; offsets inside one head's padded scratch are int.
    const double elements = 3.0 * s.B * s.N * s.H * s.Dh;
    const double head_scratch = (s.N + 64.0) * (s.Dh + 64.0);
    if (elements > 0x1p52 || head_scratch > static_cast<double>(std::numeric_limits<int>::max()))
        throw std::runtime_error(where + "shape too large to index: " + dims);
    for (const auto& t : tensors)
        if (t.data == nullptr) throw std::runtime_error(where + "tensor '" + t.name + "' is null");
}

inline int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/// Rows of a (rows, Dh) operand: straight from the input (DH > 0, whose rows are whole vectors)
/// or from a zero-padded copy (DH = 0).
template <class T>
struct RowView {
    const T* data;
    std::ptrdiff_t ld;
};

/// A view of `rows` input rows (stride lds) a kernel may read as whole vectors of dhp columns:
/// the input itself when DH > 0, else a padded copy in `copy` (rows x dhp).
template <class T, int DH>
inline RowView<T> vector_rows(const T* src, std::ptrdiff_t lds, int rows, int dhp, int dh, T* copy) {
    if constexpr (DH > 0) {
        return {src, lds};
    } else {
        pack_rows<T, DH>(copy, dhp, src, lds, rows, rows, dh);
        return {copy, dhp};
    }
}

/// Strip operand: rows [r0, r0 + kRows) of `rows_total` input rows (stride lds), read as
/// broadcasts of the first kd columns. A full strip is read in place; the last, partial one is
/// copied into `tail` (kRows x dhp) with zero rows below.
template <class T, int DH>
inline RowView<T> strip_rows(const T* src, std::ptrdiff_t lds, int r0, int rows_total, int dhp, int dh, T* tail) {
    constexpr int MR = Tiling<T>::kRows;
    const int rows = std::min(MR, rows_total - r0);
    if (rows == MR) return {src + r0 * lds, lds};
    pack_rows<T, DH>(tail, dhp, src + r0 * lds, lds, rows, MR, dh);
    return {tail, dhp};
}

/// lse[i] = m[i] + log(l[i]) for i < n, vectorised.
template <class T>
inline void log_sum_exp(T* lse, const T* m, const T* l, int n) {
    using Sd = Simd<T>;
    constexpr int W = Sd::width;
    int i = 0;
    for (; i + W <= n; i += W) Sd::store(lse + i, Sd::load(m + i) + Sd::log(Sd::load(l + i)));
    for (; i < n; ++i) lse[i] = m[i] + std::log(l[i]);
}

/// C (rows, cols) = A (rows, kd) * Bt (kd, cols) in strips of kRows rows (rows a multiple of kRows).
template <class T, int DH>
inline void gemm_nt(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* bt, int rows, int cols, int kd,
                    int dhp) {
    constexpr int MR = Tiling<T>::kRows;
    for (int r = 0; r < rows; r += MR) strip_nt<T, DH>(c + r * ldc, ldc, a + r * lda, lda, bt, cols, kd, dhp);
}

// ---------------------------------------------------------------------------------------------
// Single key tile (N <= kMaxKeyTile)

template <class T>
std::size_t forward_single_scratch(const Shape& s) {
    using G = Tiling<T>;
    using Sc = Scratch<T>;
    const std::size_t dhp = static_cast<std::size_t>(G::padded_dh(s.Dh));
    const std::size_t nk = static_cast<std::size_t>(round_up(s.N, G::W));
    const std::size_t mr = G::kRows;
    return Sc::aligned(dhp * nk) + Sc::aligned(nk * dhp) + Sc::aligned(mr * dhp) + Sc::aligned(mr * nk) +
           Sc::aligned(mr * dhp) + 2 * Sc::aligned(nk);
}

/// One (b, h) head, N <= kMaxKeyTile: per strip of kRows queries, S = Q K^T over all keys,
/// P = exp(S * scale - m) with m the row maximum, out = (P V) / rowsum(P); lse = m + log(rowsum).
template <class T, int DH>
void forward_head_single(T* out, T* lse, const T* qkv, const Shape& s, int b, int h, T* scratch) {
    using G = Tiling<T>;
    using Sd = Simd<T>;
    using V = typename Sd::V;
    constexpr int W = G::W, MR = G::kRows;
    constexpr int DHP = DH > 0 ? G::padded_dh(DH) : 0;
    const int N = s.N, Dh = DH > 0 ? DH : s.Dh;
    const int dhp = G::padded_dh(Dh);
    const int nk = round_up(N, W);  // keys padded to whole vectors
    const int last = nk - W;        // the last key vector, the only one that may hold padding
    const int lone = lone_keys<T, DH>(N);
    const std::ptrdiff_t D = s.D(), row3 = 3 * D;
    const T scale = T(1) / std::sqrt(T(Dh));
    const T neg_inf = -std::numeric_limits<T>::infinity();
    const T* q_head = qkv + static_cast<std::ptrdiff_t>(b) * N * row3 + h * Dh;  // q of (b, 0, h)
    T* out_head = out + static_cast<std::ptrdiff_t>(b) * N * D + h * Dh;

    Carver<T> carve(scratch);
    T* kt = carve.take(static_cast<std::size_t>(dhp) * nk);    // (dhp, nk)  K^T in panels
    T* v_copy = carve.take(static_cast<std::size_t>(nk) * dhp);// (N, dhp)   V, DH = 0 only
    T* q_tail = carve.take(static_cast<std::size_t>(MR) * dhp);// (MR, dhp)  last partial query strip
    T* sst = carve.take(static_cast<std::size_t>(MR) * nk);    // (MR, nk)   scores, then P
    T* otile = carve.take(static_cast<std::size_t>(MR) * dhp); // (MR, dhp)  P V of the strip
    T* row_max = carve.take(nk);                               // (N)        m
    T* row_sum = carve.take(nk);                               // (N)        l
    pack_panels<T, DH>(kt, dhp, q_head + D, row3, N, nk, Dh);
    const RowView<T> v = vector_rows<T, DH>(q_head + 2 * D, row3, N, dhp, Dh, v_copy);

    const V vscale = Sd::splat(scale);
    for (int r0 = 0; r0 < N; r0 += MR) {
        const int rows = std::min(MR, N - r0);
        const RowView<T> q = strip_rows<T, DH>(q_head, row3, r0, N, dhp, Dh, q_tail);
        strip_scores<T, DH>(sst, nk, q.data, q.ld, kt, q_head + D, row3, nk, lone, Dh, dhp);
        // Rows past N (zero queries) keep their finite scores; their outputs are dropped.
        for (int r = 0; r < rows; ++r) {
            T* sr = sst + r * nk;
            const V tail = Sd::keep_first(Sd::load(sr + last), N - last, neg_inf);
            V vmax = tail;
            for (int j = 0; j < last; j += W) vmax = Sd::max(vmax, Sd::load(sr + j));
            const T m = Sd::max_element(vmax) * scale;
            const V neg_m = Sd::splat(-m);
            V vsum = Sd::exp(Sd::fma(tail, vscale, neg_m));
            Sd::store(sr + last, vsum);
            for (int j = 0; j < last; j += W) {
                const V p = Sd::exp(Sd::fma(Sd::load(sr + j), vscale, neg_m));
                Sd::store(sr + j, p);
                vsum = vsum + p;
            }
            row_max[r0 + r] = m;
            row_sum[r0 + r] = Sd::sum(vsum);
        }
        gemm_nn<T, false, true, DHP>(otile, dhp, sst, nk, v.data, v.ld, MR, dhp, N);
        for (int r = 0; r < rows; ++r)
            row_op<RowOp::scale>(out_head + (r0 + r) * D, otile + r * dhp, Dh, T(1) / row_sum[r0 + r]);
    }
    log_sum_exp(lse + (static_cast<std::ptrdiff_t>(b) * s.H + h) * N, row_max, row_sum, N);
}

template <class T>
std::size_t backward_single_scratch(const Shape& s) {
    using G = Tiling<T>;
    using Sc = Scratch<T>;
    const std::size_t dhp = static_cast<std::size_t>(G::padded_dh(s.Dh));
    const std::size_t nq = static_cast<std::size_t>(round_up(s.N, G::kRows));
    const std::size_t nk = static_cast<std::size_t>(round_up(s.N, G::kKeyUnit));
    const std::size_t mr = G::kRows, tile_rows = std::max(G::kRows, G::kKeyStrip);
    return 2 * Sc::aligned(dhp * nk) + 3 * Sc::aligned(static_cast<std::size_t>(s.N) * dhp) +
           2 * Sc::aligned(mr * dhp) + 2 * Sc::aligned(nq * nk) + Sc::aligned(mr * nk) + Sc::aligned(tile_rows * dhp);
}

/// One (b, h) head of the backward pass, N <= kMaxKeyTile, accumulating into dqkv. Per strip of
/// kRows queries: P = exp(S * scale - lse), dP = dO V^T, dS = P * (dP - D) * scale with
/// D_i = sum_j P_ij dP_ij (equal to dO_i . out_i, without reading out), dQ = dS K (added to dqkv);
/// then dV = P^T dO and dK = dS^T Q over the kept P and dS of the head.
template <class T, int DH>
void backward_head_single(T* dqkv, const T* dout, const T* qkv, const T* lse, const Shape& s, int b, int h,
                          T* scratch) {
    using G = Tiling<T>;
    using Sd = Simd<T>;
    using V = typename Sd::V;
    constexpr int W = G::W, MR = G::kRows, KS = G::kKeyStrip;
    constexpr int DHP = DH > 0 ? G::padded_dh(DH) : 0;
    const int N = s.N, Dh = DH > 0 ? DH : s.Dh;
    const int dhp = G::padded_dh(Dh);
    const int nq = round_up(N, MR);          // rows of P and dS
    const int nk = round_up(N, W);           // columns of P and dS (keys padded to whole vectors)
    const int lone = lone_keys<T, DH>(N);
    const std::ptrdiff_t D = s.D(), row3 = 3 * D;
    const T scale = T(1) / std::sqrt(T(Dh));
    const T neg_inf = -std::numeric_limits<T>::infinity();
    const std::ptrdiff_t qkv_head = static_cast<std::ptrdiff_t>(b) * N * row3 + h * Dh;  // q of (b, 0, h)
    const std::ptrdiff_t out_head = static_cast<std::ptrdiff_t>(b) * N * D + h * Dh;      // (b, 0, h) in out
    const T* lse_head = lse + (static_cast<std::ptrdiff_t>(b) * s.H + h) * N;
    T* dq_head = dqkv + qkv_head;

    Carver<T> carve(scratch);
    T* kt = carve.take(static_cast<std::size_t>(dhp) * nk);     // (dhp, nk)  K^T in panels
    T* vt = carve.take(static_cast<std::size_t>(dhp) * nk);     // (dhp, nk)  V^T in panels
    T* q_copy = carve.take(static_cast<std::size_t>(N) * dhp);  // (N, dhp)   Q, K, dO: DH = 0 only
    T* k_copy = carve.take(static_cast<std::size_t>(N) * dhp);
    T* do_copy = carve.take(static_cast<std::size_t>(N) * dhp);
    T* q_tail = carve.take(static_cast<std::size_t>(MR) * dhp); // (MR, dhp)  last partial strips
    T* do_tail = carve.take(static_cast<std::size_t>(MR) * dhp);
    T* pbuf = carve.take(static_cast<std::size_t>(nq) * nk);    // (nq, nk)   P
    T* dsbuf = carve.take(static_cast<std::size_t>(nq) * nk);   // (nq, nk)   dS
    T* dpst = carve.take(static_cast<std::size_t>(MR) * nk);    // (MR, nk)   dP of one strip
    T* tile = carve.take(static_cast<std::size_t>(std::max(MR, KS)) * dhp);

    pack_panels<T, DH>(kt, dhp, qkv + qkv_head + D, row3, N, nk, Dh);
    pack_panels<T, DH>(vt, dhp, qkv + qkv_head + 2 * D, row3, N, nk, Dh);
    const RowView<T> qv = vector_rows<T, DH>(qkv + qkv_head, row3, N, dhp, Dh, q_copy);
    const RowView<T> kv = vector_rows<T, DH>(qkv + qkv_head + D, row3, N, dhp, Dh, k_copy);
    const RowView<T> dov = vector_rows<T, DH>(dout + out_head, D, N, dhp, Dh, do_copy);

    const V vscale = Sd::splat(scale);
    for (int r0 = 0; r0 < N; r0 += MR) {
        const int rows = std::min(MR, N - r0);
        const RowView<T> qa = strip_rows<T, DH>(qv.data, qv.ld, r0, N, dhp, Dh, q_tail);
        const RowView<T> doa = strip_rows<T, DH>(dov.data, dov.ld, r0, N, dhp, Dh, do_tail);
        T* p0 = pbuf + static_cast<std::ptrdiff_t>(r0) * nk;
        T* ds0 = dsbuf + static_cast<std::ptrdiff_t>(r0) * nk;
        strip_scores<T, DH>(p0, nk, qa.data, qa.ld, kt, kv.data, kv.ld, nk, lone, Dh, dhp);
        strip_scores<T, DH>(dpst, nk, doa.data, doa.ld, vt, qkv + qkv_head + 2 * D, row3, nk, lone, Dh, dhp);
        for (int r = 0; r < MR; ++r) {
            T* pr = p0 + r * nk;
            T* dsr = ds0 + r * nk;
            if (r >= rows) {  // rows past N: zero, so that the dQ strip product stays finite
                std::fill(pr, pr + nk, T(0));
                std::fill(dsr, dsr + nk, T(0));
                continue;
            }
            const T* dpr = dpst + r * nk;
            const V neg_lse = Sd::splat(-lse_head[r0 + r]);
            V pdp = Sd::splat(T(0));
            for (int j = 0; j < nk; j += W) {
                V x = Sd::load(pr + j);
                if (j + W > N) x = Sd::keep_first(x, N - j, neg_inf);
                const V p = Sd::exp(Sd::fma(x, vscale, neg_lse));
                Sd::store(pr + j, p);
                pdp = Sd::fma(p, Sd::load(dpr + j), pdp);
            }
            // D_i = dO_i . out_i = sum_j P_ij dP_ij (out_i = sum_j P_ij v_j): from the strip, not from out.
            const V neg_delta = Sd::splat(-Sd::sum(pdp));
            for (int j = 0; j < nk; j += W) Sd::store(dsr + j, Sd::load(pr + j) * (Sd::load(dpr + j) + neg_delta) * vscale);
        }
        // dQ (strip) = dS K over the valid keys
        gemm_nn<T, false, true, DHP>(tile, dhp, ds0, nk, kv.data, kv.ld, MR, dhp, N);
        for (int r = 0; r < rows; ++r) row_op<RowOp::add>(dq_head + (r0 + r) * row3, tile + r * dhp, Dh);
    }
    // dV = P^T dO, dK = dS^T Q, KS keys at a time, over the valid queries
    for (int k0 = 0; k0 < N; k0 += KS) {
        const int rows = std::min(KS, N - k0);
        key_strip_product<T, DHP>(tile, dhp, pbuf + k0, nk, dov.data, dov.ld, rows, dhp, N);
        for (int r = 0; r < rows; ++r) row_op<RowOp::add>(dq_head + (k0 + r) * row3 + 2 * D, tile + r * dhp, Dh);
        key_strip_product<T, DHP>(tile, dhp, dsbuf + k0, nk, qv.data, qv.ld, rows, dhp, N);
        for (int r = 0; r < rows; ++r) row_op<RowOp::add>(dq_head + (k0 + r) * row3 + D, tile + r * dhp, Dh);
    }
}

// ---------------------------------------------------------------------------------------------
// Key tiles (N > kMaxKeyTile)

template <class T>
std::size_t forward_tiled_scratch(const Shape& s) {
    using G = Tiling<T>;
    using Sc = Scratch<T>;
    const std::size_t dhp = static_cast<std::size_t>(G::padded_dh(s.Dh));
    const std::size_t nk = static_cast<std::size_t>(round_up(s.N, G::kKeyUnit));
    const std::size_t bq = G::kBlockQ, bk = static_cast<std::size_t>(G::key_tile(s.N));
    return Sc::aligned(dhp * nk) + Sc::aligned(nk * dhp) + Sc::aligned(bq * dhp) + Sc::aligned(bq * bk) +
           Sc::aligned(bq * dhp) + 2 * Sc::aligned(bq);
}

/// One (b, h) head of the forward pass, N > kMaxKeyTile: blocks of kBlockQ queries walk the key
/// tiles with an online softmax.
template <class T, int DH>
void forward_head_tiled(T* out, T* lse, const T* qkv, const Shape& s, int b, int h, T* scratch) {
    using G = Tiling<T>;
    using Sd = Simd<T>;
    using V = typename Sd::V;
    constexpr int W = G::W, BQ = G::kBlockQ;
    constexpr int DHP = DH > 0 ? G::padded_dh(DH) : 0;
    const int N = s.N, Dh = DH > 0 ? DH : s.Dh;
    const int dhp = G::padded_dh(Dh);
    const int nk = round_up(N, G::kKeyUnit);  // padded key count
    const int BK = G::key_tile(N);
    const std::ptrdiff_t D = s.D(), row3 = 3 * D;
    const T scale = T(1) / std::sqrt(T(Dh));
    const T neg_inf = -std::numeric_limits<T>::infinity();
    const T* q_head = qkv + static_cast<std::ptrdiff_t>(b) * N * row3 + h * Dh;  // q of (b, 0, h)

    Carver<T> carve(scratch);
    T* kt = carve.take(static_cast<std::size_t>(dhp) * nk);    // (dhp, nk)  K^T in panels
    T* vp = carve.take(static_cast<std::size_t>(nk) * dhp);    // (nk, dhp)  V
    T* qblk = carve.take(static_cast<std::size_t>(BQ) * dhp);  // (BQ, dhp)  one query block
    T* sblk = carve.take(static_cast<std::size_t>(BQ) * BK);   // (BQ, BK)   scores, then P
    T* oacc = carve.take(static_cast<std::size_t>(BQ) * dhp);  // (BQ, dhp)  unnormalised output
    T* row_max = carve.take(BQ);                               // (BQ)       running max m
    T* row_sum = carve.take(BQ);                               // (BQ)       running sum l
    pack_panels<T, DH>(kt, dhp, q_head + D, row3, N, nk, Dh);
    pack_rows<T, DH>(vp, dhp, q_head + 2 * D, row3, N, nk, Dh);

    const V vscale = Sd::splat(scale);
    for (int i0 = 0; i0 < N; i0 += BQ) {
        const int valid_q = std::min(BQ, N - i0);
        const int bq = round_up(valid_q, G::kRows);
        pack_rows<T, DH>(qblk, dhp, q_head + i0 * row3, row3, valid_q, bq, Dh);
        std::fill(row_max, row_max + bq, neg_inf);
        std::fill(row_sum, row_sum + bq, T(0));

        for (int j0 = 0; j0 < N; j0 += BK) {
            const int valid_k = std::min(BK, N - j0);
            const int bk = std::min(BK, nk - j0);
            gemm_nt<T, DH>(sblk, BK, qblk, dhp, kt + static_cast<std::ptrdiff_t>(j0) * dhp, bq, bk, Dh, dhp);
            mask_key_padding(sblk, BK, bq, valid_k, bk);
            // Online softmax per row: m_new = max(m, max_j s_j * scale), P = exp(s*scale - m_new),
            // l = l * exp(m - m_new) + sum P, O *= exp(m - m_new) (nothing to rescale on the first tile).
            for (int r = 0; r < bq; ++r) {
                T* sr = sblk + r * BK;
                V vmax = Sd::splat(neg_inf);
                for (int j = 0; j < bk; j += W) vmax = Sd::max(vmax, Sd::load(sr + j));
                const T m_new = std::max(row_max[r], Sd::max_element(vmax) * scale);
                const V neg_m = Sd::splat(-m_new);
                V vsum = Sd::splat(T(0));
                for (int j = 0; j < bk; j += W) {
                    const V p = Sd::exp(Sd::fma(Sd::load(sr + j), vscale, neg_m));
                    Sd::store(sr + j, p);
                    vsum = vsum + p;
                }
                if (j0 > 0) {
                    const T alpha = std::exp(row_max[r] - m_new);
                    row_sum[r] *= alpha;
                    T* orow = oacc + r * dhp;
                    const V va = Sd::splat(alpha);
                    for (int d = 0; d < dhp; d += W) Sd::store(orow + d, Sd::load(orow + d) * va);
                }
                row_sum[r] += Sd::sum(vsum);
                row_max[r] = m_new;
            }
            // O (+)= P V over the valid keys only (P is 0 on the padding); the first tile overwrites O.
            const T* v_blk = vp + static_cast<std::ptrdiff_t>(j0) * dhp;
            if (j0 == 0)
                gemm_nn<T, false, true, DHP>(oacc, dhp, sblk, BK, v_blk, dhp, bq, dhp, valid_k);
            else
                gemm_nn<T, false, false, DHP>(oacc, dhp, sblk, BK, v_blk, dhp, bq, dhp, valid_k);
        }

        for (int r = 0; r < valid_q; ++r) {
            const int i = i0 + r;
            T* out_row = out + (static_cast<std::ptrdiff_t>(b) * N + i) * D + h * Dh;
            row_op<RowOp::scale>(out_row, oacc + r * dhp, Dh, T(1) / row_sum[r]);
        }
        log_sum_exp(lse + (static_cast<std::ptrdiff_t>(b) * s.H + h) * N + i0, row_max, row_sum, valid_q);
    }
}

template <class T>
std::size_t backward_tiled_scratch(const Shape& s) {
    using G = Tiling<T>;
    using Sc = Scratch<T>;
    const std::size_t dhp = static_cast<std::size_t>(G::padded_dh(s.Dh));
    const std::size_t nq = static_cast<std::size_t>(round_up(s.N, G::kRows));
    const std::size_t nk = static_cast<std::size_t>(round_up(s.N, G::kKeyUnit));
    const std::size_t tile = static_cast<std::size_t>(G::kBlockQ) * G::key_tile(s.N);
    return 3 * Sc::aligned(nq * dhp) + 5 * Sc::aligned(nk * dhp) + 2 * Sc::aligned(nq) + 2 * Sc::aligned(tile);
}

/// One (b, h) head of the backward pass, N > kMaxKeyTile, accumulating into dqkv.
template <class T, int DH>
void backward_head_tiled(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, const Shape& s, int b, int h,
                         T* scratch) {
    using G = Tiling<T>;
    using Sd = Simd<T>;
    using V = typename Sd::V;
    constexpr int W = G::W, BQ = G::kBlockQ;
    constexpr int DHP = DH > 0 ? G::padded_dh(DH) : 0;
    const int N = s.N, Dh = DH > 0 ? DH : s.Dh;
    const int dhp = G::padded_dh(Dh);
    const int nq = round_up(N, G::kRows);     // padded query count
    const int nk = round_up(N, G::kKeyUnit);  // padded key count
    const int BK = G::key_tile(N);
    const std::ptrdiff_t D = s.D(), row3 = 3 * D;
    const T scale = T(1) / std::sqrt(T(Dh));
    const std::ptrdiff_t qkv_head = static_cast<std::ptrdiff_t>(b) * N * row3 + h * Dh;  // q of (b, 0, h)
    const std::ptrdiff_t out_head = static_cast<std::ptrdiff_t>(b) * N * D + h * Dh;      // (b, 0, h) in out
    const T* lse_head = lse + (static_cast<std::ptrdiff_t>(b) * s.H + h) * N;

    Carver<T> carve(scratch);
    T* qp = carve.take(static_cast<std::size_t>(nq) * dhp);    // (nq, dhp)  Q
    T* dop = carve.take(static_cast<std::size_t>(nq) * dhp);   // (nq, dhp)  dO
    T* kp = carve.take(static_cast<std::size_t>(nk) * dhp);    // (nk, dhp)  K
    T* kt = carve.take(static_cast<std::size_t>(dhp) * nk);    // (dhp, nk)  K^T in panels
    T* vt = carve.take(static_cast<std::size_t>(dhp) * nk);    // (dhp, nk)  V^T in panels
    T* dq = carve.take(static_cast<std::size_t>(nq) * dhp);    // (nq, dhp)
    T* dk = carve.take(static_cast<std::size_t>(nk) * dhp);    // (nk, dhp)
    T* dv = carve.take(static_cast<std::size_t>(nk) * dhp);    // (nk, dhp)
    T* lse_p = carve.take(nq);                                 // (nq)  +inf on padding: P = 0 there
    T* delta = carve.take(nq);                                 // (nq)  D_i = dO_i . O_i
    T* pblk = carve.take(static_cast<std::size_t>(BQ) * BK);   // (BQ, BK)  P, then dS
    T* dpblk = carve.take(static_cast<std::size_t>(BQ) * BK);  // (BQ, BK)  dP

    pack_rows<T, DH>(qp, dhp, qkv + qkv_head, row3, N, nq, Dh);
    pack_rows<T, DH>(dop, dhp, dout + out_head, D, N, nq, Dh);
    pack_rows<T, DH>(kp, dhp, qkv + qkv_head + D, row3, N, nk, Dh);
    pack_panels<T, DH>(kt, dhp, qkv + qkv_head + D, row3, N, nk, Dh);
    pack_panels<T, DH>(vt, dhp, qkv + qkv_head + 2 * D, row3, N, nk, Dh);
    std::fill(dq, dq + static_cast<std::ptrdiff_t>(nq) * dhp, T(0));
    std::fill(dk, dk + static_cast<std::ptrdiff_t>(nk) * dhp, T(0));
    std::fill(dv, dv + static_cast<std::ptrdiff_t>(nk) * dhp, T(0));
    for (int i = 0; i < nq; ++i) {
        delta[i] = i < N ? dot(dout + out_head + i * D, out + out_head + i * D, Dh) : T(0);
        lse_p[i] = i < N ? lse_head[i] : std::numeric_limits<T>::infinity();
    }

    const V vscale = Sd::splat(scale);
    for (int j0 = 0; j0 < N; j0 += BK) {
        const int valid_k = std::min(BK, N - j0);
        const int bk = std::min(BK, nk - j0);
        const int key_rows = round_up(valid_k, G::kRowsKey);  // dK, dV rows to update (<= bk)
        const std::ptrdiff_t key_off = static_cast<std::ptrdiff_t>(j0) * dhp;
        for (int i0 = 0; i0 < N; i0 += BQ) {
            const int bq = std::min(BQ, nq - i0);
            const std::ptrdiff_t query_off = static_cast<std::ptrdiff_t>(i0) * dhp;
            // P = exp(s * scale - lse), recomputed.
            gemm_nt<T, DH>(pblk, BK, qp + query_off, dhp, kt + key_off, bq, bk, Dh, dhp);
            mask_key_padding(pblk, BK, bq, valid_k, bk);
            for (int r = 0; r < bq; ++r) {
                T* pr = pblk + r * BK;
                const V neg_lse = Sd::splat(-lse_p[i0 + r]);
                for (int j = 0; j < bk; j += W) Sd::store(pr + j, Sd::exp(Sd::fma(Sd::load(pr + j), vscale, neg_lse)));
            }
            // dV += P^T dO
            gemm_nn<T, true, false, DHP>(dv + key_off, dhp, pblk, BK, dop + query_off, dhp, key_rows, dhp, bq);
            // dP = dO V^T;  dS = P * (dP - D) * scale, written over P
            gemm_nt<T, DH>(dpblk, BK, dop + query_off, dhp, vt + key_off, bq, bk, Dh, dhp);
            for (int r = 0; r < bq; ++r) {
                T* pr = pblk + r * BK;
                const T* dpr = dpblk + r * BK;
                const V neg_delta = Sd::splat(-delta[i0 + r]);
                for (int j = 0; j < bk; j += W)
                    Sd::store(pr + j, Sd::load(pr + j) * (Sd::load(dpr + j) + neg_delta) * vscale);
            }
            // dQ += dS K;  dK += dS^T Q  (dS is 0 on the key padding)
            gemm_nn<T, false, false, DHP>(dq + query_off, dhp, pblk, BK, kp + key_off, dhp, bq, dhp, valid_k);
            gemm_nn<T, true, false, DHP>(dk + key_off, dhp, pblk, BK, qp + query_off, dhp, key_rows, dhp, bq);
        }
    }

    for (int i = 0; i < N; ++i) {
        T* dqi = dqkv + qkv_head + i * row3;  // dq | dk | dv of (b, i, h)
        row_op<RowOp::add>(dqi, dq + i * dhp, Dh);
        row_op<RowOp::add>(dqi + D, dk + i * dhp, Dh);
        row_op<RowOp::add>(dqi + 2 * D, dv + i * dhp, Dh);
    }
}

// ---------------------------------------------------------------------------------------------
// Drivers

/// Threads worth using: a parallel region costs microseconds, so tiny problems run on one.
inline int useful_threads(const Shape& s) {
    const double flops = 4.0 * s.B * s.H * static_cast<double>(s.N) * s.N * s.Dh;
    const long long heads = static_cast<long long>(s.B) * s.H;
    return flops < 1e6 ? 1 : static_cast<int>(std::min<long long>(max_threads(), heads));
}


/// Reads one byte of every cache line of [p, p + n). Sequential loads stream a sample's rows in
/// at memory bandwidth (hardware prefetchers); the per-head accesses that follow are strided
/// (Dh of every 3 H Dh row) and measured 1.5x slower per head when they miss the cache.
template <class T>
inline void touch(const T* p, std::ptrdiff_t n) {
    if (n <= 0) return;
    const volatile char* c = reinterpret_cast<const volatile char*>(p);
    const std::ptrdiff_t bytes = n * static_cast<std::ptrdiff_t>(sizeof(T));
    for (std::ptrdiff_t o = 0; o < bytes; o += 64) static_cast<void>(c[o]);
    static_cast<void>(c[bytes - 1]);
}

/// Bytes of one sample's tensors worth streaming in before its heads run (half an L2 of 1 MiB).
inline constexpr double kTouchBytes = 512.0 * 1024;

/// Runs head(b, h, scratch) for every head, in parallel. With enough samples per thread the tasks
/// are whole samples (all H heads), so that a sample's rows can be streamed in first by
/// touch_sample(b); otherwise single heads.
template <class T, class Head, class TouchSample>
void for_each_head(const Shape& s, int threads, const Scratch<T>& scratch, Head head, TouchSample touch_sample) {
    const bool by_sample = s.B >= 4 * threads || s.B % threads == 0;
    if (by_sample) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int b = 0; b < s.B; ++b) {
            T* region = scratch.region(thread_id());
            touch_sample(b);
            for (int h = 0; h < s.H; ++h) head(b, h, region);
        }
    } else {
        const long long heads = static_cast<long long>(s.B) * s.H;
#pragma omp parallel for schedule(static) num_threads(threads)
        for (long long i = 0; i < heads; ++i)
            head(static_cast<int>(i / s.H), static_cast<int>(i % s.H), scratch.region(thread_id()));
    }
}

template <class T, int DH>
void forward_all(T* out, T* lse, const T* qkv, const Shape& s) {
    const int threads = useful_threads(s);
    const bool single = s.N <= kMaxKeyTile;
    const Scratch<T> scratch(threads, single ? forward_single_scratch<T>(s) : forward_tiled_scratch<T>(s));
    const std::ptrdiff_t sample = static_cast<std::ptrdiff_t>(s.N) * 3 * s.D();  // qkv elements per sample
    const bool stream = static_cast<double>(sample) * sizeof(T) <= kTouchBytes;
    for_each_head<T>(
        s, threads, scratch,
        [&](int b, int h, T* region) {
            if (single)
                forward_head_single<T, DH>(out, lse, qkv, s, b, h, region);
            else
                forward_head_tiled<T, DH>(out, lse, qkv, s, b, h, region);
        },
        [&](int b) {
            if (stream) touch(qkv + b * sample, sample);
        });
}

template <class T, int DH>
void backward_all(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, const Shape& s) {
    const int threads = useful_threads(s);
    const bool single = s.N <= kMaxKeyTile;
    const Scratch<T> scratch(threads, single ? backward_single_scratch<T>(s) : backward_tiled_scratch<T>(s));
    const std::ptrdiff_t sample3 = static_cast<std::ptrdiff_t>(s.N) * 3 * s.D(), sample = sample3 / 3;
    const double bytes3 = static_cast<double>(sample3) * sizeof(T), bytes = bytes3 / 3;
    // Streamed in order of use while they fit: qkv, then dout (and out, which only the key-tiled path
    // reads), then dqkv.
    const double outs = single ? bytes : 2 * bytes;
    const bool stream_qkv = bytes3 <= kTouchBytes, stream_out = bytes3 + outs <= kTouchBytes,
               stream_dqkv = 2 * bytes3 + outs <= kTouchBytes;
    for_each_head<T>(
        s, threads, scratch,
        [&](int b, int h, T* region) {
            if (single)
                backward_head_single<T, DH>(dqkv, dout, qkv, lse, s, b, h, region);
            else
                backward_head_tiled<T, DH>(dqkv, dout, qkv, out, lse, s, b, h, region);
        },
        [&](int b) {
            if (stream_qkv) touch(qkv + b * sample3, sample3);
            if (stream_out) {
                touch(dout + b * sample, sample);
                if (!single) touch(out + b * sample, sample);
            }
            if (stream_dqkv) touch(dqkv + b * sample3, sample3);
        });
}

}  // namespace fused_attention_detail

namespace fused_attention_detail {
// The bodies of ops::attention_forward_fused / attention_backward_fused for this translation unit's ISA, after the
// public functions checked the arguments.
template <class T>
void forward_entry(T* out, T* lse, const T* qkv, int B, int N, int H, int Dh) {
    namespace fa = fused_attention_detail;
    const fa::Shape s{B, N, H, Dh};
    if (Dh == 64)
        fa::forward_all<T, 64>(out, lse, qkv, s);
    else if (Dh == 32)
        fa::forward_all<T, 32>(out, lse, qkv, s);
    else
        fa::forward_all<T, 0>(out, lse, qkv, s);
}

template <class T>
void backward_entry(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B, int N, int H, int Dh) {
    namespace fa = fused_attention_detail;
    const fa::Shape s{B, N, H, Dh};
    if (Dh == 64)
        fa::backward_all<T, 64>(dqkv, dout, qkv, out, lse, s);
    else if (Dh == 32)
        fa::backward_all<T, 32>(dqkv, dout, qkv, out, lse, s);
    else
        fa::backward_all<T, 0>(dqkv, dout, qkv, out, lse, s);
}
}  // namespace fused_attention_detail

SIMMIM_ISA_END

/// Fused forward: out (B, N, H, Dh) = softmax(q k^T / sqrt(Dh)) v per (batch, head), and
/// lse (B, H, N) = log-sum-exp over keys of the scaled scores (saved for the backward pass).
/// qkv is (B, N, 3, H, Dh). Never materialises the (B, H, N, N) probabilities. Throws
/// std::runtime_error on non-positive sizes or null pointers.
template <class T>
void attention_forward_fused(T* out, T* lse, const T* qkv, int B, int N, int H, int Dh) {
    fused_attention_detail::validate("attention_forward_fused", {B, N, H, Dh}, {{out, "out"}, {lse, "lse"}, {qkv, "qkv"}});
#if defined(SIMMIM_KERNELS_DISPATCHER)
    kernels::dispatch::kernels<T>().attention_forward_fused(out, lse, qkv, B, N, H, Dh);
#else
    fused_attention_detail::forward_entry<T>(out, lse, qkv, B, N, H, Dh);
#endif
}

/// Fused backward: given dout (B, N, H, Dh) and the forward's qkv, out and lse, accumulates
/// (+=) dq, dk, dv into dqkv (B, N, 3, H, Dh). P is recomputed from q, k and lse; the softmax
/// term D_i = dout_i . out_i comes from out when N > 256, and from the equal sum_j P_ij dP_ij
/// otherwise (out is then not read, but must still be the forward's output). Throws
/// std::runtime_error on non-positive sizes or null pointers.
template <class T>
void attention_backward_fused(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B, int N, int H,
                              int Dh) {
    fused_attention_detail::validate("attention_backward_fused", {B, N, H, Dh}, {{dqkv, "dqkv"}, {dout, "dout"}, {qkv, "qkv"}, {out, "out"}, {lse, "lse"}});
#if defined(SIMMIM_KERNELS_DISPATCHER)
    kernels::dispatch::kernels<T>().attention_backward_fused(dqkv, dout, qkv, out, lse, B, N, H, Dh);
#else
    fused_attention_detail::backward_entry<T>(dqkv, dout, qkv, out, lse, B, N, H, Dh);
#endif
}

}  // namespace simmim::ops

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic pop
#endif

// Compiled kernels (simmim::kernels, see simmim/kernels/dispatch.hpp): the fused forward and backward for float and
// double are instantiated once, in src/dispatch.cpp, where they call the instruction set chosen at run time.
#ifdef SIMMIM_EXTERN_KERNELS
namespace simmim::ops {
#define SIMMIM_ATTENTION_FUSED_INSTANTIATION(EXTERN, T)                                                  \
    EXTERN template void attention_forward_fused<T>(T*, T*, const T*, int, int, int, int);                 \
    EXTERN template void attention_backward_fused<T>(T*, const T*, const T*, const T*, const T*, int, int, \
                                                     int, int);
SIMMIM_ATTENTION_FUSED_INSTANTIATION(extern, float)
SIMMIM_ATTENTION_FUSED_INSTANTIATION(extern, double)
}  // namespace simmim::ops
#endif
