// simmim/kernels/gemm_epilogue.hpp: what kernels::gemm and kernels::gemm_bf16 share: the fused-epilogue hook
// and the rule that splits a product over threads.
#pragma once

#include <algorithm>
#include <cstddef>

#ifdef _OPENMP
#include <omp.h>
#endif

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

namespace detail {
/// Runs range(m_begin, m_end, n_begin, n_end) over C (M x N) on OpenMP threads: the dimension with more register
/// tiles (MR rows, NR columns) is split into contiguous runs of whole tiles, one per thread, K never. One thread
/// when already inside a parallel region or below min_fma multiply-adds. Each element is computed by exactly one
/// call, so results do not depend on the thread count as long as range's arithmetic per element does not.
template <class Range>
void split_over_threads(std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, std::ptrdiff_t MR, std::ptrdiff_t NR,
                        double min_fma, const Range& range) {
    const bool split_m = (M + MR - 1) / MR >= (N + NR - 1) / NR;
    const std::ptrdiff_t step = split_m ? MR : NR;
    const std::ptrdiff_t tiles = ((split_m ? M : N) + step - 1) / step;
    int threads = 1;
#ifdef _OPENMP
    if (!omp_in_parallel() && static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K) >= min_fma)
        threads = static_cast<int>(std::min<std::ptrdiff_t>(omp_get_max_threads(), tiles));
#else
    (void)K, (void)min_fma;
#endif
    const auto run_part = [&](int part, int parts) {
        const std::ptrdiff_t extent = split_m ? M : N;
        const std::ptrdiff_t begin = std::min(extent, tiles * part / parts * step);
        const std::ptrdiff_t end = std::min(extent, tiles * (part + 1) / parts * step);
        if (begin >= end) return;
        if (split_m)
            range(begin, end, std::ptrdiff_t(0), N);
        else
            range(std::ptrdiff_t(0), M, begin, end);
    };
    if (threads <= 1) {
        run_part(0, 1);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    run_part(omp_get_thread_num(), omp_get_num_threads());
#endif
}
}  // namespace detail

}  // namespace simmim::kernels
