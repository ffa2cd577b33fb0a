// simmim/ops/linear.hpp: y = x W^T + b over rows (PyTorch Linear, and a 1x1 Conv on tokens).
// Matrix products go through kernels::gemm (a packed AVX-512/AVX2 kernel for float, Eigen otherwise).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "simmim/kernels/gemm.hpp"
#include "simmim/kernels/simd.hpp"
#include "simmim/ops/eigen_maps.hpp"

namespace simmim::ops {

/// out (M, Nout) = in (M, K) * weight (Nout, K)^T + bias (Nout); bias may be null.
template <class T>
void linear_forward(T* out, const T* in, const T* weight, const T* bias, std::ptrdiff_t M, std::ptrdiff_t K,
                    std::ptrdiff_t Nout) {
    kernels::gemm<T>(false, true, M, Nout, K, T(1), in, K, weight, K, T(0), out, Nout);
    if (!bias) return;
#pragma omp parallel for schedule(static) if (M * Nout >= kernels::kParallelMinWork)
    for (std::ptrdiff_t i = 0; i < M; ++i) {
        T* row = out + i * Nout;
        for (std::ptrdiff_t j = 0; j < Nout; ++j) row[j] += bias[j];
    }
}

namespace detail {
/// sums (N) += the column sums of x (M, N). The rows are summed in blocks of a fixed size, in parallel, and
/// the block sums in order, so the result does not depend on the thread count.
template <class T>
void add_column_sums(T* sums, const T* x, std::ptrdiff_t M, std::ptrdiff_t N) {
    constexpr std::ptrdiff_t kRows = 256;
    const std::ptrdiff_t blocks = (M + kRows - 1) / kRows;
    std::vector<T> partial(static_cast<std::size_t>(blocks * N), T(0));
#pragma omp parallel for schedule(static) if (M * N >= kernels::kParallelMinWork)
    for (std::ptrdiff_t b = 0; b < blocks; ++b) {
        T* p = partial.data() + b * N;
        for (std::ptrdiff_t i = b * kRows; i < std::min(M, (b + 1) * kRows); ++i)
            for (std::ptrdiff_t j = 0; j < N; ++j) p[j] += x[i * N + j];
    }
    for (std::ptrdiff_t b = 1; b < blocks; ++b)
        for (std::ptrdiff_t j = 0; j < N; ++j) partial[static_cast<std::size_t>(j)] += partial[static_cast<std::size_t>(b * N + j)];
    for (std::ptrdiff_t j = 0; j < N && blocks > 0; ++j) sums[j] += partial[static_cast<std::size_t>(j)];
}
}  // namespace detail

/// Accumulates dweight (Nout, K) += dout^T in, dbias (Nout) += colsum(dout), and, when din is not
/// null, din (M, K) = din_beta * din + dout weight (din_beta 1: accumulate; 0: overwrite, din is not read).
/// dbias may be null when the layer has no bias.
template <class T>
void linear_backward(T* din, T* dweight, T* dbias, const T* dout, const T* in, const T* weight, std::ptrdiff_t M,
                     std::ptrdiff_t K, std::ptrdiff_t Nout, T din_beta = T(1)) {
    if (din) kernels::gemm<T>(false, false, M, K, Nout, T(1), dout, Nout, weight, K, din_beta, din, K);
    kernels::gemm<T>(true, false, Nout, K, M, T(1), dout, Nout, in, K, T(1), dweight, K);
    if (dbias) detail::add_column_sums(dbias, dout, M, Nout);
}

}  // namespace simmim::ops
