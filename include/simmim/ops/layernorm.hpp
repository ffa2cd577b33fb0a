// simmim/ops/layernorm.hpp: LayerNorm over the last dimension (biased variance, eps inside sqrt).
//
// layernorm_forward / layernorm_backward take the SIMD path of kernels/simd.hpp when it is enabled for
// T and otherwise run the scalar layernorm_forward_reference / layernorm_backward_reference, which
// have the same signatures and semantics. Both paths: two-pass mean and variance per row,
// rstd = 1 / sqrt(var + eps), backward accumulates (+=), and the dweight / dbias reduction runs over
// a fixed number of row chunks in a fixed order, so results are bit-identical whatever the thread
// count and scheduling.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "simmim/kernels/simd.hpp"

namespace simmim::ops {

namespace detail {

/// Row chunks of the dweight / dbias reduction of layernorm_backward (fixed: determinism).
inline constexpr std::ptrdiff_t kLayerNormChunks = 32;

/// One row of layernorm_forward_reference: y (D) = (x - mean) * rstd * weight + bias.
template <class T>
void layernorm_row_reference(T* y, T& mean, T& rstd, const T* x, const T* weight, const T* bias, std::ptrdiff_t D,
                             T eps) {
    T m = 0;
    for (std::ptrdiff_t i = 0; i < D; ++i) m += x[i];
    m /= T(D);
    T v = 0;
    for (std::ptrdiff_t i = 0; i < D; ++i) v += (x[i] - m) * (x[i] - m);
    v /= T(D);
    const T s = T(1) / std::sqrt(v + eps);
    for (std::ptrdiff_t i = 0; i < D; ++i) y[i] = (x[i] - m) * s * weight[i] + bias[i];
    mean = m;
    rstd = s;
}

}  // namespace detail

/// Scalar reference of layernorm_forward.
template <class T>
void layernorm_forward_reference(T* out, T* mean, T* rstd, const T* in, const T* weight, const T* bias,
                                 std::ptrdiff_t M, std::ptrdiff_t D, T eps) {
#pragma omp parallel for schedule(static) if (M * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t r = 0; r < M; ++r)
        detail::layernorm_row_reference(out + r * D, mean[r], rstd[r], in + r * D, weight, bias, D, eps);
}

/// Scalar reference of layernorm_backward.
template <class T>
void layernorm_backward_reference(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* mean,
                                  const T* rstd, const T* weight, std::ptrdiff_t M, std::ptrdiff_t D) {
    const std::ptrdiff_t chunks = std::min(detail::kLayerNormChunks, M);
    std::vector<T> partial(static_cast<std::size_t>(std::max<std::ptrdiff_t>(chunks, 0)) * 2 * D, T(0));  // (chunks, 2, D): dw, db
#pragma omp parallel for schedule(static) if (M * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t ch = 0; ch < chunks; ++ch) {
        T* dw = partial.data() + ch * 2 * D;
        T* db = dw + D;
        for (std::ptrdiff_t r = ch * M / chunks; r < (ch + 1) * M / chunks; ++r) {
            const T* x = in + r * D;
            const T* dy = dout + r * D;
            T* dx = din + r * D;
            const T m = mean[r], s = rstd[r];
            T sum_dn = 0, sum_dn_xhat = 0;
            for (std::ptrdiff_t i = 0; i < D; ++i) {
                const T xhat = (x[i] - m) * s;
                const T dn = dy[i] * weight[i];
                sum_dn += dn;
                sum_dn_xhat += dn * xhat;
                dw[i] += dy[i] * xhat;
                db[i] += dy[i];
            }
            sum_dn /= T(D);
            sum_dn_xhat /= T(D);
            for (std::ptrdiff_t i = 0; i < D; ++i) {
                const T xhat = (x[i] - m) * s;
                dx[i] += (dy[i] * weight[i] - sum_dn - xhat * sum_dn_xhat) * s;
            }
        }
    }
    for (std::ptrdiff_t ch = 0; ch < chunks; ++ch)
        for (std::ptrdiff_t i = 0; i < D; ++i) {
            dweight[i] += partial[ch * 2 * D + i];
            dbias[i] += partial[ch * 2 * D + D + i];
        }
}

#if SIMMIM_SIMD
namespace detail {

/// One row of the SIMD layernorm_forward: y (D) = (x - mean) * rstd * weight + bias.
template <class T>
void layernorm_row_simd(T* y, T& mean, T& rstd, const T* x, const T* weight, const T* bias, std::ptrdiff_t D, T eps) {
    using B = kernels::Batch<T>;
    constexpr std::ptrdiff_t W = kernels::lanes<T>;
    const T m = kernels::reduce_sum<T>(D, [&](std::ptrdiff_t i, auto tag) { return kernels::load<decltype(tag)>(x + i); }) / T(D);
    const T v = kernels::reduce_sum<T>(D, [&](std::ptrdiff_t i, auto tag) {
                    using V = decltype(tag);
                    const V d = kernels::load<V>(x + i) - V(m);
                    return d * d;
                }) / T(D);
    const T s = T(1) / std::sqrt(v + eps);
    const B mb(m), sb(s);
    std::ptrdiff_t i = 0;
    auto normalise = [&](const B& xv, const B& wv, const B& bv) { return (xv - mb) * sb * wv + bv; };
    for (; i + W <= D; i += W)
        normalise(B::load_unaligned(x + i), B::load_unaligned(weight + i), B::load_unaligned(bias + i)).store_unaligned(y + i);
    if (i < D) {
        const std::ptrdiff_t r = D - i;
        const B out = normalise(kernels::load_partial(x + i, r), kernels::load_partial(weight + i, r), kernels::load_partial(bias + i, r));
        kernels::store_partial(y + i, out, r);
    }
    mean = m;
    rstd = s;
}

/// SIMD layernorm_backward: same chunking and summation order of dweight / dbias as the reference.
template <class T>
void layernorm_backward_simd(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* mean, const T* rstd,
                             const T* weight, std::ptrdiff_t M, std::ptrdiff_t D) {
    using B = kernels::Batch<T>;
    constexpr std::ptrdiff_t W = kernels::lanes<T>;
    const std::ptrdiff_t chunks = std::min(kLayerNormChunks, M);
    std::vector<T> partial(static_cast<std::size_t>(std::max<std::ptrdiff_t>(chunks, 0)) * 2 * D, T(0));  // (chunks, 2, D): dw, db
#pragma omp parallel for schedule(static) if (M * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t ch = 0; ch < chunks; ++ch) {
        T* dw = partial.data() + ch * 2 * D;
        T* db = dw + D;
        for (std::ptrdiff_t r = ch * M / chunks; r < (ch + 1) * M / chunks; ++r) {
            const T* x = in + r * D;
            const T* dy = dout + r * D;
            T* dx = din + r * D;
            const T m = mean[r], s = rstd[r];
            // pass 1: sum_dn = mean(dy * w), sum_dn_xhat = mean(dy * w * xhat); two accumulators each
            B dn0(T(0)), dn1(T(0)), dnx0(T(0)), dnx1(T(0));
            const B mb(m), sb(s);
            std::ptrdiff_t i = 0;
            for (; i + 2 * W <= D; i += 2 * W) {
                const B dn_a = B::load_unaligned(dy + i) * B::load_unaligned(weight + i);
                const B dn_b = B::load_unaligned(dy + i + W) * B::load_unaligned(weight + i + W);
                dn0 += dn_a;
                dn1 += dn_b;
                dnx0 = xsimd::fma(dn_a, (B::load_unaligned(x + i) - mb) * sb, dnx0);
                dnx1 = xsimd::fma(dn_b, (B::load_unaligned(x + i + W) - mb) * sb, dnx1);
            }
            for (; i + W <= D; i += W) {
                const B dn = B::load_unaligned(dy + i) * B::load_unaligned(weight + i);
                dn0 += dn;
                dnx0 = xsimd::fma(dn, (B::load_unaligned(x + i) - mb) * sb, dnx0);
            }
            T sum_dn = kernels::hsum<T>(dn0 + dn1), sum_dn_xhat = kernels::hsum<T>(dnx0 + dnx1);
            for (; i < D; ++i) {
                const T dn = dy[i] * weight[i];
                sum_dn += dn;
                sum_dn_xhat += dn * ((x[i] - m) * s);
            }
            sum_dn /= T(D);
            sum_dn_xhat /= T(D);
            // pass 2: dw += dy * xhat, db += dy, dx += (dy * w - sum_dn - xhat * sum_dn_xhat) * rstd
            const B sdn(sum_dn), sdnx(sum_dn_xhat);
            auto update = [&](std::ptrdiff_t j, const B& xv, const B& dyv, const B& wv, const B& dwv, const B& dbv,
                              const B& dxv, std::ptrdiff_t count) {
                const B xhat = (xv - mb) * sb;
                const B new_dw = xsimd::fma(dyv, xhat, dwv);
                const B new_db = dbv + dyv;
                const B new_dx = xsimd::fma(dyv * wv - sdn - xhat * sdnx, sb, dxv);
                if (count == W) {
                    new_dw.store_unaligned(dw + j);
                    new_db.store_unaligned(db + j);
                    new_dx.store_unaligned(dx + j);
                } else {
                    kernels::store_partial(dw + j, new_dw, count);
                    kernels::store_partial(db + j, new_db, count);
                    kernels::store_partial(dx + j, new_dx, count);
                }
            };
            for (i = 0; i + W <= D; i += W)
                update(i, B::load_unaligned(x + i), B::load_unaligned(dy + i), B::load_unaligned(weight + i),
                       B::load_unaligned(dw + i), B::load_unaligned(db + i), B::load_unaligned(dx + i), W);
            if (i < D) {
                const std::ptrdiff_t n = D - i;
                update(i, kernels::load_partial(x + i, n), kernels::load_partial(dy + i, n), kernels::load_partial(weight + i, n),
                       kernels::load_partial(dw + i, n), kernels::load_partial(db + i, n), kernels::load_partial(dx + i, n), n);
            }
        }
    }
    // dweight += sum over chunks in chunk order, as the reference. The last D % W elements go through
    // the partial-batch helpers: a scalar tail loop after the vector loop made GCC 12 warn
    // (-Waggressive-loop-optimizations) when D is a compile-time multiple of W and the tail is dead.
    for (std::ptrdiff_t ch = 0; ch < chunks; ++ch) {
        const T* pw = partial.data() + ch * 2 * D;
        const T* pb = pw + D;
        std::ptrdiff_t i = 0;
        for (; i + W <= D; i += W) {
            (B::load_unaligned(dweight + i) + B::load_unaligned(pw + i)).store_unaligned(dweight + i);
            (B::load_unaligned(dbias + i) + B::load_unaligned(pb + i)).store_unaligned(dbias + i);
        }
        if (i < D) {
            const std::ptrdiff_t n = D - i;
            kernels::store_partial(dweight + i, kernels::load_partial(dweight + i, n) + kernels::load_partial(pw + i, n), n);
            kernels::store_partial(dbias + i, kernels::load_partial(dbias + i, n) + kernels::load_partial(pb + i, n), n);
        }
    }
}

}  // namespace detail
#endif

namespace detail {

/// One row of layernorm_forward, on the path layernorm_forward takes (shared with ops/fused.hpp).
template <class T>
void layernorm_row(T* y, T& mean, T& rstd, const T* x, const T* weight, const T* bias, std::ptrdiff_t D, T eps) {
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) {
        layernorm_row_simd(y, mean, rstd, x, weight, bias, D, eps);
        return;
    }
#endif
    layernorm_row_reference(y, mean, rstd, x, weight, bias, D, eps);
}

}  // namespace detail

/// out (M, D) = (in - mean) * rstd * weight + bias; caches mean (M) and rstd (M) for backward.
template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* in, const T* weight, const T* bias, std::ptrdiff_t M,
                       std::ptrdiff_t D, T eps) {
#pragma omp parallel for schedule(static) if (M * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t r = 0; r < M; ++r) detail::layernorm_row(out + r * D, mean[r], rstd[r], in + r * D, weight, bias, D, eps);
}

/// Accumulates din (M, D), dweight (D) and dbias (D) from dout (M, D).
/// dweight and dbias are summed over a fixed number of row chunks in a fixed order, so the result is
/// bit-identical whatever the thread count and scheduling.
template <class T>
void layernorm_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* mean, const T* rstd,
                        const T* weight, std::ptrdiff_t M, std::ptrdiff_t D) {
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) {
        detail::layernorm_backward_simd(din, dweight, dbias, dout, in, mean, rstd, weight, M, D);
        return;
    }
#endif
    layernorm_backward_reference(din, dweight, dbias, dout, in, mean, rstd, weight, M, D);
}

}  // namespace simmim::ops
