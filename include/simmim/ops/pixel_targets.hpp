// simmim/ops/pixel_targets.hpp: the regression targets of the SimMIM ablations, computed from the image.
//
//   area_downsample_forward / _backward   the image at a lower prediction resolution R (paper, "prediction
//                                         resolution"): F.avg_pool2d(x, k) with k = S / R, and its adjoint
//   window_mean_var                       per-pixel mean and unbiased variance over a w x w window (stride 1,
//                                         zero padding w / 2, padded pixels not counted), O(1) per pixel
//   normalize_target                      the SwinV2 / SimMIM "norm_targets": (x - mean) / sqrt(var + 1e-6)
//
// Every image is a stack of (B, C) square planes, row-major. The window statistics are computed in double
// whatever T is (E[x^2] - E[x]^2 cancels catastrophically in float), from separable prefix sums of the
// plane minus its own mean (a shift that leaves the variance unchanged and keeps the cancellation small);
// window_mean_var_reference is the brute-force two-pass definition the fast version is tested against.
// Work is split over the (b, c) planes with OpenMP; each plane is computed in a fixed order, so results do
// not depend on the thread count. Bad sizes throw std::runtime_error naming what was expected and found.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/kernels/simd.hpp"

namespace simmim::ops {

namespace detail {
/// Throws unless the downsampling is possible: S a positive multiple of R.
inline void check_area_downsample(const char* function, int B, int C, int S, int R) {
    if (B < 0 || C < 1 || S < 1 || R < 1 || S % R != 0)
        throw std::runtime_error(std::string("simmim::ops::") + function +
                                 ": expected B >= 0, C >= 1 and an image size S that is a positive multiple of the target "
                                 "size R, found B=" + std::to_string(B) + " C=" + std::to_string(C) +
                                 " S=" + std::to_string(S) + " R=" + std::to_string(R));
}

/// Throws unless the window statistics are defined: an odd window >= 3 (centred, as the official
/// assert patch_size % 2 == 1) and a plane of side >= 2 (so every window holds >= 2 pixels and the
/// unbiased variance n / (n - 1) is finite).
inline void check_window(const char* function, int R, int window) {
    if (R < 2 || window < 3 || window % 2 == 0)
        throw std::runtime_error(std::string("simmim::ops::") + function +
                                 ": expected a plane side R >= 2 and an odd window >= 3, found R=" + std::to_string(R) +
                                 " window=" + std::to_string(window));
}

inline bool parallel_planes(int B, int C, int R) {
    return static_cast<std::ptrdiff_t>(B) * C * R * R >= kernels::kParallelMinWork && static_cast<std::ptrdiff_t>(B) * C > 1;
}
}  // namespace detail

/// out (B, C, R, R) = mean of each k x k block of in (B, C, S, S), k = S / R: F.avg_pool2d(in, k).
/// Each block is summed row by row in a fixed order, then divided by k * k.
template <class T>
void area_downsample_forward(T* out, const T* in, int B, int C, int S, int R) {
    detail::check_area_downsample("area_downsample_forward", B, C, S, R);
    const int k = S / R;
    const T inv = T(1) / T(k * k);
    const int planes = B * C;
#pragma omp parallel if (detail::parallel_planes(B, C, S))
    {
        std::vector<T> acc(static_cast<std::size_t>(R));  // (R) one output row, accumulated over k input rows
#pragma omp for schedule(static)
        for (int pc = 0; pc < planes; ++pc) {
            const T* src = in + static_cast<std::ptrdiff_t>(pc) * S * S;
            T* dst = out + static_cast<std::ptrdiff_t>(pc) * R * R;
            for (int oy = 0; oy < R; ++oy) {
                std::fill(acc.begin(), acc.end(), T(0));
                for (int i = 0; i < k; ++i) {
                    const T* row = src + static_cast<std::ptrdiff_t>(oy * k + i) * S;
                    for (int ox = 0; ox < R; ++ox)
                        for (int j = 0; j < k; ++j) acc[ox] += row[ox * k + j];
                }
                for (int ox = 0; ox < R; ++ox) dst[static_cast<std::ptrdiff_t>(oy) * R + ox] = acc[ox] * inv;
            }
        }
    }
}

/// The adjoint of area_downsample_forward: din (B, C, S, S) += dout[b, c, y / k, x / k] / (k * k).
template <class T>
void area_downsample_backward(T* din, const T* dout, int B, int C, int S, int R) {
    detail::check_area_downsample("area_downsample_backward", B, C, S, R);
    const int k = S / R;
    const T inv = T(1) / T(k * k);
    const int planes = B * C;
#pragma omp parallel for schedule(static) if (detail::parallel_planes(B, C, S))
    for (int pc = 0; pc < planes; ++pc) {
        const T* src = dout + static_cast<std::ptrdiff_t>(pc) * R * R;
        T* dst = din + static_cast<std::ptrdiff_t>(pc) * S * S;
        for (int y = 0; y < S; ++y) {
            const T* d = src + static_cast<std::ptrdiff_t>(y / k) * R;
            T* row = dst + static_cast<std::ptrdiff_t>(y) * S;
            for (int x = 0; x < S; ++x) row[x] += d[x / k] * inv;
        }
    }
}

/// Brute-force reference of window_mean_var: for each pixel, the in-image pixels of the window by
/// two explicit passes, mean = sum / n and var = sum((x - mean)^2) / (n - 1). O(R^2 w^2).
template <class T>
void window_mean_var_reference(double* mean, double* var, const T* plane, int R, int window) {
    detail::check_window("window_mean_var_reference", R, window);
    const int h = window / 2;
    for (int y = 0; y < R; ++y)
        for (int x = 0; x < R; ++x) {
            const int y0 = std::max(y - h, 0), y1 = std::min(y + h, R - 1);
            const int x0 = std::max(x - h, 0), x1 = std::min(x + h, R - 1);
            const double n = double(y1 - y0 + 1) * (x1 - x0 + 1);
            double s = 0;
            for (int v = y0; v <= y1; ++v)
                for (int u = x0; u <= x1; ++u) s += double(plane[static_cast<std::ptrdiff_t>(v) * R + u]);
            const double m = s / n;
            double ss = 0;
            for (int v = y0; v <= y1; ++v)
                for (int u = x0; u <= x1; ++u) {
                    const double d = double(plane[static_cast<std::ptrdiff_t>(v) * R + u]) - m;
                    ss += d * d;
                }
            mean[static_cast<std::ptrdiff_t>(y) * R + x] = m;
            var[static_cast<std::ptrdiff_t>(y) * R + x] = ss / (n - 1);
        }
}

/// mean, var (R, R), double: the mean and the unbiased variance of the in-image pixels of the
/// window x window square centred on each pixel of plane (R, R); a window larger than the plane
/// simply covers all of it. As the official norm_targets, which uses F.avg_pool2d(stride 1,
/// padding w // 2, count_include_pad=False) for E[x] and E[x^2], n = the in-image pixel count and
/// var = (E[x^2] - E[x]^2) * n / (n - 1), clamped at 0. Separable prefix sums (O(1) per pixel) in
/// double of x - c, c the plane mean. Requires R >= 2 and an odd window >= 3.
template <class T>
void window_mean_var(double* mean, double* var, const T* plane, int R, int window) {
    detail::check_window("window_mean_var", R, window);
    const int h = window / 2;
    const std::size_t Rz = static_cast<std::size_t>(R);
    double c = 0;
    for (std::size_t i = 0; i < Rz * Rz; ++i) c += double(plane[i]);
    c /= double(Rz * Rz);
    // col[y][x] (R + 1, R): sum over rows < y of the horizontal window sums of row y, for x - c and (x - c)^2
    std::vector<double> col_s((Rz + 1) * Rz, 0.0), col_q((Rz + 1) * Rz, 0.0);
    std::vector<double> pre_s(Rz + 1), pre_q(Rz + 1);  // prefix sums of one row
    for (int y = 0; y < R; ++y) {
        const T* row = plane + static_cast<std::ptrdiff_t>(y) * R;
        pre_s[0] = pre_q[0] = 0;
        for (int x = 0; x < R; ++x) {
            const double d = double(row[x]) - c;
            pre_s[x + 1] = pre_s[x] + d;
            pre_q[x + 1] = pre_q[x] + d * d;
        }
        const double* above_s = col_s.data() + y * Rz;
        const double* above_q = col_q.data() + y * Rz;
        double* next_s = col_s.data() + (y + 1) * Rz;
        double* next_q = col_q.data() + (y + 1) * Rz;
        for (int x = 0; x < R; ++x) {
            const int x0 = std::max(x - h, 0), x1 = std::min(x + h, R - 1);
            next_s[x] = above_s[x] + (pre_s[x1 + 1] - pre_s[x0]);
            next_q[x] = above_q[x] + (pre_q[x1 + 1] - pre_q[x0]);
        }
    }
    for (int y = 0; y < R; ++y) {
        const int y0 = std::max(y - h, 0), y1 = std::min(y + h, R - 1);
        const double* top_s = col_s.data() + y0 * Rz;
        const double* top_q = col_q.data() + y0 * Rz;
        const double* bot_s = col_s.data() + (y1 + 1) * Rz;
        const double* bot_q = col_q.data() + (y1 + 1) * Rz;
        for (int x = 0; x < R; ++x) {
            const int x0 = std::max(x - h, 0), x1 = std::min(x + h, R - 1);
            const double n = double(y1 - y0 + 1) * (x1 - x0 + 1);
            const double m = (bot_s[x] - top_s[x]) / n;  // mean of x - c
            const double q = (bot_q[x] - top_q[x]) / n;  // mean of (x - c)^2
            mean[static_cast<std::ptrdiff_t>(y) * R + x] = c + m;
            var[static_cast<std::ptrdiff_t>(y) * R + x] = std::max((q - m * m) * (n / (n - 1)), 0.0);
        }
    }
}

/// out (B, C, R, R) = (in - mean) / sqrt(var + eps) per pixel, mean and var from window_mean_var over
/// a window x window square of the pixel's own (b, c) plane: the official norm_targets(x, window).
/// out may be in (each plane's statistics are complete before the plane is written).
template <class T>
void normalize_target(T* out, const T* in, int B, int C, int R, int window, double eps = 1e-6) {
    if (B < 0 || C < 1) throw std::runtime_error("simmim::ops::normalize_target: expected B >= 0 and C >= 1, found B=" +
                                                 std::to_string(B) + " C=" + std::to_string(C));
    detail::check_window("normalize_target", R, window);
    const int planes = B * C;
    const std::size_t n = static_cast<std::size_t>(R) * R;
#pragma omp parallel if (detail::parallel_planes(B, C, R))
    {
        std::vector<double> mean(n), var(n);  // (R, R) this thread's statistics
#pragma omp for schedule(static)
        for (int pc = 0; pc < planes; ++pc) {
            const T* src = in + static_cast<std::ptrdiff_t>(pc) * R * R;
            T* dst = out + static_cast<std::ptrdiff_t>(pc) * R * R;
            window_mean_var(mean.data(), var.data(), src, R, window);
            for (std::size_t i = 0; i < n; ++i) dst[i] = T((double(src[i]) - mean[i]) / std::sqrt(var[i] + eps));
        }
    }
}

}  // namespace simmim::ops
