// simmim/ops/linear.hpp: y = x W^T + b over rows (PyTorch Linear, and a 1x1 Conv on tokens).
// Matrix products go through kernels::gemm (a packed AVX-512/AVX2 kernel for float, Eigen otherwise).
#pragma once

#include <cstddef>

#include "simmim/kernels/gemm.hpp"
#include "simmim/ops/eigen_maps.hpp"

namespace simmim::ops {

/// out (M, Nout) = in (M, K) * weight (Nout, K)^T + bias (Nout); bias may be null.
template <class T>
void linear_forward(T* out, const T* in, const T* weight, const T* bias, std::ptrdiff_t M, std::ptrdiff_t K,
                    std::ptrdiff_t Nout) {
    kernels::gemm<T>(false, true, M, Nout, K, T(1), in, K, weight, K, T(0), out, Nout);
    if (bias) MatrixMap<T>(out, M, Nout).rowwise() += ConstVectorMap<T>(bias, Nout);
}

/// Accumulates dweight (Nout, K) += dout^T in, dbias (Nout) += colsum(dout), and, when din is not
/// null, din (M, K) += dout weight. dbias may be null when the layer has no bias.
template <class T>
void linear_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* weight, std::ptrdiff_t M,
                     std::ptrdiff_t K, std::ptrdiff_t Nout) {
    if (din) kernels::gemm<T>(false, false, M, K, Nout, T(1), dout, Nout, weight, K, T(1), din, K);
    kernels::gemm<T>(true, false, Nout, K, M, T(1), dout, Nout, in, K, T(1), dweight, K);
    if (dbias) VectorMap<T>(dbias, Nout) += ConstMatrixMap<T>(dout, M, Nout).colwise().sum();
}

}  // namespace simmim::ops
