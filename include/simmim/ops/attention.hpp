// simmim/ops/attention.hpp: multi-head self-attention core, naive reference (materialises P).
//
// Layouts (shared with the ViT block):
//   qkv  (B, N, 3, H, Dh)  row (b, n) holds q | k | v, each (H, Dh)
//   out  (B, N, H, Dh)
//   probs(B, H, N, N)      P = softmax_keys(q k^T / sqrt(Dh)), cached for backward
// Backward accumulates (+=) into dqkv, like every backward in simmim.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstddef>

#include "simmim/ops/eigen_maps.hpp"

namespace simmim::ops {

namespace detail {
/// Strided (N, Dh) view of one head's q, k or v inside qkv; `which` is 0, 1 or 2.
template <class T, class Ptr>
auto head_view(Ptr qkv, int b, int h, int which, int N, int H, int Dh) {
    const std::ptrdiff_t D = static_cast<std::ptrdiff_t>(H) * Dh;
    using Base = std::conditional_t<std::is_const_v<std::remove_pointer_t<Ptr>>, const RowMatrix<T>, RowMatrix<T>>;
    return Eigen::Map<Base, 0, Eigen::OuterStride<>>(qkv + (static_cast<std::ptrdiff_t>(b) * N * 3 + 0) * D + which * D + h * Dh, N,
                                                     Dh, Eigen::OuterStride<>(3 * D));
}
template <class T, class Ptr>
auto out_view(Ptr out, int b, int h, int N, int H, int Dh) {
    const std::ptrdiff_t D = static_cast<std::ptrdiff_t>(H) * Dh;
    using Base = std::conditional_t<std::is_const_v<std::remove_pointer_t<Ptr>>, const RowMatrix<T>, RowMatrix<T>>;
    return Eigen::Map<Base, 0, Eigen::OuterStride<>>(out + static_cast<std::ptrdiff_t>(b) * N * D + h * Dh, N, Dh,
                                                     Eigen::OuterStride<>(D));
}
}  // namespace detail

/// out = softmax(q k^T / sqrt(Dh)) v per (batch, head); probs receives P.
template <class T>
void attention_forward(T* out, T* probs, const T* qkv, int B, int N, int H, int Dh) {
    const T scale = T(1) / std::sqrt(T(Dh));
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b) {
        for (int h = 0; h < H; ++h) {
            const auto q = detail::head_view<T>(qkv, b, h, 0, N, H, Dh);
            const auto k = detail::head_view<T>(qkv, b, h, 1, N, H, Dh);
            const auto v = detail::head_view<T>(qkv, b, h, 2, N, H, Dh);
            MatrixMap<T> p(probs + (static_cast<std::ptrdiff_t>(b) * H + h) * N * N, N, N);
            p.noalias() = (q * k.transpose()) * scale;
            for (int i = 0; i < N; ++i) {
                auto row = p.row(i);
                const T m = row.maxCoeff();
                row = (row.array() - m).exp();
                row /= row.sum();
            }
            auto o = detail::out_view<T>(out, b, h, N, H, Dh);
            o.noalias() = p * v;
        }
    }
}

/// Given dout (B, N, H, Dh), accumulate dq, dk, dv into dqkv (B, N, 3, H, Dh).
template <class T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* probs, int B, int N, int H, int Dh) {
    const T scale = T(1) / std::sqrt(T(Dh));
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b) {
        for (int h = 0; h < H; ++h) {
            const auto q = detail::head_view<T>(qkv, b, h, 0, N, H, Dh);
            const auto k = detail::head_view<T>(qkv, b, h, 1, N, H, Dh);
            const auto v = detail::head_view<T>(qkv, b, h, 2, N, H, Dh);
            auto dq = detail::head_view<T>(dqkv, b, h, 0, N, H, Dh);
            auto dk = detail::head_view<T>(dqkv, b, h, 1, N, H, Dh);
            auto dv = detail::head_view<T>(dqkv, b, h, 2, N, H, Dh);
            const auto dO = detail::out_view<T>(dout, b, h, N, H, Dh);
            ConstMatrixMap<T> p(probs + (static_cast<std::ptrdiff_t>(b) * H + h) * N * N, N, N);
            dv.noalias() += p.transpose() * dO;
            RowMatrix<T> ds = dO * v.transpose();  // dP, then dS in place  (N, N)
            for (int i = 0; i < N; ++i) {
                const T dot = ds.row(i).dot(p.row(i));
                ds.row(i) = (p.row(i).array() * (ds.row(i).array() - dot)) * scale;
            }
            dq.noalias() += ds * k;
            dk.noalias() += ds.transpose() * q;
        }
    }
}

}  // namespace simmim::ops
