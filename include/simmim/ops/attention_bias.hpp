// simmim/ops/attention_bias.hpp: multi-head self-attention with an additive per-head score bias
// (BEiT's relative position bias), and the BEiT relative position index that builds that bias.
//
// Layouts (those of ops/attention.hpp and ops/attention_fused.hpp, plus the bias):
//   qkv  (B, N, 3, H, Dh)  row (b, n) holds q | k | v, each (H, Dh)
//   bias (H, N, N)         added to the scaled scores of every sample
//   out  (B, N, H, Dh)
//   lse  (B, H, N)         lse[b, h, i] = log sum_j exp(s_ij), s_ij = q_i . k_j / sqrt(Dh) + bias[h, i, j]
// P = softmax_keys(s), out = P v. The forward saves lse only; the backward recomputes P = exp(s - lse)
// head by head, so no (B, H, N, N) tensor is ever kept. Backward accumulates (+=) into dqkv and into
// dbias (H, N, N), the gradient summed over the batch.
//
// Windowed attention (Swin): an optional additive `mask` (nW, N, N), shared by the heads, where sample
// b (a window) takes mask[b % nW] (the official attn.view(B_ / nW, nW, H, N, N) + mask rule), so the
// scores are s_ij + mask[b % nW, i, j]. The mask is a constant: dbias is still d loss / d bias, summed
// over every window.
//
// Two implementations with the same signatures and semantics:
//   attention_bias_forward / _backward: per (b, h) head, the products Q K^T, P V, P^T dO, dO V^T,
//     dS K, dS^T Q go through kernels::gemm (the packed sgemm for float, Eigen for double) on an
//     (N, N) per-thread scratch; row softmax and its backward are xsimd loops (scalar without SIMD).
//     Forward: one OpenMP loop over the B*H heads. Backward: one OpenMP loop over (batch chunk, head),
//     kBiasChunks fixed batch chunks, each summing its samples' dS into its own (H, N, N) partial in
//     sample order; the partials are then added to dbias in chunk order. dbias is therefore
//     bit-identical whatever the thread count (dqkv of a head is written by one task only).
//   attention_bias_forward_reference / _backward_reference: plain scalar loops, the test oracle.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "simmim/core/tensor.hpp"
#include "simmim/kernels/gemm.hpp"
#include "simmim/kernels/isa.hpp"
#include "simmim/kernels/simd.hpp"

namespace simmim::ops {
SIMMIM_ISA_BEGIN

// ---------------------------------------------------------------------------------------------
// BEiT relative position bias
// ---------------------------------------------------------------------------------------------

/// Rows of BEiT's relative position bias table for a g x g token grid plus a cls token:
/// (2g - 1)^2 relative offsets, then cls-to-token, token-to-cls and cls-to-cls.
constexpr int relative_position_table_rows(int g) { return (2 * g - 1) * (2 * g - 1) + 3; }

/// BEiT's relative_position_index for a g x g grid plus cls, (N, N) row-major, N = g*g + 1. Token
/// t >= 1 sits at grid (r, c) = ((t-1) / g, (t-1) % g); for tokens i, j >= 1 the index is
/// (r_i - r_j + g - 1) * (2g - 1) + (c_i - c_j + g - 1); row 0 (cls -> token) is R - 3, column 0
/// (token -> cls) is R - 2 and (0, 0) is R - 1, R = relative_position_table_rows(g).
/// Throws std::invalid_argument unless g >= 1.
inline std::vector<std::int32_t> relative_position_index(int g) {
    if (g < 1) throw std::invalid_argument("relative_position_index: grid side must be >= 1, found " + std::to_string(g));
    const int N = g * g + 1, R = relative_position_table_rows(g);
    std::vector<std::int32_t> index(static_cast<std::size_t>(N) * N);
    for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
            std::int32_t v;
            if (i == 0 && j == 0)
                v = R - 1;
            else if (i == 0)
                v = R - 3;
            else if (j == 0)
                v = R - 2;
            else {
                const int ri = (i - 1) / g, ci = (i - 1) % g, rj = (j - 1) / g, cj = (j - 1) % g;
                v = (ri - rj + g - 1) * (2 * g - 1) + (ci - cj + g - 1);
            }
            index[static_cast<std::size_t>(i) * N + j] = v;
        }
    return index;
}

/// bias (H, N, N) = table[index[i, j], h], the gather of BEiT's RelativePositionBias.forward();
/// table is (rows, H) row-major, index (N, N) with entries in [0, rows).
template <class T>
void relative_position_bias_forward(T* bias, const T* table, const std::int32_t* index, int N, int H) {
    const std::ptrdiff_t NN = static_cast<std::ptrdiff_t>(N) * N;
    for (int h = 0; h < H; ++h)
        for (std::ptrdiff_t ij = 0; ij < NN; ++ij) bias[h * NN + ij] = table[static_cast<std::ptrdiff_t>(index[ij]) * H + h];
}

/// dtable[index[i, j], h] += dbias[h, i, j] (the scatter-add adjoint of the gather), summed in the
/// fixed order (i, j) ascending for each head: deterministic.
template <class T>
void relative_position_bias_backward(T* dtable, const T* dbias, const std::int32_t* index, int N, int H) {
    const std::ptrdiff_t NN = static_cast<std::ptrdiff_t>(N) * N;
    for (int h = 0; h < H; ++h)
        for (std::ptrdiff_t ij = 0; ij < NN; ++ij) dtable[static_cast<std::ptrdiff_t>(index[ij]) * H + h] += dbias[h * NN + ij];
}

// ---------------------------------------------------------------------------------------------
// Scalar reference
// ---------------------------------------------------------------------------------------------

/// Scalar reference of attention_bias_forward (see the file comment for layouts).
template <class T>
void attention_bias_forward_reference(T* out, T* lse, const T* qkv, const T* bias, int B, int N, int H, int Dh,
                                      const T* mask = nullptr, int mask_windows = 1) {
    const std::ptrdiff_t D = static_cast<std::ptrdiff_t>(H) * Dh;
    const auto extra = [&](int b, int i, int j) {
        return mask ? mask[(static_cast<std::ptrdiff_t>(b % mask_windows) * N + i) * N + j] : T(0);
    };
    const T scale = T(1) / std::sqrt(T(Dh));
    std::vector<T> p(static_cast<std::size_t>(N));
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int i = 0; i < N; ++i) {
                const T* q = qkv + (static_cast<std::ptrdiff_t>(b) * N + i) * 3 * D + h * Dh;
                T m = -std::numeric_limits<T>::infinity();
                for (int j = 0; j < N; ++j) {
                    const T* k = qkv + (static_cast<std::ptrdiff_t>(b) * N + j) * 3 * D + D + h * Dh;
                    T s = 0;
                    for (int d = 0; d < Dh; ++d) s += q[d] * k[d];
                    p[j] = s * scale + bias[(static_cast<std::ptrdiff_t>(h) * N + i) * N + j] + extra(b, i, j);
                    m = std::max(m, p[j]);
                }
                T sum = 0;
                for (int j = 0; j < N; ++j) sum += (p[j] = std::exp(p[j] - m));
                T* o = out + (static_cast<std::ptrdiff_t>(b) * N + i) * D + h * Dh;
                for (int d = 0; d < Dh; ++d) o[d] = 0;
                for (int j = 0; j < N; ++j) {
                    const T* v = qkv + (static_cast<std::ptrdiff_t>(b) * N + j) * 3 * D + 2 * D + h * Dh;
                    for (int d = 0; d < Dh; ++d) o[d] += p[j] / sum * v[d];
                }
                lse[(static_cast<std::ptrdiff_t>(b) * H + h) * N + i] = m + std::log(sum);
            }
}

/// Scalar reference of attention_bias_backward: accumulates dqkv (B, N, 3, H, Dh) and dbias (H, N, N).
template <class T>
void attention_bias_backward_reference(T* dqkv, T* dbias, const T* dout, const T* qkv, const T* out, const T* lse,
                                       const T* bias, int B, int N, int H, int Dh, const T* mask = nullptr, int mask_windows = 1) {
    const std::ptrdiff_t D = static_cast<std::ptrdiff_t>(H) * Dh;
    const auto extra = [&](int b, int i, int j) {
        return mask ? mask[(static_cast<std::ptrdiff_t>(b % mask_windows) * N + i) * N + j] : T(0);
    };
    const T scale = T(1) / std::sqrt(T(Dh));
    const auto row = [&](const T* base, int b, int n) { return base + (static_cast<std::ptrdiff_t>(b) * N + n) * 3 * D; };
    std::vector<T> p(static_cast<std::size_t>(N)), ds(static_cast<std::size_t>(N));
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h)
            for (int i = 0; i < N; ++i) {
                const T* q = row(qkv, b, i) + h * Dh;
                const T* dO = dout + (static_cast<std::ptrdiff_t>(b) * N + i) * D + h * Dh;
                const T* O = out + (static_cast<std::ptrdiff_t>(b) * N + i) * D + h * Dh;
                T delta = 0;  // sum_j P_ij dP_ij = dO_i . O_i
                for (int d = 0; d < Dh; ++d) delta += dO[d] * O[d];
                const T l = lse[(static_cast<std::ptrdiff_t>(b) * H + h) * N + i];
                for (int j = 0; j < N; ++j) {
                    const T* k = row(qkv, b, j) + D + h * Dh;
                    const T* v = row(qkv, b, j) + 2 * D + h * Dh;
                    T s = 0, dp = 0;
                    for (int d = 0; d < Dh; ++d) s += q[d] * k[d], dp += dO[d] * v[d];
                    p[j] = std::exp(s * scale + bias[(static_cast<std::ptrdiff_t>(h) * N + i) * N + j] + extra(b, i, j) - l);
                    ds[j] = p[j] * (dp - delta);
                    dbias[(static_cast<std::ptrdiff_t>(h) * N + i) * N + j] += ds[j];
                }
                T* dq = dqkv + (static_cast<std::ptrdiff_t>(b) * N + i) * 3 * D + h * Dh;
                for (int j = 0; j < N; ++j) {
                    const T* k = row(qkv, b, j) + D + h * Dh;
                    T* dk = dqkv + (static_cast<std::ptrdiff_t>(b) * N + j) * 3 * D + D + h * Dh;
                    T* dv = dk + D;
                    for (int d = 0; d < Dh; ++d) {
                        dq[d] += ds[j] * scale * k[d];
                        dk[d] += ds[j] * scale * q[d];
                        dv[d] += p[j] * dO[d];
                    }
                }
            }
}

// ---------------------------------------------------------------------------------------------
// Fast path
// ---------------------------------------------------------------------------------------------

namespace attention_bias_detail {

/// Fixed batch chunks of the dbias reduction (determinism: independent of the thread count).
inline constexpr int kBiasChunks = 8;

/// Row stride of the (N, N) scratch tiles: a whole number of 64-byte lines.
inline std::ptrdiff_t tile_ld(int N) { return (static_cast<std::ptrdiff_t>(N) + 15) / 16 * 16; }

inline int thread_count() {
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

inline void validate(const char* who, int B, int N, int H, int Dh, std::initializer_list<std::pair<const void*, const char*>> ptrs) {
    if (B <= 0 || N <= 0 || H <= 0 || Dh <= 0)
        throw std::invalid_argument(std::string(who) + ": sizes must be positive, found B = " + std::to_string(B) +
                                    ", N = " + std::to_string(N) + ", H = " + std::to_string(H) + ", Dh = " + std::to_string(Dh));
    for (const auto& [p, name] : ptrs)
        if (p == nullptr) throw std::invalid_argument(std::string(who) + ": " + name + " is null");
}

/// The (N, N) bias of sample b, head h: bias[h], or bias[h] + mask[b % nW] written to `tmp` when there is a mask.
template <class T>
const T* sample_bias(T* tmp, const T* bias, const T* mask, int mask_windows, int b, int h, int N) {
    const std::ptrdiff_t NN = static_cast<std::ptrdiff_t>(N) * N;
    const T* bh = bias + h * NN;
    if (!mask) return bh;
    const T* mw = mask + static_cast<std::ptrdiff_t>(b % mask_windows) * NN;
    for (std::ptrdiff_t e = 0; e < NN; ++e) tmp[e] = bh[e] + mw[e];
    return tmp;
}

inline void validate_mask(const char* who, const void* mask, int mask_windows, int B) {
    if (mask && (mask_windows < 1 || B % mask_windows != 0))
        throw std::invalid_argument(std::string(who) + ": the mask's window count must divide the batch of windows, found " +
                                    std::to_string(mask_windows) + " and " + std::to_string(B));
}

/// row[0, n) += bias[0, n); row = softmax(row); returns the row's log-sum-exp (before normalising).
template <class T>
T softmax_row(T* row, const T* bias, int n) {
    std::ptrdiff_t j = 0;
    T m = -std::numeric_limits<T>::infinity();
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) {
        using V = kernels::Batch<T>;
        constexpr std::ptrdiff_t W = kernels::lanes<T>;
        V vmax(m);
        for (; j + W <= n; j += W) {
            const V x = V::load_unaligned(row + j) + V::load_unaligned(bias + j);
            x.store_unaligned(row + j);
            vmax = xsimd::max(vmax, x);
        }
        alignas(64) T lanes[W];
        vmax.store_aligned(lanes);
        for (std::ptrdiff_t l = 0; l < W; ++l) m = std::max(m, lanes[l]);
        for (std::ptrdiff_t t = j; t < n; ++t) m = std::max(m, row[t] += bias[t]);
        const V vm(m);
        V vsum(T(0));
        for (j = 0; j + W <= n; j += W) {
            const V e = kernels::exp<T>(V::load_unaligned(row + j) - vm);
            e.store_unaligned(row + j);
            vsum += e;
        }
        T sum = kernels::hsum<T>(vsum);
        if (j < n) {  // tail through a padded batch: the same exp as the body
            const std::ptrdiff_t r = n - j;
            kernels::store_partial(row + j, kernels::exp<T>(kernels::load_partial(row + j, r) - vm), r);
            for (std::ptrdiff_t t = j; t < n; ++t) sum += row[t];
        }
        const V inv(T(1) / sum);
        for (j = 0; j + W <= n; j += W) (V::load_unaligned(row + j) * inv).store_unaligned(row + j);
        for (; j < n; ++j) row[j] *= T(1) / sum;
        return m + std::log(sum);
    }
#endif
    for (; j < n; ++j) m = std::max(m, row[j] += bias[j]);
    T sum = 0;
    for (j = 0; j < n; ++j) sum += (row[j] = std::exp(row[j] - m));
    for (j = 0; j < n; ++j) row[j] *= T(1) / sum;
    return m + std::log(sum);
}

/// row[0, n) = exp(row + bias - lse): the probabilities recomputed from the saved log-sum-exp.
template <class T>
void probs_row(T* row, const T* bias, T lse, int n) {
    std::ptrdiff_t j = 0;
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) {
        using V = kernels::Batch<T>;
        constexpr std::ptrdiff_t W = kernels::lanes<T>;
        const V vl(lse);
        for (; j + W <= n; j += W)
            kernels::exp<T>(V::load_unaligned(row + j) + V::load_unaligned(bias + j) - vl).store_unaligned(row + j);
        if (j < n) {
            const std::ptrdiff_t r = n - j;
            kernels::store_partial(row + j, kernels::exp<T>(kernels::load_partial(row + j, r) + kernels::load_partial(bias + j, r) - vl), r);
        }
        return;
    }
#endif
    for (; j < n; ++j) row[j] = std::exp(row[j] + bias[j] - lse);
}

/// ds[0, n) = p * (ds - delta) (ds holds dP on entry); acc[0, n) += ds.
template <class T>
void dsoftmax_row(T* ds, const T* p, T delta, T* acc, int n) {
    std::ptrdiff_t j = 0;
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) {
        using V = kernels::Batch<T>;
        constexpr std::ptrdiff_t W = kernels::lanes<T>;
        const V vd(delta);
        for (; j + W <= n; j += W) {
            const V g = V::load_unaligned(p + j) * (V::load_unaligned(ds + j) - vd);
            g.store_unaligned(ds + j);
            (V::load_unaligned(acc + j) + g).store_unaligned(acc + j);
        }
    }
#endif
    for (; j < n; ++j) {
        ds[j] = p[j] * (ds[j] - delta);
        acc[j] += ds[j];
    }
}

}  // namespace attention_bias_detail

namespace attention_bias_detail {
// The bodies of ops::attention_bias_forward / attention_bias_backward for this translation unit's ISA, after the
// public functions checked the arguments.
template <class T>
void forward_entry(T* out, T* lse, const T* qkv, const T* bias, int B, int N, int H, int Dh, const T* mask,
                   int mask_windows) {
    const std::ptrdiff_t D = static_cast<std::ptrdiff_t>(H) * Dh, ld = tile_ld(N), NN = static_cast<std::ptrdiff_t>(N) * N;
    const T scale = T(1) / std::sqrt(T(Dh));
    const double work = 2.0 * B * H * static_cast<double>(N) * N * Dh;
    const int threads = work < 1e6 ? 1 : std::min(thread_count(), B * H);
    const std::ptrdiff_t per_thread = N * ld + (mask ? (NN + 15) / 16 * 16 : 0);  // scores, then the sample's bias when masked
    AlignedVector<T> scratch(static_cast<std::size_t>(threads * per_thread));
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
    for (int b = 0; b < B; ++b)
        for (int h = 0; h < H; ++h) {
            T* s = scratch.data() + static_cast<std::ptrdiff_t>(thread_id()) * per_thread;  // (N, ld)
            const T* bias_bh = sample_bias(s + N * ld, bias, mask, mask_windows, b, h, N);
            const T* q = qkv + static_cast<std::ptrdiff_t>(b) * N * 3 * D + h * Dh;
            const T* k = q + D;
            const T* v = q + 2 * D;
            kernels::gemm<T>(false, true, N, N, Dh, scale, q, 3 * D, k, 3 * D, T(0), s, ld);
            T* l = lse + (static_cast<std::ptrdiff_t>(b) * H + h) * N;
            for (int i = 0; i < N; ++i) l[i] = softmax_row(s + i * ld, bias_bh + static_cast<std::ptrdiff_t>(i) * N, N);
            kernels::gemm<T>(false, false, N, Dh, N, T(1), s, ld, v, 3 * D, T(0), out + static_cast<std::ptrdiff_t>(b) * N * D + h * Dh, D);
        }
}

template <class T>
void backward_entry(T* dqkv, T* dbias, const T* dout, const T* qkv, const T* out, const T* lse, const T* bias, int B,
                    int N, int H, int Dh, const T* mask, int mask_windows) {
    const std::ptrdiff_t D = static_cast<std::ptrdiff_t>(H) * Dh, ld = tile_ld(N), NN = static_cast<std::ptrdiff_t>(N) * N;
    const T scale = T(1) / std::sqrt(T(Dh));
    const int chunks = std::min(kBiasChunks, B);
    const double work = 5.0 * B * H * static_cast<double>(N) * N * Dh;
    const int threads = work < 1e6 ? 1 : std::min(thread_count(), chunks * H);
    const std::ptrdiff_t per_thread = 2 * N * ld + (mask ? (NN + 15) / 16 * 16 : 0);  // P, dP / dS, then the sample's bias when masked
    AlignedVector<T> scratch(static_cast<std::size_t>(threads * per_thread));
    AlignedVector<T> partial(static_cast<std::size_t>(chunks) * H * NN, T(0));  // (chunks, H, N, N)
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
    for (int c = 0; c < chunks; ++c)
        for (int h = 0; h < H; ++h) {
            T* p = scratch.data() + static_cast<std::ptrdiff_t>(thread_id()) * per_thread;  // (N, ld) P
            T* ds = p + static_cast<std::ptrdiff_t>(N) * ld;                                        // (N, ld) dP, then dS
            T* acc = partial.data() + (static_cast<std::ptrdiff_t>(c) * H + h) * NN;
            for (int b = c * B / chunks; b < (c + 1) * B / chunks; ++b) {
                const T* bias_h = sample_bias(ds + N * ld, bias, mask, mask_windows, b, h, N);
                const T* q = qkv + static_cast<std::ptrdiff_t>(b) * N * 3 * D + h * Dh;
                const T* k = q + D;
                const T* v = q + 2 * D;
                T* dq = dqkv + static_cast<std::ptrdiff_t>(b) * N * 3 * D + h * Dh;
                T* dk = dq + D;
                T* dv = dq + 2 * D;
                const T* dO = dout + static_cast<std::ptrdiff_t>(b) * N * D + h * Dh;
                const T* O = out + static_cast<std::ptrdiff_t>(b) * N * D + h * Dh;
                const T* l = lse + (static_cast<std::ptrdiff_t>(b) * H + h) * N;
                kernels::gemm<T>(false, true, N, N, Dh, scale, q, 3 * D, k, 3 * D, T(0), p, ld);
                for (int i = 0; i < N; ++i) probs_row(p + i * ld, bias_h + static_cast<std::ptrdiff_t>(i) * N, l[i], N);
                kernels::gemm<T>(true, false, N, Dh, N, T(1), p, ld, dO, D, T(1), dv, 3 * D);       // dV += P^T dO
                kernels::gemm<T>(false, true, N, N, Dh, T(1), dO, D, v, 3 * D, T(0), ds, ld);       // dP = dO V^T
                for (int i = 0; i < N; ++i) {
                    T delta = 0;  // sum_j P_ij dP_ij = dO_i . O_i
                    for (int d = 0; d < Dh; ++d) delta += dO[i * D + d] * O[i * D + d];
                    dsoftmax_row(ds + i * ld, p + i * ld, delta, acc + static_cast<std::ptrdiff_t>(i) * N, N);
                }
                kernels::gemm<T>(false, false, N, Dh, N, scale, ds, ld, k, 3 * D, T(1), dq, 3 * D);  // dQ += dS K / sqrt(Dh)
                kernels::gemm<T>(true, false, N, Dh, N, scale, ds, ld, q, 3 * D, T(1), dk, 3 * D);   // dK += dS^T Q / sqrt(Dh)
            }
        }
    const std::ptrdiff_t total = static_cast<std::ptrdiff_t>(H) * NN;
#pragma omp parallel for schedule(static) if (total * chunks >= kernels::kParallelMinWork)
    for (std::ptrdiff_t e = 0; e < total; ++e) {
        T sum = dbias[e];
        for (int c = 0; c < chunks; ++c) sum += partial[static_cast<std::size_t>(c) * total + e];
        dbias[e] = sum;
    }
}
}  // namespace attention_bias_detail

SIMMIM_ISA_END

/// out (B, N, H, Dh) = softmax(q k^T / sqrt(Dh) + bias[h]) v per (batch, head); lse (B, H, N) the
/// row log-sum-exp of the biased scores (saved for attention_bias_backward). qkv is (B, N, 3, H, Dh),
/// bias (H, N, N), mask (nW, N, N) or null (see the file comment). Throws std::invalid_argument on
/// non-positive sizes, null pointers or a window count that does not divide B.
template <class T>
void attention_bias_forward(T* out, T* lse, const T* qkv, const T* bias, int B, int N, int H, int Dh, const T* mask = nullptr,
                            int mask_windows = 1) {
    attention_bias_detail::validate("attention_bias_forward", B, N, H, Dh, {{out, "out"}, {lse, "lse"}, {qkv, "qkv"}, {bias, "bias"}});
    attention_bias_detail::validate_mask("attention_bias_forward", mask, mask_windows, B);
#if defined(SIMMIM_KERNELS_DISPATCHER)
    kernels::dispatch::kernels<T>().attention_bias_forward(out, lse, qkv, bias, B, N, H, Dh, mask, mask_windows);
#else
    attention_bias_detail::forward_entry<T>(out, lse, qkv, bias, B, N, H, Dh, mask, mask_windows);
#endif
}

/// Given dout (B, N, H, Dh) and the forward's qkv, out, lse and bias, accumulates (+=) dq, dk, dv into
/// dqkv (B, N, 3, H, Dh) and the batch-summed bias gradient into dbias (H, N, N). Deterministic: the
/// result does not depend on the thread count. mask and mask_windows as in the forward. Throws
/// std::invalid_argument on non-positive sizes, null pointers or a window count that does not divide B.
template <class T>
void attention_bias_backward(T* dqkv, T* dbias, const T* dout, const T* qkv, const T* out, const T* lse, const T* bias, int B,
                             int N, int H, int Dh, const T* mask = nullptr, int mask_windows = 1) {
    attention_bias_detail::validate("attention_bias_backward", B, N, H, Dh,
                                        {{dqkv, "dqkv"}, {dbias, "dbias"}, {dout, "dout"}, {qkv, "qkv"}, {out, "out"}, {lse, "lse"}, {bias, "bias"}});
    attention_bias_detail::validate_mask("attention_bias_backward", mask, mask_windows, B);
#if defined(SIMMIM_KERNELS_DISPATCHER)
    kernels::dispatch::kernels<T>().attention_bias_backward(dqkv, dbias, dout, qkv, out, lse, bias, B, N, H, Dh, mask, mask_windows);
#else
    attention_bias_detail::backward_entry<T>(dqkv, dbias, dout, qkv, out, lse, bias, B, N, H, Dh, mask, mask_windows);
#endif
}

}  // namespace simmim::ops

// Compiled kernels (simmim::kernels, see simmim/kernels/dispatch.hpp): the biased forward and backward for float and
// double are instantiated once, in src/dispatch.cpp, where they call the instruction set chosen at run time.
#ifdef SIMMIM_EXTERN_KERNELS
namespace simmim::ops {
#define SIMMIM_ATTENTION_BIAS_INSTANTIATION(EXTERN, T)                                                            \
    EXTERN template void attention_bias_forward<T>(T*, T*, const T*, const T*, int, int, int, int, const T*, int);   \
    EXTERN template void attention_bias_backward<T>(T*, T*, const T*, const T*, const T*, const T*, const T*, int, \
                                                    int, int, int, const T*, int);
SIMMIM_ATTENTION_BIAS_INSTANTIATION(extern, float)
SIMMIM_ATTENTION_BIAS_INSTANTIATION(extern, double)
}  // namespace simmim::ops
#endif
