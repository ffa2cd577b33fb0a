// simmim/kernels/gemm_bf16.hpp: bfloat16 matrix products with FP32 accumulation (AVX512-BF16), and
// the process-wide matmul precision that sends kernels::gemm<float> to them.
//
// What it computes: C = alpha * bf16(op(A)) * bf16(op(B)) + beta * C, where bf16() rounds every
// operand to bfloat16 (round to nearest even, the hardware's VCVTNE2PS2BF16: denormals become signed
// zeros, NaN stays NaN) and the products are summed in FP32 by VDPBF16PS, two k at a time, k in
// order. This is what torch.autocast("cpu", dtype=torch.bfloat16) does to a Linear or a matmul (its
// oneDNN kernels accumulate in FP32 too), and what the official SimMIM's AMP does on a GPU with fp16.
// C, alpha and beta stay FP32; nothing is stored in bf16 outside the kernel's packing buffers, so
// master weights, optimiser state and checkpoints are FP32 whichever precision runs.
//
// The kernel is compiled for AVX512-BF16 with function target attributes whatever the consumer's
// -march (not with SIMMIM_NO_SIMD, which keeps every path scalar), and chosen at run time:
// set_matmul_precision(MatmulPrecision::bf16) checks the running CPU (CPUID, through
// __builtin_cpu_supports) and throws a std::runtime_error naming the missing feature instead of
// running slow or wrong. SIMMIM_NO_BF16=1 in the environment makes the check fail on any CPU (to test
// the refusal). The setting is global (like torch.set_float32_matmul_precision) and read
// once per gemm call, by the calling thread; set it before training, not while products run.
//
// Structure: the packed loop nest of kernels/gemm.hpp (N blocks > K blocks > pack B > M blocks >
// pack A > micro-panels), 8 x 48 register tile of FP32 accumulators (24 zmm), B packed as pairs of
// consecutive k (one 32-bit word per column: bf16(B[2p][j]) | bf16(B[2p+1][j]) << 16), A either as
// bf16 rows (op(A) row-major: the pair of row i is one 32-bit word of its bf16 row) or as k-pair
// panels of 8 rows; an odd K gets a zero partner. Threads split the larger of M and N into whole
// register tiles, as the FP32 kernel does; each element is the same sequence of operations whatever
// the thread count or tile position, so results are bitwise reproducible across runs and threads.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "simmim/kernels/gemm_epilogue.hpp"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__)) && !defined(SIMMIM_NO_SIMD)
#define SIMMIM_BF16_KERNEL 1
#include <immintrin.h>
#define SIMMIM_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))
#endif

namespace simmim::kernels {

/// The precision of float matrix products (kernels::gemm<float> and every op built on it).
enum class MatmulPrecision {
    fp32,  ///< FP32 operands and accumulation (the default)
    bf16,  ///< operands rounded to bfloat16, FP32 accumulation (AVX512-BF16)
};

/// bfloat16 bits of x as the hardware rounds it: to nearest even; a denormal becomes a zero of its
/// sign; a NaN stays a (quiet) NaN.
inline std::uint16_t bf16_bits(float x) noexcept {
    std::uint32_t u;
    std::memcpy(&u, &x, sizeof u);
    if ((u & 0x7F800000u) == 0) return static_cast<std::uint16_t>((u >> 16) & 0x8000u);  // zero, denormal
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);  // NaN
    u += 0x7FFFu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>(u >> 16);
}

/// The float value of bfloat16 bits.
inline float bf16_to_float(std::uint16_t bits) noexcept {
    const std::uint32_t u = static_cast<std::uint32_t>(bits) << 16;
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}

/// x rounded to bfloat16 (bf16_bits) and back.
inline float bf16_round(float x) noexcept { return bf16_to_float(bf16_bits(x)); }

/// Whether the running CPU can run the bf16 kernel (AVX-512 F/BW/VL/DQ and AVX512-BF16), and the
/// environment does not forbid it (SIMMIM_NO_BF16 set to anything but "0" or "").
inline bool cpu_supports_bf16() noexcept {
    if (const char* no = std::getenv("SIMMIM_NO_BF16"); no && *no && std::strcmp(no, "0") != 0) return false;
#if defined(SIMMIM_BF16_KERNEL)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

namespace detail::bf16 {
inline std::atomic<int>& precision_flag() noexcept {
    static std::atomic<int> flag{0};
    return flag;
}
}  // namespace detail::bf16

/// The precision kernels::gemm<float> runs in.
inline MatmulPrecision matmul_precision() noexcept {
    return detail::bf16::precision_flag().load(std::memory_order_relaxed) ? MatmulPrecision::bf16
                                                                          : MatmulPrecision::fp32;
}

/// Sets the precision of every later float gemm of the process. bf16 throws std::runtime_error when
/// the CPU (or the build) cannot run the bf16 kernel; the precision is then unchanged.
inline void set_matmul_precision(MatmulPrecision precision) {
    if (precision == MatmulPrecision::bf16 && !cpu_supports_bf16()) {
#if defined(SIMMIM_BF16_KERNEL)
        const char* no = std::getenv("SIMMIM_NO_BF16");
        throw std::runtime_error(no && *no && std::strcmp(no, "0") != 0
                                     ? "bf16 matrix products are disabled by SIMMIM_NO_BF16 in the environment"
                                     : "bf16 matrix products need a CPU with AVX512-BF16 (and AVX-512 F/BW/VL/DQ); "
                                       "this one does not have it (use fp32)");
#else
        throw std::runtime_error("bf16 matrix products need an x86-64 CPU with AVX512-BF16 and a GCC or Clang build "
                                 "without SIMMIM_NO_SIMD; this build has no bf16 kernel");
#endif
    }
    detail::bf16::precision_flag().store(precision == MatmulPrecision::bf16 ? 1 : 0, std::memory_order_relaxed);
}

/// "fp32" or "bf16".
inline const char* to_string(MatmulPrecision precision) noexcept {
    return precision == MatmulPrecision::bf16 ? "bf16" : "fp32";
}

/// Sets the matmul precision for a scope and restores the previous one on exit.
class ScopedMatmulPrecision {
public:
    explicit ScopedMatmulPrecision(MatmulPrecision precision) : previous_(matmul_precision()) {
        set_matmul_precision(precision);
    }
    ~ScopedMatmulPrecision() { detail::bf16::precision_flag().store(previous_ == MatmulPrecision::bf16 ? 1 : 0); }
    ScopedMatmulPrecision(const ScopedMatmulPrecision&) = delete;
    ScopedMatmulPrecision& operator=(const ScopedMatmulPrecision&) = delete;

private:
    MatmulPrecision previous_;
};

#if defined(SIMMIM_BF16_KERNEL)
namespace detail::bf16 {

using Word = std::uint32_t;  // a pair of bf16: element 2p in the low half, 2p + 1 in the high half

inline constexpr int MR = 8;        // rows of the register tile
inline constexpr int NV = 3;        // vectors of 16 columns across it
inline constexpr int NR = NV * 16;  // columns of the register tile
inline constexpr int KC = 512;      // depth of a packed block (k values; KC / 2 pairs)
inline constexpr int KP = KC / 2;
inline constexpr int MB = 128;      // rows of a packed A block
inline constexpr int NB = 3072;     // columns of a packed B block
static_assert(MB % MR == 0 && NB % NR == 0 && KC % 32 == 0, "gemm_bf16 blocking");

/// 16 words: bf16(lo[t]) | bf16(hi[t]) << 16.
SIMMIM_BF16_TARGET inline __m512i interleave_pairs(__m512 lo, __m512 hi) {
    const __m512i l = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(lo)));
    const __m512i h = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(hi)));
    return _mm512_or_si512(l, _mm512_slli_epi32(h, 16));
}

/// 16 words from 32 consecutive floats (fewer: the rest zero): word t = bf16(x[2t]) | bf16(x[2t+1]) << 16.
SIMMIM_BF16_TARGET inline __m512i pairs_from_run(const float* x, std::ptrdiff_t count) {
    const auto mask = [](std::ptrdiff_t n) {
        return static_cast<__mmask16>(n >= 16 ? 0xFFFF : n <= 0 ? 0 : (1u << n) - 1u);
    };
    const __m512 lo = _mm512_maskz_loadu_ps(mask(count), x);
    const __m512 hi = _mm512_maskz_loadu_ps(mask(count - 16), x + 16);
    return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
}

/// In-place transpose of a 16 x 16 matrix of 32-bit words held in 16 registers.
SIMMIM_BF16_TARGET inline void transpose_16x16(__m512i r[16]) {
    __m512i a[16], b[16];
    for (int i = 0; i < 8; ++i) {
        a[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {
        b[4 * i + 0] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
        b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    // b[4i + q], 128-bit lane L, holds column 4L + q of rows 4i .. 4i + 3.
    for (int q = 0; q < 4; ++q) {
        const __m512i u0 = _mm512_shuffle_i32x4(b[q], b[4 + q], 0x44), u1 = _mm512_shuffle_i32x4(b[q], b[4 + q], 0xEE);
        const __m512i u2 = _mm512_shuffle_i32x4(b[8 + q], b[12 + q], 0x44),
                      u3 = _mm512_shuffle_i32x4(b[8 + q], b[12 + q], 0xEE);
        r[q] = _mm512_shuffle_i32x4(u0, u2, 0x88);
        r[4 + q] = _mm512_shuffle_i32x4(u0, u2, 0xDD);
        r[8 + q] = _mm512_shuffle_i32x4(u1, u3, 0x88);
        r[12 + q] = _mm512_shuffle_i32x4(u1, u3, 0xDD);
    }
}

inline int panel_width(std::ptrdiff_t cols) { return static_cast<int>((cols + 15) / 16) * 16; }

/// Packs op(B)[0 : kc, 0 : nb] (element (k, j) at src[k * b_rk + j * b_rj], b_rj == 1 or b_rk == 1) into
/// panels of NR columns, k-pair major: panel p at dst + p * NR * kp, word (q, j) at [q * width + j - p * NR],
/// width NR, or for the last panel the fewest whole vectors; columns past nb and a missing partner of
/// an odd kc are zero.
[[gnu::noinline]] SIMMIM_BF16_TARGET inline void pack_b(const float* src, std::ptrdiff_t b_rk, std::ptrdiff_t b_rj,
                                                         std::ptrdiff_t kc, std::ptrdiff_t nb, Word* dst) {
    const std::ptrdiff_t kp = (kc + 1) / 2;
    for (std::ptrdiff_t j0 = 0; j0 < nb; j0 += NR) {
        const int width = panel_width(std::min<std::ptrdiff_t>(NR, nb - j0));
        Word* panel = dst + j0 * kp;
        if (b_rj == 1) {
            for (std::ptrdiff_t q = 0; q < kp; ++q) {
                const float* r0 = src + 2 * q * b_rk + j0;
                const bool has_r1 = 2 * q + 1 < kc;
                for (int v = 0; v < width; v += 16) {
                    const std::ptrdiff_t valid = std::min<std::ptrdiff_t>(16, nb - j0 - v);
                    const __mmask16 m = static_cast<__mmask16>(valid >= 16 ? 0xFFFF : (1u << valid) - 1u);
                    const __m512 lo = _mm512_maskz_loadu_ps(m, r0 + v);
                    const __m512 hi = has_r1 ? _mm512_maskz_loadu_ps(m, r0 + b_rk + v) : _mm512_setzero_ps();
                    _mm512_storeu_si512(panel + q * width + v, interleave_pairs(lo, hi));
                }
            }
        } else {
            // Column j is contiguous along k: 16 columns x 32 k become 16 x 16 words, transposed.
            for (int v = 0; v < width; v += 16) {
                for (std::ptrdiff_t q0 = 0; q0 < kp; q0 += 16) {
                    __m512i w[16];
                    for (int c = 0; c < 16; ++c)
                        w[c] = j0 + v + c < nb ? pairs_from_run(src + (j0 + v + c) * b_rj + 2 * q0, kc - 2 * q0)
                                               : _mm512_setzero_si512();
                    transpose_16x16(w);
                    const std::ptrdiff_t rows = std::min<std::ptrdiff_t>(16, kp - q0);
                    for (std::ptrdiff_t t = 0; t < rows; ++t) _mm512_storeu_si512(panel + (q0 + t) * width + v, w[t]);
                }
            }
        }
    }
}

/// Packs op(A)[0 : mb, 0 : kc] (element (i, k) at src[i * a_ri + k * a_rk]). With a_rk == 1: as bf16
/// rows, row i's pair q at dst[i * KP + q] (returns true). With a_ri == 1: as panels of MR rows,
/// k-pair major, panel p at dst + p * MR * KP, word (i, q) at [q * MR + i - p * MR] (returns false).
[[gnu::noinline]] SIMMIM_BF16_TARGET inline bool pack_a(const float* src, std::ptrdiff_t a_ri, std::ptrdiff_t a_rk,
                                                         std::ptrdiff_t mb, std::ptrdiff_t kc, Word* dst) {
    const std::ptrdiff_t kp = (kc + 1) / 2;
    if (a_rk == 1) {
        for (std::ptrdiff_t i = 0; i < mb; ++i)
            for (std::ptrdiff_t q0 = 0; q0 < kp; q0 += 16)
                _mm512_storeu_si512(dst + i * KP + q0, pairs_from_run(src + i * a_ri + 2 * q0, kc - 2 * q0));
        return true;
    }
    const std::ptrdiff_t panels = (mb + MR - 1) / MR;
    for (std::ptrdiff_t q = 0; q < kp; ++q) {
        const float* r0 = src + 2 * q * a_rk;
        const bool has_r1 = 2 * q + 1 < kc;
        for (std::ptrdiff_t p = 0; p < panels; p += 2) {
            const std::ptrdiff_t valid = std::min<std::ptrdiff_t>(16, mb - p * MR);
            const __mmask16 m = static_cast<__mmask16>(valid >= 16 ? 0xFFFF : (1u << valid) - 1u);
            const __m512 lo = _mm512_maskz_loadu_ps(m, r0 + p * MR);
            const __m512 hi = has_r1 ? _mm512_maskz_loadu_ps(m, r0 + a_rk + p * MR) : _mm512_setzero_ps();
            const __m512i w = interleave_pairs(lo, hi);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (p * KP + q) * MR), _mm512_castsi512_si256(w));
            if (p + 1 < panels)
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + ((p + 1) * KP + q) * MR),
                                    _mm512_extracti64x4_epi64(w, 1));
        }
    }
    return false;
}

/// c (ROWS x NVEC*16, stride ldc) = alpha * a b + (read_c ? beta * c : 0) over kp pairs of k. a: with A_ROWS,
/// row r's pair q at a[r * KP + q]; otherwise a panel, pair q of row r at a[q * MR + r]. b: pair q of the
/// 16 v-th columns at b + q * ldb + 16 v.
template <int ROWS, int NVEC, bool A_ROWS>
[[gnu::noinline]] SIMMIM_BF16_TARGET void micro_kernel(std::ptrdiff_t kp, const Word* __restrict a,
                                                       const Word* __restrict b, std::ptrdiff_t ldb, float* c,
                                                       std::ptrdiff_t ldc, float alpha, float beta, bool read_c) {
    __m512 acc[ROWS][NVEC];
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < NVEC; ++v) {
            acc[r][v] = _mm512_setzero_ps();
            _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + v * 16), _MM_HINT_T0);
        }
    }
#pragma GCC unroll 2
    for (std::ptrdiff_t q = 0; q < kp; ++q) {
        __m512bh bv[NVEC];
#pragma GCC unroll 4
        for (int v = 0; v < NVEC; ++v) bv[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + q * ldb + v * 16));
#pragma GCC unroll 8
        for (int r = 0; r < ROWS; ++r) {
            const Word w = A_ROWS ? a[r * KP + q] : a[q * MR + r];
            const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(w)));
#pragma GCC unroll 4
            for (int v = 0; v < NVEC; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bv[v]);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha);
    const __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < NVEC; ++v) {
            float* p = c + r * ldc + v * 16;
            _mm512_storeu_ps(p, read_c ? _mm512_fmadd_ps(va, acc[r][v], _mm512_mul_ps(vb, _mm512_loadu_ps(p)))
                                       : _mm512_mul_ps(va, acc[r][v]));
        }
}

using MicroKernel = void (*)(std::ptrdiff_t, const Word*, const Word*, std::ptrdiff_t, float*, std::ptrdiff_t, float,
                             float, bool);

template <bool A_ROWS, std::size_t... I>
constexpr std::array<MicroKernel, sizeof...(I)> make_micro_kernels(std::index_sequence<I...>) {
    return {&micro_kernel<static_cast<int>(I) / NV + 1, static_cast<int>(I) % NV + 1, A_ROWS>...};
}
inline constexpr std::array<MicroKernel, MR * NV> kPanels = make_micro_kernels<false>(std::make_index_sequence<MR * NV>{});
inline constexpr std::array<MicroKernel, MR * NV> kRows = make_micro_kernels<true>(std::make_index_sequence<MR * NV>{});

/// Per-thread packing buffers (64-byte aligned), allocated on first use and reused.
class Scratch {
public:
    Word* a_block() { return a_.data(static_cast<std::size_t>(MB) * KP); }
    Word* b_block() { return b_.data(static_cast<std::size_t>(NB) * KP); }
    static Scratch& for_this_thread() {
        thread_local Scratch scratch;
        return scratch;
    }

private:
    struct Buffer {
        struct Free {
            void operator()(Word* p) const { std::free(p); }
        };
        std::unique_ptr<Word, Free> ptr;
        Word* data(std::size_t count) {
            if (!ptr) {
                void* p = std::aligned_alloc(64, (count * sizeof(Word) + 63) / 64 * 64);
                if (!p) throw std::bad_alloc();
                ptr.reset(static_cast<Word*>(p));
            }
            return ptr.get();
        }
    };
    Buffer a_, b_;
};

/// One thread's share of C: rows [m_begin, m_end) x columns [n_begin, n_end), all of K.
[[gnu::noinline]] SIMMIM_BF16_TARGET inline void gemm_range(std::ptrdiff_t m_begin, std::ptrdiff_t m_end,
                                                             std::ptrdiff_t n_begin, std::ptrdiff_t n_end,
                                                             std::ptrdiff_t K, float alpha, const float* A,
                                                             std::ptrdiff_t a_ri, std::ptrdiff_t a_rk, const float* B,
                                                             std::ptrdiff_t b_rk, std::ptrdiff_t b_rj, float beta,
                                                             float* C, std::ptrdiff_t ldc,
                                                             const GemmEpilogue<float>* epilogue) {
    Scratch& scratch = Scratch::for_this_thread();
    Word* a_block = scratch.a_block();
    Word* b_block = scratch.b_block();
    alignas(64) float tile[MR * NR];
    for (std::ptrdiff_t n0 = n_begin; n0 < n_end; n0 += NB) {
        const std::ptrdiff_t nb = std::min<std::ptrdiff_t>(NB, n_end - n0);
        for (std::ptrdiff_t p0 = 0; p0 < K; p0 += KC) {
            const std::ptrdiff_t kc = std::min<std::ptrdiff_t>(KC, K - p0);
            const std::ptrdiff_t kp = (kc + 1) / 2;
            const bool read_c = p0 > 0 || beta != 0.0f;
            const float beta_block = p0 > 0 ? 1.0f : beta;
            const bool last = p0 + kc == K;
            pack_b(B + p0 * b_rk + n0 * b_rj, b_rk, b_rj, kc, nb, b_block);
            for (std::ptrdiff_t m0 = m_begin; m0 < m_end; m0 += MB) {
                const std::ptrdiff_t mb = std::min<std::ptrdiff_t>(MB, m_end - m0);
                const bool rows = pack_a(A + m0 * a_ri + p0 * a_rk, a_ri, a_rk, mb, kc, a_block);
                for (std::ptrdiff_t j = 0; j < nb; j += NR) {
                    const std::ptrdiff_t cols = std::min<std::ptrdiff_t>(NR, nb - j);
                    const int width = panel_width(cols);
                    const Word* b_panel = b_block + j * kp;
                    for (std::ptrdiff_t i = 0; i < mb; i += MR) {
                        const std::ptrdiff_t tile_rows = std::min<std::ptrdiff_t>(MR, mb - i);
                        const auto index = static_cast<std::size_t>((tile_rows - 1) * NV + width / 16 - 1);
                        const MicroKernel kernel = rows ? kRows[index] : kPanels[index];
                        const Word* a_panel = a_block + i * KP;  // row i, or panel i / MR
                        float* c = C + (m0 + i) * ldc + n0 + j;
                        if (cols == width) {
                            kernel(kp, a_panel, b_panel, width, c, ldc, alpha, beta_block, read_c);
                        } else {
                            for (std::ptrdiff_t r = 0; r < tile_rows; ++r)
                                for (std::ptrdiff_t x = 0; x < width; ++x)
                                    tile[r * NR + x] = (read_c && x < cols) ? c[r * ldc + x] : 0.0f;
                            kernel(kp, a_panel, b_panel, width, tile, NR, alpha, beta_block, read_c);
                            for (std::ptrdiff_t r = 0; r < tile_rows; ++r)
                                for (std::ptrdiff_t x = 0; x < cols; ++x) c[r * ldc + x] = tile[r * NR + x];
                        }
                        if (last && epilogue) (*epilogue)(c, ldc, m0 + i, n0 + j, tile_rows, cols);
                    }
                }
            }
        }
    }
}

/// Products smaller than this many multiply-adds run on one thread.
inline constexpr double kParallelMinFma = 1 << 20;

}  // namespace detail::bf16
#endif  // SIMMIM_BF16_KERNEL

/// C = alpha * bf16(op(A)) * bf16(op(B)) + beta * C with FP32 accumulation; the arguments as kernels::gemm
/// (row-major, op(A) M x K, op(B) K x N; beta == 0 does not read C), already checked by the caller, M, N,
/// K > 0 and alpha != 0; epilogue (may be null) as kernels::gemm's. The CPU must support the kernel
/// (cpu_supports_bf16()); throws otherwise.
inline void gemm_bf16(bool trans_a, bool trans_b, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, float alpha,
                      const float* A, std::ptrdiff_t lda, const float* B, std::ptrdiff_t ldb, float beta, float* C,
                      std::ptrdiff_t ldc, const GemmEpilogue<float>* epilogue = nullptr) {
#if defined(SIMMIM_BF16_KERNEL)
    using namespace detail::bf16;
    const std::ptrdiff_t a_ri = trans_a ? 1 : lda, a_rk = trans_a ? lda : 1;
    const std::ptrdiff_t b_rk = trans_b ? 1 : ldb, b_rj = trans_b ? ldb : 1;
    kernels::detail::split_over_threads(M, N, K, MR, NR, kParallelMinFma,
                                        [&](std::ptrdiff_t m_begin, std::ptrdiff_t m_end, std::ptrdiff_t n_begin, std::ptrdiff_t n_end) {
                                            gemm_range(m_begin, m_end, n_begin, n_end, K, alpha, A, a_ri, a_rk, B, b_rk, b_rj,
                                                       beta, C, ldc, epilogue);
                                        });
#else
    (void)trans_a, (void)trans_b, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)B, (void)ldb;
    (void)beta, (void)C, (void)ldc, (void)epilogue;
    throw std::runtime_error("simmim::kernels::gemm_bf16: this build has no bf16 kernel (x86-64 GCC or Clang only)");
#endif
}

}  // namespace simmim::kernels
