// simmim/ops/window.hpp: the token geometry of the Swin Transformer (Liu et al., ICCV 2021; the official
// microsoft/Swin-Transformer and microsoft/SimMIM models/swin_transformer.py):
//   - window order: torch.roll(x, (-s, -s), (1, 2)) then window_partition, as one permutation of the
//     r x r grid (its inverse is window_reverse then roll(+s, +s));
//   - the relative position index of a ws x ws window and the -100 / 0 attention mask of shifted windows;
//   - patch merging's 2x2 gather in the official x0, x1, x2, x3 order.
// Token rows are (B, n, D) row-major; a grid of side r holds token (h, w) at row h * r + w.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/core/tensor.hpp"
#include "simmim/kernels/simd.hpp"

namespace simmim::ops {

/// The window order of an r x r grid cut into ws x ws windows after a cyclic shift by -s:
/// order[t] = the grid row of window-order row t, t = window * ws^2 + (i * ws + j), window = wr * (r / ws) + wc,
/// grid position ((wr * ws + i + s) mod r, (wc * ws + j + s) mod r). Throws unless r % ws == 0 and 0 <= s < ws.
inline std::vector<std::int32_t> window_order(int r, int ws, int s) {
    if (r <= 0 || ws <= 0 || r % ws != 0 || s < 0 || s >= ws)
        throw std::invalid_argument("window_order: needs r % ws == 0 and 0 <= shift < ws, found r = " + std::to_string(r) +
                                    ", ws = " + std::to_string(ws) + ", shift = " + std::to_string(s));
    const int nw = r / ws;
    std::vector<std::int32_t> order(static_cast<std::size_t>(r) * r);
    std::size_t t = 0;
    for (int wr = 0; wr < nw; ++wr)
        for (int wc = 0; wc < nw; ++wc)
            for (int i = 0; i < ws; ++i)
                for (int j = 0; j < ws; ++j) order[t++] = ((wr * ws + i + s) % r) * r + (wc * ws + j + s) % r;
    return order;
}

/// Rows of a window's relative position bias table: (2 ws - 1)^2.
constexpr int window_table_rows(int ws) { return (2 * ws - 1) * (2 * ws - 1); }

/// WindowAttention's relative_position_index, (ws^2, ws^2) row-major:
/// index[a, b] = (h_a - h_b + ws - 1) * (2 ws - 1) + (w_a - w_b + ws - 1), token a at (h_a, w_a) = (a / ws, a % ws).
inline std::vector<std::int32_t> window_relative_position_index(int ws) {
    if (ws < 1) throw std::invalid_argument("window_relative_position_index: window must be >= 1");
    const int N = ws * ws;
    std::vector<std::int32_t> index(static_cast<std::size_t>(N) * N);
    for (int a = 0; a < N; ++a)
        for (int b = 0; b < N; ++b)
            index[static_cast<std::size_t>(a) * N + b] = (a / ws - b / ws + ws - 1) * (2 * ws - 1) + (a % ws - b % ws + ws - 1);
    return index;
}

/// The attention mask of shifted windows, (nW, ws^2, ws^2), nW = (r / ws)^2: the shifted grid is labelled
/// by the 3 x 3 regions of the slices (0 : r-ws), (r-ws : r-s), (r-s : r) of each axis, and a pair of tokens
/// of a window with different labels gets -100 (not -inf: masked pairs keep a weight of about e^-100), equal
/// labels 0. All zero when s = 0 (the official code then has no mask at all).
template <class T>
std::vector<T> shifted_window_mask(int r, int ws, int s) {
    const std::vector<std::int32_t> order = window_order(r, ws, 0);  // window partition of the unshifted labels
    const auto region = [&](int x) { return x < r - ws ? 0 : (x < r - s ? 1 : 2); };
    const int N = ws * ws, nW = (r / ws) * (r / ws);
    std::vector<int> label(static_cast<std::size_t>(r) * r);
    for (int h = 0; h < r; ++h)
        for (int w = 0; w < r; ++w) label[static_cast<std::size_t>(h) * r + w] = s > 0 ? 3 * region(h) + region(w) : 0;
    std::vector<T> mask(static_cast<std::size_t>(nW) * N * N);
    for (int win = 0; win < nW; ++win)
        for (int a = 0; a < N; ++a)
            for (int b = 0; b < N; ++b) {
                const int la = label[static_cast<std::size_t>(order[static_cast<std::size_t>(win) * N + a])];
                const int lb = label[static_cast<std::size_t>(order[static_cast<std::size_t>(win) * N + b])];
                mask[(static_cast<std::size_t>(win) * N + a) * N + b] = la == lb ? T(0) : T(-100);
            }
    return mask;
}

/// out[b, t] = in[b, order[t]] for rows of width D, n rows per sample (grid order -> window order).
template <class T>
void gather_rows(T* out, const T* in, const std::int32_t* order, int B, int n, int D) {
    const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(B) * n;
#pragma omp parallel for schedule(static) if (rows * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t bt = 0; bt < rows; ++bt) {
        const std::ptrdiff_t b = bt / n, t = bt % n;
        const T* src = in + (b * n + order[t]) * D;
        T* dst = out + bt * D;
        for (int d = 0; d < D; ++d) dst[d] = src[d];
    }
}

/// out[b, order[t]] = in[b, t] (window order -> grid order; overwrites every row of out).
template <class T>
void scatter_rows(T* out, const T* in, const std::int32_t* order, int B, int n, int D) {
    const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(B) * n;
#pragma omp parallel for schedule(static) if (rows * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t bt = 0; bt < rows; ++bt) {
        const std::ptrdiff_t b = bt / n, t = bt % n;
        const T* src = in + bt * D;
        T* dst = out + (b * n + order[t]) * D;
        for (int d = 0; d < D; ++d) dst[d] = src[d];
    }
}

/// Patch merging's gather: out (B, (r/2)^2, 4D) from in (B, r^2, D), out[b, i * r/2 + j] =
/// [x(2i, 2j), x(2i+1, 2j), x(2i, 2j+1), x(2i+1, 2j+1)] (the official x0, x1, x2, x3 order). r must be even.
template <class T>
void merge_gather(T* out, const T* in, int B, int r, int D) {
    const int h = r / 2;
    const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(B) * h * h;
#pragma omp parallel for schedule(static) if (rows * 4 * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t q = 0; q < rows; ++q) {
        const std::ptrdiff_t b = q / (h * h), i = (q % (h * h)) / h, j = q % h;
        const T* x = in + b * r * r * D;
        T* o = out + q * 4 * D;
        const std::ptrdiff_t src[4] = {(2 * i) * r + 2 * j, (2 * i + 1) * r + 2 * j, (2 * i) * r + 2 * j + 1, (2 * i + 1) * r + 2 * j + 1};
        for (int k = 0; k < 4; ++k)
            for (int d = 0; d < D; ++d) o[k * D + d] = x[src[k] * D + d];
    }
}

/// The adjoint of merge_gather: din (B, r^2, D) from dout (B, (r/2)^2, 4D) (overwrites; every input row is
/// read by exactly one output row).
template <class T>
void merge_scatter(T* din, const T* dout, int B, int r, int D) {
    const int h = r / 2;
    const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(B) * h * h;
#pragma omp parallel for schedule(static) if (rows * 4 * D >= kernels::kParallelMinWork)
    for (std::ptrdiff_t q = 0; q < rows; ++q) {
        const std::ptrdiff_t b = q / (h * h), i = (q % (h * h)) / h, j = q % h;
        T* x = din + b * r * r * D;
        const T* o = dout + q * 4 * D;
        const std::ptrdiff_t dst[4] = {(2 * i) * r + 2 * j, (2 * i + 1) * r + 2 * j, (2 * i) * r + 2 * j + 1, (2 * i + 1) * r + 2 * j + 1};
        for (int k = 0; k < 4; ++k)
            for (int d = 0; d < D; ++d) x[dst[k] * D + d] = o[k * D + d];
    }
}

}  // namespace simmim::ops
