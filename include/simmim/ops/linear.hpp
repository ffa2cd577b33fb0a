// simmim/ops/linear.hpp: y = x W^T + b over rows (PyTorch Linear, and a 1x1 Conv on tokens).
#pragma once

#include <cstddef>

#include "simmim/ops/eigen_maps.hpp"

namespace simmim::ops {

/// out (M, Nout) = in (M, K) * weight (Nout, K)^T + bias (Nout); bias may be null.
template <class T>
void linear_forward(T* out, const T* in, const T* weight, const T* bias, std::ptrdiff_t M, std::ptrdiff_t K,
                    std::ptrdiff_t Nout) {
    MatrixMap<T> y(out, M, Nout);
    y.noalias() = ConstMatrixMap<T>(in, M, K) * ConstMatrixMap<T>(weight, Nout, K).transpose();
    if (bias) y.rowwise() += ConstVectorMap<T>(bias, Nout);
}

/// Accumulates dweight (Nout, K) += dout^T in, dbias (Nout) += colsum(dout), and, when din is not
/// null, din (M, K) += dout weight. dbias may be null when the layer has no bias.
template <class T>
void linear_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* weight, std::ptrdiff_t M,
                     std::ptrdiff_t K, std::ptrdiff_t Nout) {
    ConstMatrixMap<T> dy(dout, M, Nout);
    if (din) MatrixMap<T>(din, M, K).noalias() += dy * ConstMatrixMap<T>(weight, Nout, K);
    MatrixMap<T>(dweight, Nout, K).noalias() += dy.transpose() * ConstMatrixMap<T>(in, M, K);
    if (dbias) VectorMap<T>(dbias, Nout) += dy.colwise().sum();
}

}  // namespace simmim::ops
