// simmim/ops/attention_fused.hpp: fused multi-head self-attention core (FlashAttention-2 style).
//
// Same maths and layouts as the naive reference in simmim/ops/attention.hpp, without ever
// materialising the (N, N) probability matrix:
//   qkv  (B, N, 3, H, Dh)  row (b, n) holds q | k | v, each (H, Dh)
//   out  (B, N, H, Dh)
//   lse  (B, H, N)         lse[b, h, i] = log sum_j exp(s_ij), s_ij = q_i . k_j / sqrt(Dh)
// P = softmax_keys(s), out = P v. Forward walks key tiles with an online softmax (running max m,
// running sum l, output rescaled by exp(m_old - m_new)) and saves lse; backward recomputes
// P = exp(s - lse) tile by tile and accumulates (+=) dq, dk, dv into dqkv.
//
// Parallelism: one OpenMP `parallel for` over the B*H heads; each head runs single-threaded in
// per-thread scratch (allocated once per call, before the parallel region).
// SIMD: xsimd at the ISA the consumer compiles for (-march=...). Defining SIMMIM_NO_SIMD, or
// compiling for a target xsimd does not support, selects a scalar path with the same tiling
// (define it identically in every translation unit of a program, like -march itself).
// Fast paths with a compile-time head width exist for Dh = 32 and Dh = 64; other Dh are padded
// to the SIMD width inside the scratch buffers. Tile products are hand-written register-blocked
// kernels (measured 1.2-1.6x faster than Eigen block products here: docs/attention.md).
// Accuracy: exp is xsimd::exp (Cephes kernels; tests bound the relative error by 2e-7 in float
// and 2 ulp in double for x <= 0) or std::exp on the scalar path; no -ffast-math assumptions.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef SIMMIM_NO_SIMD
#include <xsimd/xsimd.hpp>
#endif

// GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsic headers (the `__Y = __Y`
// idiom of _mm512_undefined_*) once xsimd code is inlined at -O2/-O3: a compiler false positive,
// silenced for this header only.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace simmim::ops {

namespace detail::fused_attention {

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
    static V exp(const V& x) { return xsimd::exp(x); }
    static T sum(const V& x) { return xsimd::hadd(x); }
    static T max_element(const V& x) {
        alignas(64) T lanes[width];
        x.store_aligned(lanes);
        T m = lanes[0];
        for (int i = 1; i < width; ++i) m = std::max(m, lanes[i]);
        return m;
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
    static T sum(V x) { return x; }
    static T max_element(V x) { return x; }
};
#endif

constexpr int round_up(int x, int unit) { return (x + unit - 1) / unit * unit; }
constexpr int lcm(int a, int b) {
    int x = a, y = b;
    while (y != 0) { const int t = x % y; x = y; y = t; }
    return a / x * b;
}

/// Tile geometry for scalar type T (the kernels keep Rows x ColVecs vectors in registers).
///   score products S = Q K^T, dP = dO V^T: kRowsNT query rows x kColVecsNT*W keys;
///   row products O += P V, dQ += dS K:      kRowsNN query rows x kColVecsNN*W of Dh;
///   key products dV += P^T dO, dK += dS^T Q: kRowsNNT key rows x kColVecsNNT*W of Dh.
/// Queries are padded to kQueryUnit rows, keys to kKeyUnit; one score tile is kBlockQ x kBlockK.
template <class T>
struct Tiling {
    static constexpr int W = Simd<T>::width;
    static constexpr int kRowsNT = 6;
    static constexpr int kColVecsNT = 4;
    static constexpr int kRowsNN = 6;
    static constexpr int kColVecsNN = 4;
    static constexpr int kRowsNNT = 8;
    static constexpr int kColVecsNNT = 2;
    static constexpr int kQueryUnit = lcm(kRowsNT, kRowsNN);
    static constexpr int kKeyUnit = lcm(W, kRowsNNT);
    static constexpr int kBlockQ = round_up(72, kQueryUnit);
    static constexpr int kBlockK = round_up(192, lcm(kKeyUnit, kColVecsNT * W));
    /// Padded head width: a whole number of vectors.
    static constexpr int padded_dh(int dh) { return round_up(dh, W); }
};

// Transposed operands (K^T, V^T) are stored as panels of W keys: element (d, j) of a (dhp, nk)
// matrix lives at [((j / W) * dhp + d) * W + j % W], so a kernel reads one vector per panel and
// row d, and packing writes stay inside one 64-byte-strided panel.

/// C (MR, NV*W) = A (MR, dhp) * Bt (dhp, NV*W). A rows have stride lda; Bt is NV consecutive
/// panels (panel stride dhp*W). DHP > 0: dhp known at compile time.
template <class T, int MR, int NV, int DHP>
inline void kernel_nt(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* bt, int dhp_runtime) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::width;
    const int dhp = DHP > 0 ? DHP : dhp_runtime;
    const std::ptrdiff_t panel = static_cast<std::ptrdiff_t>(dhp) * W;
    V acc[MR][NV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) acc[r][v] = S::splat(T(0));
    for (int d = 0; d < dhp; ++d) {
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

/// C (MR, CV*W) += A (MR, kd) * B (kd, CV*W), with A(r, k) = a[r*lda + k], or a[k*lda + r] when
/// TRANS_A. B rows have stride ldb.
template <class T, int MR, int CV, bool TRANS_A>
inline void kernel_nn(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* b, std::ptrdiff_t ldb, int kd) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::width;
    V acc[MR][CV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 16
        for (int v = 0; v < CV; ++v) acc[r][v] = S::load(c + r * ldc + v * W);
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

/// C (rows, cols) = A (rows, dhp) * Bt (dhp, cols), Bt in panels; rows a multiple of kRowsNT,
/// cols of W.
template <class T, int DHP>
inline void gemm_nt(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* bt, int rows, int cols, int dhp) {
    using G = Tiling<T>;
    constexpr int MR = G::kRowsNT, NV = G::kColVecsNT, W = G::W;
    const std::ptrdiff_t panel = static_cast<std::ptrdiff_t>(dhp) * W;
    for (int r = 0; r < rows; r += MR) {
        T* cr = c + r * ldc;
        const T* ar = a + r * lda;
        int j = 0;
        for (; j + NV * W <= cols; j += NV * W) kernel_nt<T, MR, NV, DHP>(cr + j, ldc, ar, lda, bt + j / W * panel, dhp);
        // Remaining 1 .. NV-1 vectors, in chunks of 2 and 1.
        if constexpr (NV > 2) {
            for (; j + 2 * W <= cols; j += 2 * W) kernel_nt<T, MR, 2, DHP>(cr + j, ldc, ar, lda, bt + j / W * panel, dhp);
        }
        for (; j < cols; j += W) kernel_nt<T, MR, 1, DHP>(cr + j, ldc, ar, lda, bt + j / W * panel, dhp);
    }
}

/// C (rows, dhp) += A (rows, kd) * B (kd, dhp), A(r, k) as in kernel_nn; rows a multiple of
/// kRowsNNT when TRANS_A and of kRowsNN otherwise, dhp of W. DHP > 0: dhp known at compile time.
template <class T, bool TRANS_A, int DHP>
inline void gemm_nn(T* c, std::ptrdiff_t ldc, const T* a, std::ptrdiff_t lda, const T* b, std::ptrdiff_t ldb, int rows,
                    int dhp_runtime, int kd) {
    using G = Tiling<T>;
    constexpr int MR = TRANS_A ? G::kRowsNNT : G::kRowsNN, CV = TRANS_A ? G::kColVecsNNT : G::kColVecsNN, W = G::W;
    const int dhp = DHP > 0 ? DHP : dhp_runtime;
    for (int r = 0; r < rows; r += MR) {
        T* cr = c + r * ldc;
        const T* ar = TRANS_A ? a + r : a + r * lda;
        int j = 0;
        for (; j + CV * W <= dhp; j += CV * W) kernel_nn<T, MR, CV, TRANS_A>(cr + j, ldc, ar, lda, b + j, ldb, kd);
        // Remaining 1 .. CV-1 vectors, in chunks of 2 and 1.
        if constexpr (CV > 2) {
            for (; j + 2 * W <= dhp; j += 2 * W) kernel_nn<T, MR, 2, TRANS_A>(cr + j, ldc, ar, lda, b + j, ldb, kd);
        }
        for (; j < dhp; j += W) kernel_nn<T, MR, 1, TRANS_A>(cr + j, ldc, ar, lda, b + j, ldb, kd);
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

/// Writes the transpose of `rows` rows of width dh (source row stride lds) as panels of W
/// columns: dst holds the (dhp, padded_rows) matrix, zero outside (dh, rows).
template <class T, int DH>
inline void pack_panels(T* dst, int dhp, const T* src, std::ptrdiff_t lds, int rows, int padded_rows, int dh_runtime) {
    constexpr int W = Simd<T>::width;
    const int dh = DH > 0 ? DH : dh_runtime;
    for (int j = 0; j < padded_rows; ++j) {
        T* col = dst + (static_cast<std::ptrdiff_t>(j / W) * dhp) * W + j % W;
        const T* row = src + j * lds;
        const int valid = j < rows ? dh : 0;
        for (int d = 0; d < valid; ++d) col[d * W] = row[d];
        for (int d = valid; d < dhp; ++d) col[d * W] = T(0);
    }
}

/// Sets columns [valid, cols) of a (rows, cols) tile to -inf, so that exp() maps them to 0.
template <class T>
inline void mask_key_padding(T* s, std::ptrdiff_t lds, int rows, int valid, int cols) {
    if (valid == cols) return;
    for (int r = 0; r < rows; ++r) std::fill(s + r * lds + valid, s + r * lds + cols, -std::numeric_limits<T>::infinity());
}

/// Per-thread scratch: one allocation carved into 64-byte aligned buffers.
template <class T>
class Scratch {
public:
    /// Room for `threads` regions of `per_thread` elements (the caller sums aligned sizes).
    Scratch(int threads, std::size_t per_thread)
        : stride_(per_thread), storage_(new T[per_thread * static_cast<std::size_t>(threads) + kAlign]) {
        void* p = storage_.get();
        std::size_t space = (per_thread * static_cast<std::size_t>(threads) + kAlign) * sizeof(T);
        base_ = static_cast<T*>(std::align(64, sizeof(T), p, space));
    }
    T* region(int thread) const { return base_ + stride_ * static_cast<std::size_t>(thread); }
    /// Elements a buffer of n elements occupies, keeping the next one 64-byte aligned.
    static std::size_t aligned(std::size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

private:
    static constexpr std::size_t kAlign = 64 / sizeof(T);
    std::size_t stride_;
    std::unique_ptr<T[]> storage_;
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

/// One (b, h) head of the forward pass. DH = 0: head width known only at run time.
template <class T, int DH>
void forward_head(T* out, T* lse, const T* qkv, const Shape& s, int b, int h, T* scratch) {
    using G = Tiling<T>;
    using Sd = Simd<T>;
    using V = typename Sd::V;
    constexpr int W = G::W, BQ = G::kBlockQ, BK = G::kBlockK;
    constexpr int DHP = DH > 0 ? G::padded_dh(DH) : 0;
    const int N = s.N, Dh = DH > 0 ? DH : s.Dh;
    const int dhp = G::padded_dh(Dh);
    const int nk = round_up(N, G::kKeyUnit);  // padded key count
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
        const int bq = round_up(valid_q, G::kQueryUnit);
        pack_rows<T, DH>(qblk, dhp, q_head + i0 * row3, row3, valid_q, bq, Dh);
        std::fill(oacc, oacc + static_cast<std::ptrdiff_t>(bq) * dhp, T(0));
        std::fill(row_max, row_max + bq, neg_inf);
        std::fill(row_sum, row_sum + bq, T(0));

        for (int j0 = 0; j0 < N; j0 += BK) {
            const int valid_k = std::min(BK, N - j0);
            const int bk = std::min(BK, nk - j0);
            gemm_nt<T, DHP>(sblk, BK, qblk, dhp, kt + static_cast<std::ptrdiff_t>(j0) * dhp, bq, bk, dhp);
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
            // O += P V over the valid keys only (P is 0 on the padding).
            const T* v_blk = vp + static_cast<std::ptrdiff_t>(j0) * dhp;
            gemm_nn<T, false, DHP>(oacc, dhp, sblk, BK, v_blk, dhp, bq, dhp, valid_k);
        }

        for (int r = 0; r < valid_q; ++r) {
            const int i = i0 + r;
            T* out_row = out + (static_cast<std::ptrdiff_t>(b) * N + i) * D + h * Dh;
            row_op<RowOp::scale>(out_row, oacc + r * dhp, Dh, T(1) / row_sum[r]);
            lse[(static_cast<std::ptrdiff_t>(b) * s.H + h) * N + i] = row_max[r] + std::log(row_sum[r]);
        }
    }
}

template <class T>
std::size_t forward_scratch_size(const Shape& s) {
    using G = Tiling<T>;
    const std::size_t dhp = static_cast<std::size_t>(G::padded_dh(s.Dh));
    const std::size_t nk = static_cast<std::size_t>(round_up(s.N, G::kKeyUnit));
    const std::size_t bq = G::kBlockQ, bk = G::kBlockK;
    using Sc = Scratch<T>;
    return Sc::aligned(dhp * nk) + Sc::aligned(nk * dhp) + Sc::aligned(bq * dhp) + Sc::aligned(bq * bk) +
           Sc::aligned(bq * dhp) + 2 * Sc::aligned(bq);
}

/// One (b, h) head of the backward pass, accumulating into dqkv.
template <class T, int DH>
void backward_head(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, const Shape& s, int b, int h,
                   T* scratch) {
    using G = Tiling<T>;
    using Sd = Simd<T>;
    using V = typename Sd::V;
    constexpr int W = G::W, BQ = G::kBlockQ, BK = G::kBlockK;
    constexpr int DHP = DH > 0 ? G::padded_dh(DH) : 0;
    const int N = s.N, Dh = DH > 0 ? DH : s.Dh;
    const int dhp = G::padded_dh(Dh);
    const int nq = round_up(N, G::kQueryUnit);  // padded query count
    const int nk = round_up(N, G::kKeyUnit);    // padded key count
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
        T dot = 0;
        if (i < N) {
            const T* doi = dout + out_head + i * D;
            const T* oi = out + out_head + i * D;
            for (int d = 0; d < Dh; ++d) dot += doi[d] * oi[d];
        }
        delta[i] = dot;
        lse_p[i] = i < N ? lse_head[i] : std::numeric_limits<T>::infinity();
    }

    const V vscale = Sd::splat(scale);
    for (int j0 = 0; j0 < N; j0 += BK) {
        const int valid_k = std::min(BK, N - j0);
        const int bk = std::min(BK, nk - j0);
        const int key_rows = round_up(valid_k, G::kRowsNNT);  // dK, dV rows to update (<= bk)
        const std::ptrdiff_t key_off = static_cast<std::ptrdiff_t>(j0) * dhp;
        for (int i0 = 0; i0 < N; i0 += BQ) {
            const int bq = std::min(BQ, nq - i0);
            const std::ptrdiff_t query_off = static_cast<std::ptrdiff_t>(i0) * dhp;
            // P = exp(s * scale - lse), recomputed.
            gemm_nt<T, DHP>(pblk, BK, qp + query_off, dhp, kt + key_off, bq, bk, dhp);
            mask_key_padding(pblk, BK, bq, valid_k, bk);
            for (int r = 0; r < bq; ++r) {
                T* pr = pblk + r * BK;
                const V neg_lse = Sd::splat(-lse_p[i0 + r]);
                for (int j = 0; j < bk; j += W) Sd::store(pr + j, Sd::exp(Sd::fma(Sd::load(pr + j), vscale, neg_lse)));
            }
            // dV += P^T dO
            gemm_nn<T, true, DHP>(dv + key_off, dhp, pblk, BK, dop + query_off, dhp, key_rows, dhp, bq);
            // dP = dO V^T;  dS = P * (dP - D) * scale, written over P
            gemm_nt<T, DHP>(dpblk, BK, dop + query_off, dhp, vt + key_off, bq, bk, dhp);
            for (int r = 0; r < bq; ++r) {
                T* pr = pblk + r * BK;
                const T* dpr = dpblk + r * BK;
                const V neg_delta = Sd::splat(-delta[i0 + r]);
                for (int j = 0; j < bk; j += W)
                    Sd::store(pr + j, Sd::load(pr + j) * (Sd::load(dpr + j) + neg_delta) * vscale);
            }
            // dQ += dS K;  dK += dS^T Q  (dS is 0 on the key padding)
            gemm_nn<T, false, DHP>(dq + query_off, dhp, pblk, BK, kp + key_off, dhp, bq, dhp, valid_k);
            gemm_nn<T, true, DHP>(dk + key_off, dhp, pblk, BK, qp + query_off, dhp, key_rows, dhp, bq);
        }
    }

    for (int i = 0; i < N; ++i) {
        T* dqi = dqkv + qkv_head + i * row3;  // dq | dk | dv of (b, i, h)
        row_op<RowOp::add>(dqi, dq + i * dhp, Dh);
        row_op<RowOp::add>(dqi + D, dk + i * dhp, Dh);
        row_op<RowOp::add>(dqi + 2 * D, dv + i * dhp, Dh);
    }
}

template <class T>
std::size_t backward_scratch_size(const Shape& s) {
    using G = Tiling<T>;
    using Sc = Scratch<T>;
    const std::size_t dhp = static_cast<std::size_t>(G::padded_dh(s.Dh));
    const std::size_t nq = static_cast<std::size_t>(round_up(s.N, G::kQueryUnit));
    const std::size_t nk = static_cast<std::size_t>(round_up(s.N, G::kKeyUnit));
    const std::size_t tile = static_cast<std::size_t>(G::kBlockQ) * G::kBlockK;
    return 3 * Sc::aligned(nq * dhp) + 5 * Sc::aligned(nk * dhp) + 2 * Sc::aligned(nq) + 2 * Sc::aligned(tile);
}

/// Threads worth using: a parallel region costs microseconds, so tiny problems run on one.
inline int useful_threads(const Shape& s) {
    const double flops = 4.0 * s.B * s.H * static_cast<double>(s.N) * s.N * s.Dh;
    const long long heads = static_cast<long long>(s.B) * s.H;
    return flops < 1e6 ? 1 : static_cast<int>(std::min<long long>(max_threads(), heads));
}

template <class T, int DH>
void forward_all(T* out, T* lse, const T* qkv, const Shape& s) {
    const int threads = useful_threads(s);
    const Scratch<T> scratch(threads, forward_scratch_size<T>(s));
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
    for (int b = 0; b < s.B; ++b)
        for (int h = 0; h < s.H; ++h) forward_head<T, DH>(out, lse, qkv, s, b, h, scratch.region(thread_id()));
}

template <class T, int DH>
void backward_all(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, const Shape& s) {
    const int threads = useful_threads(s);
    const Scratch<T> scratch(threads, backward_scratch_size<T>(s));
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
    for (int b = 0; b < s.B; ++b)
        for (int h = 0; h < s.H; ++h) backward_head<T, DH>(dqkv, dout, qkv, out, lse, s, b, h, scratch.region(thread_id()));
}

}  // namespace detail::fused_attention

/// Fused forward: out (B, N, H, Dh) = softmax(q k^T / sqrt(Dh)) v per (batch, head), and
/// lse (B, H, N) = log-sum-exp over keys of the scaled scores (saved for the backward pass).
/// qkv is (B, N, 3, H, Dh). Never materialises the (N, N) matrix. Throws std::runtime_error on
/// non-positive sizes or null pointers.
template <class T>
void attention_forward_fused(T* out, T* lse, const T* qkv, int B, int N, int H, int Dh) {
    namespace fa = detail::fused_attention;
    const fa::Shape s{B, N, H, Dh};
    fa::validate("attention_forward_fused", s, {{out, "out"}, {lse, "lse"}, {qkv, "qkv"}});
    if (Dh == 64)
        fa::forward_all<T, 64>(out, lse, qkv, s);
    else if (Dh == 32)
        fa::forward_all<T, 32>(out, lse, qkv, s);
    else
        fa::forward_all<T, 0>(out, lse, qkv, s);
}

/// Fused backward: given dout (B, N, H, Dh) and the forward's qkv, out and lse, accumulates
/// (+=) dq, dk, dv into dqkv (B, N, 3, H, Dh). P is recomputed from q, k and lse; the softmax
/// term D_i = dout_i . out_i comes from out. Throws std::runtime_error on non-positive sizes or
/// null pointers.
template <class T>
void attention_backward_fused(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B, int N, int H,
                              int Dh) {
    namespace fa = detail::fused_attention;
    const fa::Shape s{B, N, H, Dh};
    fa::validate("attention_backward_fused", s, {{dqkv, "dqkv"}, {dout, "dout"}, {qkv, "qkv"}, {out, "out"}, {lse, "lse"}});
    if (Dh == 64)
        fa::backward_all<T, 64>(dqkv, dout, qkv, out, lse, s);
    else if (Dh == 32)
        fa::backward_all<T, 32>(dqkv, dout, qkv, out, lse, s);
    else
        fa::backward_all<T, 0>(dqkv, dout, qkv, out, lse, s);
}

}  // namespace simmim::ops

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic pop
#endif
