// simmim/ops/gelu.hpp: exact (erf) GELU, as torch.nn.GELU() with approximate='none'.
//
// gelu_forward / gelu_backward take the SIMD path of kernels/simd.hpp when it is enabled for T and
// otherwise run the scalar gelu_forward_reference / gelu_backward_reference (same signatures and
// semantics). Float SIMD uses a rational erf (abs error < 5e-7, see kernels/simd.hpp); double keeps
// std::erf. Every element's result is a pure function of its input (no dependence on position or
// thread count), so gelu of a buffer equals gelu of any of its slices bit for bit.
#pragma once

#include <cmath>
#include <cstddef>

#include "simmim/kernels/simd.hpp"

namespace simmim::ops {

/// Scalar reference of gelu_forward.
template <class T>
void gelu_forward_reference(T* out, const T* in, std::ptrdiff_t n) {
    const T inv_sqrt2 = T(0.70710678118654752440084436210485);
#pragma omp parallel for schedule(static) if (n >= kernels::kParallelMinWork)
    for (std::ptrdiff_t i = 0; i < n; ++i) out[i] = T(0.5) * in[i] * (T(1) + std::erf(in[i] * inv_sqrt2));
}

/// Scalar reference of gelu_backward.
template <class T>
void gelu_backward_reference(T* din, const T* dout, const T* in, std::ptrdiff_t n) {
    const T inv_sqrt2 = T(0.70710678118654752440084436210485);
    const T inv_sqrt_2pi = T(0.39894228040143267793994605993438);
#pragma omp parallel for schedule(static) if (n >= kernels::kParallelMinWork)
    for (std::ptrdiff_t i = 0; i < n; ++i) {
        const T x = in[i];
        const T cdf = T(0.5) * (T(1) + std::erf(x * inv_sqrt2));
        const T pdf = inv_sqrt_2pi * std::exp(T(-0.5) * x * x);
        din[i] += dout[i] * (cdf + x * pdf);
    }
}

#if SIMMIM_SIMD
namespace detail {

/// gelu(x) = 0.5 x (1 + erf(x / sqrt 2)) per lane.
template <class T>
kernels::Batch<T> gelu(const kernels::Batch<T>& x) noexcept {
    using B = kernels::Batch<T>;
    return B(T(0.5)) * x * (B(T(1)) + kernels::erf<T>(x * B(T(0.70710678118654752440084436210485))));
}

/// gelu'(x) = Phi(x) + x phi(x) per lane.
template <class T>
kernels::Batch<T> gelu_derivative(const kernels::Batch<T>& x) noexcept {
    using B = kernels::Batch<T>;
    const B cdf = B(T(0.5)) * (B(T(1)) + kernels::erf<T>(x * B(T(0.70710678118654752440084436210485))));
    const B pdf = B(T(0.39894228040143267793994605993438)) * kernels::exp<T>(B(T(-0.5)) * x * x);
    return cdf + x * pdf;
}

template <class T>
void gelu_forward_simd(T* out, const T* in, std::ptrdiff_t n) {
    using B = kernels::Batch<T>;
    constexpr std::ptrdiff_t W = kernels::lanes<T>;
    const std::ptrdiff_t body = n - n % W;
#pragma omp parallel for schedule(static) if (n >= kernels::kParallelMinWork)
    for (std::ptrdiff_t i = 0; i < body; i += W) gelu<T>(B::load_unaligned(in + i)).store_unaligned(out + i);
    if (body < n) kernels::store_partial(out + body, gelu<T>(kernels::load_partial(in + body, n - body)), n - body);
}

template <class T>
void gelu_backward_simd(T* din, const T* dout, const T* in, std::ptrdiff_t n) {
    using B = kernels::Batch<T>;
    constexpr std::ptrdiff_t W = kernels::lanes<T>;
    const std::ptrdiff_t body = n - n % W;
#pragma omp parallel for schedule(static) if (n >= kernels::kParallelMinWork)
    for (std::ptrdiff_t i = 0; i < body; i += W)
        xsimd::fma(B::load_unaligned(dout + i), gelu_derivative<T>(B::load_unaligned(in + i)), B::load_unaligned(din + i))
            .store_unaligned(din + i);
    if (body < n) {
        const std::ptrdiff_t r = n - body;
        const B d = xsimd::fma(kernels::load_partial(dout + body, r), gelu_derivative<T>(kernels::load_partial(in + body, r)),
                               kernels::load_partial(din + body, r));
        kernels::store_partial(din + body, d, r);
    }
}

}  // namespace detail
#endif

/// out (n) = gelu(in (n)) = 0.5 in (1 + erf(in / sqrt 2)). out may be in (in place).
template <class T>
void gelu_forward(T* out, const T* in, std::ptrdiff_t n) {
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) {
        detail::gelu_forward_simd(out, in, n);
        return;
    }
#endif
    gelu_forward_reference(out, in, n);
}

/// din += dout * gelu'(in), gelu'(x) = Phi(x) + x phi(x).
template <class T>
void gelu_backward(T* din, const T* dout, const T* in, std::ptrdiff_t n) {
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) {
        detail::gelu_backward_simd(din, dout, in, n);
        return;
    }
#endif
    gelu_backward_reference(din, dout, in, n);
}

}  // namespace simmim::ops
