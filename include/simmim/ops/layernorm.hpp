// simmim/ops/layernorm.hpp: LayerNorm over the last dimension (biased variance, eps inside sqrt).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace simmim::ops {

/// out (M, D) = (in - mean) * rstd * weight + bias; caches mean (M) and rstd (M) for backward.
template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* in, const T* weight, const T* bias, std::ptrdiff_t M,
                       std::ptrdiff_t D, T eps) {
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t r = 0; r < M; ++r) {
        const T* x = in + r * D;
        T* y = out + r * D;
        T m = 0;
        for (std::ptrdiff_t i = 0; i < D; ++i) m += x[i];
        m /= T(D);
        T v = 0;
        for (std::ptrdiff_t i = 0; i < D; ++i) v += (x[i] - m) * (x[i] - m);
        v /= T(D);
        const T s = T(1) / std::sqrt(v + eps);
        for (std::ptrdiff_t i = 0; i < D; ++i) y[i] = (x[i] - m) * s * weight[i] + bias[i];
        mean[r] = m;
        rstd[r] = s;
    }
}

/// Accumulates din (M, D), dweight (D) and dbias (D) from dout (M, D).
/// dweight and dbias are summed over a fixed number of row chunks in a fixed order, so the result is
/// bit-identical whatever the thread count and scheduling.
template <class T>
void layernorm_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* mean, const T* rstd,
                        const T* weight, std::ptrdiff_t M, std::ptrdiff_t D) {
    constexpr std::ptrdiff_t kChunks = 32;
    const std::ptrdiff_t chunks = std::min(kChunks, M);
    std::vector<T> partial(static_cast<std::size_t>(chunks) * 2 * D, T(0));  // (chunks, 2, D): dw, db
#pragma omp parallel for schedule(static)
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

}  // namespace simmim::ops
