// simmim/kernels/gemm_epilogue.hpp: the fused-epilogue hook of kernels::gemm (and kernels::gemm_bf16).
#pragma once

#include <cstddef>

namespace simmim::kernels {

/// A transform of finished elements of C, run by gemm right after it computes a register tile of C
/// (after the last K block), on the thread that computed it, while the tile is in L1: a fused epilogue
/// (bias + GELU after fc1, the GELU backward after fc2's input gradient). apply(context, c, ldc, row, col,
/// rows, cols) gets C(row, col) at c and the tile's extent; it must be a pure per-element function of C
/// and of buffers it does not write elsewhere, so results do not depend on tiles or threads. Paths
/// without tiles (Eigen, K == 0) call it once on the whole of C.
template <class T>
struct GemmEpilogue {
    void (*apply)(const void* context, T* c, std::ptrdiff_t ldc, std::ptrdiff_t row, std::ptrdiff_t col,
                  std::ptrdiff_t rows, std::ptrdiff_t cols);
    const void* context;
    void operator()(T* c, std::ptrdiff_t ldc, std::ptrdiff_t row, std::ptrdiff_t col, std::ptrdiff_t rows,
                    std::ptrdiff_t cols) const {
        apply(context, c, ldc, row, col, rows, cols);
    }
};

}  // namespace simmim::kernels
