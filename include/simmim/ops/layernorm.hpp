// simmim/ops/layernorm.hpp: LayerNorm over the last dimension (biased variance, eps inside sqrt).
#pragma once

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
template <class T>
void layernorm_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* mean, const T* rstd,
                        const T* weight, std::ptrdiff_t M, std::ptrdiff_t D) {
#pragma omp parallel
    {
        std::vector<T> dw(D, T(0)), db(D, T(0));
#pragma omp for schedule(static)
        for (std::ptrdiff_t r = 0; r < M; ++r) {
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
#pragma omp critical(simmim_layernorm_backward)
        for (std::ptrdiff_t i = 0; i < D; ++i) {
            dweight[i] += dw[i];
            dbias[i] += db[i];
        }
    }
}

}  // namespace simmim::ops
