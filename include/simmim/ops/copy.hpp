// simmim/ops/copy.hpp: filling and copying activation-sized buffers on all OpenMP threads.
// A std::fill_n or std::copy_n over a few megabytes runs on the calling thread while the others wait at the
// next parallel region; at two threads that serial share is a visible part of a train step. Below
// kernels::kParallelMinWork elements both run on the calling thread; the results are the same either way.
#pragma once

#include <algorithm>
#include <cstddef>

#include "simmim/kernels/simd.hpp"

namespace simmim::ops {

/// dst[0, n) = value.
template <class T>
void fill(T* dst, std::ptrdiff_t n, T value) {
    constexpr std::ptrdiff_t kBlock = 4096;
    const std::ptrdiff_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n >= kernels::kParallelMinWork)
    for (std::ptrdiff_t b = 0; b < blocks; ++b) std::fill(dst + b * kBlock, dst + std::min(n, (b + 1) * kBlock), value);
}

/// dst[0, n) = src[0, n); the ranges must not overlap.
template <class T>
void copy(T* dst, const T* src, std::ptrdiff_t n) {
    constexpr std::ptrdiff_t kBlock = 4096;
    const std::ptrdiff_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n >= kernels::kParallelMinWork)
    for (std::ptrdiff_t b = 0; b < blocks; ++b) std::copy(src + b * kBlock, src + std::min(n, (b + 1) * kBlock), dst + b * kBlock);
}

}  // namespace simmim::ops
