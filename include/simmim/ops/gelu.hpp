// simmim/ops/gelu.hpp: exact (erf) GELU, as torch.nn.GELU() with approximate='none'.
#pragma once

#include <cmath>
#include <cstddef>

namespace simmim::ops {

template <class T>
void gelu_forward(T* out, const T* in, std::ptrdiff_t n) {
    const T inv_sqrt2 = T(0.70710678118654752440084436210485);
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t i = 0; i < n; ++i) out[i] = T(0.5) * in[i] * (T(1) + std::erf(in[i] * inv_sqrt2));
}

/// din += dout * gelu'(in), gelu'(x) = Phi(x) + x phi(x).
template <class T>
void gelu_backward(T* din, const T* dout, const T* in, std::ptrdiff_t n) {
    const T inv_sqrt2 = T(0.70710678118654752440084436210485);
    const T inv_sqrt_2pi = T(0.39894228040143267793994605993438);
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t i = 0; i < n; ++i) {
        const T x = in[i];
        const T cdf = T(0.5) * (T(1) + std::erf(x * inv_sqrt2));
        const T pdf = inv_sqrt_2pi * std::exp(T(-0.5) * x * x);
        din[i] += dout[i] * (cdf + x * pdf);
    }
}

}  // namespace simmim::ops
