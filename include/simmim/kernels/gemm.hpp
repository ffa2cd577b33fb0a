// simmim/kernels/gemm.hpp: C = alpha * op(A) * op(B) + beta * C on row-major matrices.
//
// float: a packed GotoBLAS/BLIS-structured kernel chosen from the ISA macros of the translation unit compiling it
// (header-only: the consumer's flags; with simmim::kernels linked, at run time among the levels of
// kernels/dispatch.hpp, each compiled for its ISA):
//   AVX-512F        8 x 48 register tile (24 zmm accumulators), A micro-panel broadcast, B loaded
//   AVX2 + FMA      6 x 16 register tile (12 ymm accumulators)
//   otherwise, or with SIMMIM_NO_SIMD defined: Eigen maps (also the path for double).
// Loop nest (per thread): N blocks of NB columns > K blocks of KC > pack B block (KC x NB) >
// M blocks of MB rows > pack A block (MB x KC, L2) > B micro-panel (KC x NR) > A micro-panel
// (MR x KC) > micro-kernel. When op(A) is row-major (A not transposed) its rows are read in place
// instead of packed (transposing them into panels cost ~10% of a training step), and so are whole
// panels of op(B) when B is not transposed (every thread packed all of B, e.g. the activations in
// a weight gradient). Packs transpose with 8 x 8 AVX shuffles where needed and zero-pad to whole
// panels. Edges: the last rows run a kernel with fewer rows, the last columns a kernel with fewer
// vectors, and a partial last vector goes through a scratch tile, so no byte outside
// the matrices is read or written.
//
// Threads: OpenMP, only when not already inside a parallel region and the product is large
// enough. The larger of M and N is split into contiguous ranges of whole register tiles, one per
// thread; K is never split. Every element of C is computed by the same sequence of operations
// (sum over k in order, K block by K block, then the alpha/beta update) whatever the thread count
// or its position in a tile, so the float result is bitwise identical run to run and across
// thread counts.
// Scratch: per-thread 64-byte-aligned packing buffers of fixed size (thread_local), allocated on
// a thread's first call and reused, so steady-state calls do not allocate.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include <Eigen/Core>

#include "simmim/kernels/gemm_bf16.hpp"
#include "simmim/kernels/dispatch.hpp"
#include "simmim/kernels/gemm_epilogue.hpp"
#include "simmim/kernels/isa.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

#if !defined(SIMMIM_NO_SIMD) && defined(__AVX512F__)
#define SIMMIM_GEMM_AVX512 1
#elif !defined(SIMMIM_NO_SIMD) && defined(__AVX2__) && defined(__FMA__)
#define SIMMIM_GEMM_AVX2 1
#endif

#if defined(SIMMIM_GEMM_AVX512) || defined(SIMMIM_GEMM_AVX2)
#include <immintrin.h>
#endif

namespace simmim::kernels {

/// C = alpha * op(A) * op(B) + beta * C with a fused epilogue (defined and documented below).
template <class T>
void gemm(bool trans_a, bool trans_b, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, T alpha, const T* A,
          std::ptrdiff_t lda, const T* B, std::ptrdiff_t ldb, T beta, T* C, std::ptrdiff_t ldc,
          const GemmEpilogue<T>* epilogue);

SIMMIM_ISA_BEGIN

/// Name of the float GEMM path compiled in: "avx512", "avx2" or "portable" (Eigen).
#if defined(SIMMIM_GEMM_AVX512)
inline constexpr const char* gemm_float_path = "avx512";
#elif defined(SIMMIM_GEMM_AVX2)
inline constexpr const char* gemm_float_path = "avx2";
#else
inline constexpr const char* gemm_float_path = "portable";
#endif

namespace gemm_detail {

/// Throws std::runtime_error naming the argument and what was expected versus found. Builds no
/// string unless an argument is bad.
inline void check_arguments(bool trans_a, bool trans_b, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
                            const void* A, std::ptrdiff_t lda, const void* B, std::ptrdiff_t ldb, const void* C,
                            std::ptrdiff_t ldc, bool reads_ab) {
    const auto fail = [&](const std::string& what) {
        throw std::runtime_error("simmim::kernels::gemm: " + what + " (M = " + std::to_string(M) +
                                 ", N = " + std::to_string(N) + ", K = " + std::to_string(K) + ")");
    };
    if (M < 0 || N < 0 || K < 0) fail("sizes must be non-negative");
    const std::ptrdiff_t a_width = trans_a ? M : K;
    const std::ptrdiff_t b_width = trans_b ? K : N;
    if (lda < a_width)
        fail("lda = " + std::to_string(lda) + " is less than the row width " + std::to_string(a_width) + " of A, " +
             (trans_a ? "K x M" : "M x K"));
    if (ldb < b_width)
        fail("ldb = " + std::to_string(ldb) + " is less than the row width " + std::to_string(b_width) + " of B, " +
             (trans_b ? "N x K" : "K x N"));
    if (ldc < N) fail("ldc = " + std::to_string(ldc) + " is less than the row width N of C");
    if (M > 0 && N > 0 && C == nullptr) fail("C is null");
    if (reads_ab && M > 0 && N > 0 && K > 0 && (A == nullptr || B == nullptr))
        fail(std::string(A == nullptr ? "A" : "B") + " is null");
}

/// C (M x N, row stride ldc) = beta * C; beta == 0 writes zeros without reading C.
template <class T>
void scale_c(std::ptrdiff_t M, std::ptrdiff_t N, T beta, T* C, std::ptrdiff_t ldc) {
    if (beta == T(1)) return;
    for (std::ptrdiff_t i = 0; i < M; ++i) {
        T* row = C + i * ldc;
        if (beta == T(0))
            std::fill(row, row + N, T(0));
        else
            for (std::ptrdiff_t j = 0; j < N; ++j) row[j] *= beta;
    }
}

/// The Eigen path: double always, float when no SIMD path is compiled in. M, N, K > 0, alpha != 0.
template <class T>
void gemm_eigen(bool trans_a, bool trans_b, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, T alpha, const T* A,
                std::ptrdiff_t lda, const T* B, std::ptrdiff_t ldb, T beta, T* C, std::ptrdiff_t ldc) {
    using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Stride = Eigen::OuterStride<>;
    using ConstMap = Eigen::Map<const Matrix, Eigen::Unaligned, Stride>;
    Eigen::Map<Matrix, Eigen::Unaligned, Stride> c(C, M, N, Stride(ldc));
    const ConstMap a(A, trans_a ? K : M, trans_a ? M : K, Stride(lda));
    const ConstMap b(B, trans_b ? N : K, trans_b ? K : N, Stride(ldb));
    // beta == 0: Eigen's `=` product zeroes the destination before accumulating, so C is never read.
    const auto assign = [&](const auto& op_a, const auto& op_b) {
        if (beta == T(0)) {
            c.noalias() = alpha * op_a * op_b;
        } else {
            if (beta != T(1)) c *= beta;
            c.noalias() += alpha * op_a * op_b;
        }
    };
    if (trans_a && trans_b)
        assign(a.transpose(), b.transpose());
    else if (trans_a)
        assign(a.transpose(), b);
    else if (trans_b)
        assign(a, b.transpose());
    else
        assign(a, b);
}

#if defined(SIMMIM_GEMM_AVX512) || defined(SIMMIM_GEMM_AVX2)

/// One ISA's vector type, register tile and cache blocking. MR rows x NV vectors of `width` lanes.
#if defined(SIMMIM_GEMM_AVX512)
struct Isa {
    using V = __m512;
    static constexpr int width = 16;
    static constexpr int MR = 8;    // rows of the register tile (A values broadcast)
    static constexpr int NV = 3;    // vectors across the register tile (B values loaded)
    static constexpr int KC = 256;  // depth of a packed block
    static constexpr int MB = 128;  // rows of a packed A block (multiple of MR)
    static constexpr int NB = 3072; // columns of a packed B block (multiple of NV * width)
    static V zero() { return _mm512_setzero_ps(); }
    static V splat(float x) { return _mm512_set1_ps(x); }
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static V load_aligned(const float* p) { return _mm512_load_ps(p); }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
};
#else
struct Isa {
    using V = __m256;
    static constexpr int width = 8;
    static constexpr int MR = 6;
    static constexpr int NV = 2;
    static constexpr int KC = 256;
    static constexpr int MB = 96;
    static constexpr int NB = 3072;
    static V zero() { return _mm256_setzero_ps(); }
    static V splat(float x) { return _mm256_set1_ps(x); }
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static V load_aligned(const float* p) { return _mm256_load_ps(p); }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
};
#endif

inline constexpr int MR = Isa::MR;
inline constexpr int NR = Isa::NV * Isa::width;
static_assert(Isa::MB % MR == 0 && Isa::NB % NR == 0, "gemm blocking: MB and NB must be whole register tiles");

/// dst[c * ldd + r] = src[r * lds + c] for r, c in [0, 8): an 8 x 8 transpose (AVX).
inline void transpose_8x8(const float* src, std::ptrdiff_t lds, float* dst, std::ptrdiff_t ldd) {
    const __m256 r0 = _mm256_loadu_ps(src + 0 * lds), r1 = _mm256_loadu_ps(src + 1 * lds);
    const __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    const __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    const __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(dst + 0 * ldd, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(dst + 1 * ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}

/// Width of the packed panel holding `cols` (<= NR) columns: whole vectors only.
inline int panel_width(std::ptrdiff_t cols) {
    return static_cast<int>((cols + Isa::width - 1) / Isa::width) * Isa::width;
}

/// Packs the rows x depth block of a matrix X whose element (r, k) is src[r * ld_r + k * ld_k],
/// with ld_r == 1 or ld_k == 1, into consecutive k-major panels of `width` rows: panel p holds
/// rows [p * width, p * width + width) at dst + p * width * depth, element (r, k) at
/// [k * width + r - p * width]. The last panel, when incomplete, is zero-padded to `width` rows,
/// or with narrow_tail to the fewest whole vectors (see panel_width).
inline void pack_block(const float* src, std::ptrdiff_t ld_r, std::ptrdiff_t ld_k, std::ptrdiff_t rows,
                       std::ptrdiff_t depth, int width, bool narrow_tail, float* dst) {
    const std::ptrdiff_t full_panels = rows / width;
    const std::ptrdiff_t tail_rows = rows - full_panels * width;
    const int tail_width = narrow_tail ? panel_width(tail_rows) : width;
    float* tail = dst + full_panels * width * depth;  // (depth, tail_width)
    if (ld_r == 1) {
        // Each k is a contiguous run of rows: walk k outermost so the source streams in order.
        for (std::ptrdiff_t k = 0; k < depth; ++k) {
            const float* s = src + k * ld_k;
            for (std::ptrdiff_t p = 0; p < full_panels; ++p) {
                float* d = dst + (p * depth + k) * width;
                const float* sp = s + p * width;
                if (width % 8 == 0)
                    for (int r = 0; r < width; r += 8) _mm256_storeu_ps(d + r, _mm256_loadu_ps(sp + r));
                else
                    for (int r = 0; r < width; ++r) d[r] = sp[r];
            }
            if (tail_rows > 0) {
                float* d = tail + k * tail_width;
                const float* sp = s + full_panels * width;
                for (std::ptrdiff_t r = 0; r < tail_rows; ++r) d[r] = sp[r];
                for (std::ptrdiff_t r = tail_rows; r < tail_width; ++r) d[r] = 0.0f;
            }
        }
        return;
    }
    // Each row is contiguous along k: transpose 8 x 8 blocks of a panel, then its ragged edges.
    const auto transpose_panel = [&](const float* s, std::ptrdiff_t panel_rows, int panel_width_, float* d) {
        const std::ptrdiff_t rows8 = panel_rows / 8 * 8, depth8 = depth / 8 * 8;
        for (std::ptrdiff_t r = 0; r < rows8; r += 8)
            for (std::ptrdiff_t k = 0; k < depth8; k += 8)
                transpose_8x8(s + r * ld_r + k, ld_r, d + k * panel_width_ + r, panel_width_);
        for (std::ptrdiff_t k = 0; k < depth; ++k) {
            float* dk = d + k * panel_width_;
            for (std::ptrdiff_t r = k < depth8 ? rows8 : 0; r < panel_rows; ++r) dk[r] = s[r * ld_r + k];
            for (std::ptrdiff_t r = panel_rows; r < panel_width_; ++r) dk[r] = 0.0f;
        }
    };
    for (std::ptrdiff_t p = 0; p < full_panels; ++p)
        transpose_panel(src + p * width * ld_r, width, width, dst + p * width * depth);
    if (tail_rows > 0) transpose_panel(src + full_panels * width * ld_r, tail_rows, tail_width, tail);
}

/// c (ROWS x NVEC*width, row stride ldc) = alpha * a b + (read_c ? beta * c : 0), where a is a
/// packed A micro-panel (kc, MR) of which the first ROWS rows are used, and b a B micro-panel of
/// kc rows of NVEC*width values, row k at b + k * ldb (packed: ldb = NVEC*width, 64-byte aligned).
/// Each element is the same sequence of FMAs over k whatever ROWS and NVEC, so tile shape never
/// changes a result.
/// Kept out of line so the register allocator sees it alone: inlined into the loop nest, GCC 12
/// spills an accumulator of the AVX2 tile (16 registers) and halves its speed.
/// With A_ROWS, a is not packed: row r of the A micro-panel is a + r * lda, contiguous along k
/// (row-major op(A) read in place, which saves transposing it into panels); the sequence of FMAs
/// and so every result is the same as from the packed panel.
template <int ROWS, int NVEC, bool A_ROWS = false>
[[gnu::noinline]] void micro_kernel(std::ptrdiff_t kc, const float* __restrict a, std::ptrdiff_t lda,
                                   const float* __restrict b, std::ptrdiff_t ldb, float* c, std::ptrdiff_t ldc,
                                   float alpha, float beta, bool read_c) {
    using V = Isa::V;
    constexpr int W = Isa::width;
    constexpr int nr = NVEC * W;
    V acc[ROWS][NVEC];
    const float* __restrict arow[ROWS];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) arow[r] = A_ROWS ? a + r * lda : a + r;
    constexpr std::ptrdiff_t a_k = A_ROWS ? 1 : MR;  // distance between consecutive k of one row
    // Fetch the C tile into L1 while the k loop runs: every 64-byte line of each row segment.
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < NVEC; ++v) {
            acc[r][v] = Isa::zero();
            _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + v * W), _MM_HINT_T0);
        }
        _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + nr - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 2
    for (std::ptrdiff_t k = 0; k < kc; ++k) {
        V bv[NVEC];
#pragma GCC unroll 4
        for (int v = 0; v < NVEC; ++v) bv[v] = Isa::load(b + k * ldb + v * W);
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) {
            const V av = Isa::splat(arow[r][k * a_k]);
#pragma GCC unroll 4
            for (int v = 0; v < NVEC; ++v) acc[r][v] = Isa::fma(av, bv[v], acc[r][v]);
        }
    }
    const V va = Isa::splat(alpha);
    if (read_c) {
        const V vb = Isa::splat(beta);
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
            for (int v = 0; v < NVEC; ++v) {
                float* p = c + r * ldc + v * W;
                Isa::store(p, Isa::fma(va, acc[r][v], Isa::mul(vb, Isa::load(p))));
            }
    } else {
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
            for (int v = 0; v < NVEC; ++v) Isa::store(c + r * ldc + v * W, Isa::mul(va, acc[r][v]));
    }
}

using MicroKernel = void (*)(std::ptrdiff_t, const float*, std::ptrdiff_t, const float*, std::ptrdiff_t, float*,
                             std::ptrdiff_t, float, float, bool);

template <bool A_ROWS, std::size_t... I>
constexpr std::array<MicroKernel, sizeof...(I)> make_micro_kernels(std::index_sequence<I...>) {
    return {&micro_kernel<static_cast<int>(I) / Isa::NV + 1, static_cast<int>(I) % Isa::NV + 1, A_ROWS>...};
}

/// micro_kernel<rows, vectors, A_ROWS> at [(rows - 1) * NV + vectors - 1], rows in [1, MR], vectors in [1, NV]:
/// packed A panels, and A rows read in place.
inline constexpr std::array<MicroKernel, MR * Isa::NV> kMicroKernels =
    make_micro_kernels<false>(std::make_index_sequence<MR * Isa::NV>{});
inline constexpr std::array<MicroKernel, MR * Isa::NV> kMicroKernelsRows =
    make_micro_kernels<true>(std::make_index_sequence<MR * Isa::NV>{});

/// Runs the micro-kernel of `rows` rows and panel width nr_panel (a whole number of vectors) on
/// the rows x cols corner of C at c; when cols < nr_panel the tile goes through a scratch tile so
/// only C's own elements are read or written. a is a packed A micro-panel (lda == 0) or, with
/// lda > 0, the first of `rows` rows of op(A) read in place, lda apart. Row k of the B micro-panel
/// is b + k * ldb (ldb = nr_panel for a packed panel).
inline void run_tile(std::ptrdiff_t kc, const float* a, std::ptrdiff_t lda, const float* b, std::ptrdiff_t ldb,
                     int nr_panel, float* c, std::ptrdiff_t ldc, std::ptrdiff_t rows, std::ptrdiff_t cols, float alpha,
                     float beta, bool read_c) {
    const auto index = static_cast<std::size_t>((rows - 1) * Isa::NV + nr_panel / Isa::width - 1);
    const MicroKernel kernel = lda > 0 ? kMicroKernelsRows[index] : kMicroKernels[index];
    if (cols == nr_panel) {
        kernel(kc, a, lda, b, ldb, c, ldc, alpha, beta, read_c);
        return;
    }
    alignas(64) float tile[MR * NR];  // (MR, NR)
    for (std::ptrdiff_t r = 0; r < rows; ++r)
        for (std::ptrdiff_t j = 0; j < nr_panel; ++j) tile[r * NR + j] = (read_c && j < cols) ? c[r * ldc + j] : 0.0f;
    kernel(kc, a, lda, b, ldb, tile, NR, alpha, beta, read_c);
    for (std::ptrdiff_t r = 0; r < rows; ++r)
        for (std::ptrdiff_t j = 0; j < cols; ++j) c[r * ldc + j] = tile[r * NR + j];
}

/// Per-thread packing buffers, 64-byte aligned, allocated on first use and then reused.
class Scratch {
public:
    float* a_block() { return a_.data(static_cast<std::size_t>(Isa::MB) * Isa::KC); }
    float* b_block() { return b_.data(static_cast<std::size_t>(Isa::NB) * Isa::KC); }
    static Scratch& for_this_thread() {
        thread_local Scratch scratch;
        return scratch;
    }

private:
    struct Buffer {
        struct Free {
            void operator()(float* p) const { std::free(p); }
        };
        std::unique_ptr<float, Free> ptr;
        float* data(std::size_t count) {
            if (!ptr) {
                void* p = std::aligned_alloc(64, (count * sizeof(float) + 63) / 64 * 64);
                if (!p) throw std::bad_alloc();
                ptr.reset(static_cast<float*>(p));
            }
            return ptr.get();
        }
    };
    Buffer a_, b_;
};

/// One thread's share: C rows [m_begin, m_end) x columns [n_begin, n_end), full K.
/// op(A)(i, k) = A[i * a_ri + k * a_rk], op(B)(k, j) = B[k * b_rk + j * b_rj].
inline void gemm_range(std::ptrdiff_t m_begin, std::ptrdiff_t m_end, std::ptrdiff_t n_begin, std::ptrdiff_t n_end,
                       std::ptrdiff_t K, float alpha, const float* A, std::ptrdiff_t a_ri, std::ptrdiff_t a_rk,
                       const float* B, std::ptrdiff_t b_rk, std::ptrdiff_t b_rj, float beta, float* C,
                       std::ptrdiff_t ldc, const GemmEpilogue<float>* epilogue) {
    Scratch& scratch = Scratch::for_this_thread();
    float* a_block = scratch.a_block();  // (MB / MR) panels of (KC, MR)
    float* b_block = scratch.b_block();  // (NB / NR) panels of (KC, NR)
    const bool a_in_place = a_rk == 1;  // then a_ri >= 1 is the row stride run_tile is given
    const bool b_in_place = b_rj == 1;
    for (std::ptrdiff_t n0 = n_begin; n0 < n_end; n0 += Isa::NB) {
        const std::ptrdiff_t nb = std::min<std::ptrdiff_t>(Isa::NB, n_end - n0);
        for (std::ptrdiff_t p0 = 0; p0 < K; p0 += Isa::KC) {
            const std::ptrdiff_t kc = std::min<std::ptrdiff_t>(Isa::KC, K - p0);
            const bool first = p0 == 0;
            const bool last = p0 + kc == K;
            const bool read_c = !first || beta != 0.0f;
            const float beta_block = first ? beta : 1.0f;
            // B block: op(B)[p0 : p0 + kc, n0 : n0 + nb] as panels of NR columns. When op(B)'s rows
            // are contiguous (B not transposed) whole panels are read in place and only the last,
            // partial one is packed (zero-padded to whole vectors).
            const float* b_src = B + p0 * b_rk + n0 * b_rj;
            const std::ptrdiff_t b_packed_from = b_in_place ? nb / NR * NR : 0;
            if (b_packed_from < nb)
                pack_block(b_src + b_packed_from * b_rj, b_rj, b_rk, nb - b_packed_from, kc, NR, true,
                           b_block + b_packed_from * kc);
            for (std::ptrdiff_t m0 = m_begin; m0 < m_end; m0 += Isa::MB) {
                const std::ptrdiff_t mb = std::min<std::ptrdiff_t>(Isa::MB, m_end - m0);
                // A block: op(A)[m0 : m0 + mb, p0 : p0 + kc]. Rows contiguous along k are read in
                // place (the block stays in L2 across the B panels); otherwise packed as panels of MR rows.
                const float* a_src = A + m0 * a_ri + p0 * a_rk;
                if (!a_in_place) pack_block(a_src, a_ri, a_rk, mb, kc, MR, false, a_block);
                for (std::ptrdiff_t j = 0; j < nb; j += NR) {
                    const std::ptrdiff_t cols = std::min<std::ptrdiff_t>(NR, nb - j);
                    const bool b_here = j < b_packed_from;  // a whole panel read in place
                    const float* b_panel = b_here ? b_src + j * b_rj : b_block + j * kc;
                    const std::ptrdiff_t b_ld = b_here ? b_rk : panel_width(cols);
                    for (std::ptrdiff_t i = 0; i < mb; i += MR) {
                        const std::ptrdiff_t rows = std::min<std::ptrdiff_t>(MR, mb - i);
                        float* c = C + (m0 + i) * ldc + n0 + j;
                        run_tile(kc, a_in_place ? a_src + i * a_ri : a_block + i * kc, a_in_place ? a_ri : 0,
                                 b_panel, b_ld, panel_width(cols), c, ldc, rows, cols, alpha, beta_block, read_c);
                        if (last && epilogue) (*epilogue)(c, ldc, m0 + i, n0 + j, rows, cols);
                    }
                }
            }
        }
    }
}

/// Products smaller than this many multiply-adds run on one thread.
inline constexpr double kParallelMinFma = 1 << 20;

/// The packed float path. M, N, K > 0, alpha != 0.
inline void gemm_packed(bool trans_a, bool trans_b, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, float alpha,
                        const float* A, std::ptrdiff_t lda, const float* B, std::ptrdiff_t ldb, float beta, float* C,
                        std::ptrdiff_t ldc, const GemmEpilogue<float>* epilogue) {
    const std::ptrdiff_t a_ri = trans_a ? 1 : lda, a_rk = trans_a ? lda : 1;
    const std::ptrdiff_t b_rk = trans_b ? 1 : ldb, b_rj = trans_b ? ldb : 1;
    kernels::detail::split_over_threads(M, N, K, MR, NR, kParallelMinFma,
                                        [&](std::ptrdiff_t m_begin, std::ptrdiff_t m_end, std::ptrdiff_t n_begin, std::ptrdiff_t n_end) {
                                            gemm_range(m_begin, m_end, n_begin, n_end, K, alpha, A, a_ri, a_rk, B, b_rk, b_rj,
                                                       beta, C, ldc, epilogue);
                                        });
}

#endif  // SIMMIM_GEMM_AVX512 || SIMMIM_GEMM_AVX2

}  // namespace gemm_detail

namespace gemm_detail {
/// The body of kernels::gemm for this translation unit's ISA (what the dispatch table of simmim::kernels points to),
/// after kernels::gemm checked the arguments. (No error messages are built here: the per-ISA sources of
/// simmim::kernels must not instantiate std::string code for their ISA, scripts/check-isa-objects.py.)
template <class T>
void gemm_entry(bool trans_a, bool trans_b, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, T alpha, const T* A,
                std::ptrdiff_t lda, const T* B, std::ptrdiff_t ldb, T beta, T* C, std::ptrdiff_t ldc,
                const GemmEpilogue<T>* epilogue) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "simmim::kernels::gemm: T is float or double");
    if (M == 0 || N == 0) return;
    if (K == 0 || alpha == T(0)) {
        scale_c(M, N, beta, C, ldc);
        if (epilogue) (*epilogue)(C, ldc, 0, 0, M, N);
        return;
    }
#if defined(SIMMIM_GEMM_AVX512) || defined(SIMMIM_GEMM_AVX2)
    if constexpr (std::is_same_v<T, float>) {
        gemm_packed(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, epilogue);
        return;
    }
#endif
    gemm_eigen(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (epilogue) (*epilogue)(C, ldc, 0, 0, M, N);
}
}  // namespace gemm_detail

/// Which kernels this program's GEMM and attention run, for start lines and benchmark headers: with
/// simmim::kernels linked (SIMMIM_EXTERN_KERNELS), the level chosen at run time, e.g. "avx512 (run-time
/// dispatch)"; header-only, the path of the compile flags, e.g. "avx2 (compile flags)".
inline std::string kernel_path() {
#if defined(SIMMIM_EXTERN_KERNELS) && !defined(SIMMIM_BUILDING_KERNELS)
    return std::string(dispatch::active().gemm_path) + " (run-time dispatch)";
#else
    return std::string(gemm_float_path) + " (compile flags)";
#endif
}

/// C = alpha * op(A) * op(B) + beta * C (kernels::gemm below without an epilogue).
template <class T>
void gemm(bool trans_a, bool trans_b, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, T alpha, const T* A,
          std::ptrdiff_t lda, const T* B, std::ptrdiff_t ldb, T beta, T* C, std::ptrdiff_t ldc) {
    gemm<T>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, static_cast<const GemmEpilogue<T>*>(nullptr));
}

SIMMIM_ISA_END

/// C = alpha * op(A) * op(B) + beta * C, all row-major.
/// op(A) is M x K: A is M x K (lda >= K) or, with trans_a, K x M (lda >= M).
/// op(B) is K x N: B is K x N (ldb >= N) or, with trans_b, N x K (ldb >= K). C is M x N (ldc >= N).
/// beta == 0 means C is overwritten (never read, so NaN garbage in C does not propagate); alpha == 0
/// or K == 0 leaves A and B unread. C must not overlap A or B.
/// epilogue, when not null, transforms C's elements after they are computed (GemmEpilogue, kernels/gemm_bf16.hpp):
/// C = epilogue(alpha * op(A) * op(B) + beta * C), tile by tile on the packed paths, once on the whole of C otherwise.
/// float products run in the process's matmul precision (kernels/gemm_bf16.hpp): FP32 by default, bf16
/// operands with FP32 accumulation after set_matmul_precision(MatmulPrecision::bf16).
/// Throws std::runtime_error on negative sizes, too-small leading dimensions or null pointers.
template <class T>
void gemm(bool trans_a, bool trans_b, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, T alpha, const T* A,
          std::ptrdiff_t lda, const T* B, std::ptrdiff_t ldb, T beta, T* C, std::ptrdiff_t ldc,
          const GemmEpilogue<T>* epilogue) {
    gemm_detail::check_arguments(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, alpha != T(0));
    if constexpr (std::is_same_v<T, float>) {
        // bf16 (kernels/gemm_bf16.hpp: target attributes, chosen at run time already); set_matmul_precision checked
        // the CPU. Products without work go to the entry, which scales C.
        if (matmul_precision() == MatmulPrecision::bf16 && M > 0 && N > 0 && K > 0 && alpha != T(0)) {
            gemm_bf16(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, epilogue);
            return;
        }
    }
#if defined(SIMMIM_KERNELS_DISPATCHER)
    dispatch::kernels<T>().gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, epilogue);
#else
    gemm_detail::gemm_entry<T>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, epilogue);
#endif
}

}  // namespace simmim::kernels

// Compiled kernels (simmim::kernels, see simmim/kernels/dispatch.hpp): gemm for float and double is instantiated
// once, in src/dispatch.cpp, where it calls the body of the instruction set chosen at run time.
#ifdef SIMMIM_EXTERN_KERNELS
namespace simmim::kernels {
#define SIMMIM_GEMM_INSTANTIATION(EXTERN, T)                                                                  \
    EXTERN template void gemm<T>(bool, bool, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t, T, const T*, \
                                 std::ptrdiff_t, const T*, std::ptrdiff_t, T, T*, std::ptrdiff_t,         \
                                 const GemmEpilogue<T>*);
SIMMIM_GEMM_INSTANTIATION(extern, float)
SIMMIM_GEMM_INSTANTIATION(extern, double)
}  // namespace simmim::kernels
#endif
