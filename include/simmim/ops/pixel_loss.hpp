// simmim/ops/pixel_loss.hpp: the reconstruction losses of the SimMIM ablations (paper, findings 2 and 4),
// on a prediction and a target of the same shape (B, C, R, R):
//
//   masked (official):  loss = sum(e(pred - target) * mask_px) / (sum(mask_px) + 1e-5) / C
//   all pixels:         loss = mean of e(pred - target) over every pixel and channel
//
// with e = |.| (L1, the official) or (.)^2 (L2, F.mse_loss), and mask_px the token mask (B, g, g)
// repeated r = R / g times along both axes. For L1 the masked form equals ops::masked_l1 (which the
// model uses for it, SIMD); these kernels are plain loops (`omp simd` over a row) and serve every form.
// The forward sums each (b, c) plane row by row in a fixed order into a double partial, then the
// partials in order: deterministic for any thread count. Bad shapes throw std::runtime_error.
#pragma once

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/kernels/simd.hpp"

namespace simmim::ops {

namespace detail {
/// Throws unless R is a positive multiple of r (the mask index y / r, x / r stays below g = R / r).
inline void check_pixel_loss_shape(const char* function, int B, int C, int R, int r) {
    if (B < 1 || C < 1 || R < 1 || r < 1 || R % r != 0)
        throw std::runtime_error(std::string("simmim::ops::") + function +
                                 ": expected B >= 1, C >= 1 and a prediction size R that is a positive multiple of the "
                                 "pixels per token r, found B=" + std::to_string(B) + " C=" + std::to_string(C) +
                                 " R=" + std::to_string(R) + " r=" + std::to_string(r));
}

/// The loss denominator: (sum(mask_px) + 1e-5) * C for the masked form, B * C * R * R otherwise.
template <bool MaskedOnly, class T>
double pixel_loss_denominator(const T* mask, int B, int C, int R, int r) {
    if constexpr (MaskedOnly) {
        const int g = R / r;
        double mask_sum = 0;
        for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(B) * g * g; ++i) mask_sum += double(mask[i]);
        return (mask_sum * double(r) * r + 1e-5) * C;
    } else {
        return double(B) * C * R * R;
    }
}
}  // namespace detail

/// Returns the loss of pred against target, both (B, C, R, R). Squared: L2 instead of L1. MaskedOnly:
/// the official masked form with mask (B, g, g), g = R / r, 1 = masked; otherwise the mean over all
/// pixels (mask is then not read and may be null).
template <bool Squared, bool MaskedOnly, class T>
T pixel_loss_forward(const T* pred, const T* target, const T* mask, int B, int C, int R, int r) {
    detail::check_pixel_loss_shape("pixel_loss_forward", B, C, R, r);
    const int g = R / r;
    const double denom = detail::pixel_loss_denominator<MaskedOnly>(mask, B, C, R, r);
    std::vector<double> partial(static_cast<std::size_t>(B) * C);  // (B, C), summed in order: deterministic
#pragma omp parallel if (static_cast<std::ptrdiff_t>(B) * C * R * R >= kernels::kParallelMinWork)
    {
        std::vector<T> w(static_cast<std::size_t>(R), T(1));  // (R) this thread's pixel mask row
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; ++b)
            for (int c = 0; c < C; ++c) {
                double acc = 0;
                for (int y = 0; y < R; ++y) {
                    if constexpr (MaskedOnly) {
                        if (y % r == 0) {
                            const T* m = mask + (static_cast<std::ptrdiff_t>(b) * g + y / r) * g;
                            for (int x = 0; x < R; ++x) w[x] = m[x / r];
                        }
                    }
                    const std::ptrdiff_t base = ((static_cast<std::ptrdiff_t>(b) * C + c) * R + y) * R;
                    const T* q = pred + base;
                    const T* t = target + base;
                    const T* wr = w.data();
                    T row = 0;
#pragma omp simd reduction(+ : row)
                    for (int x = 0; x < R; ++x) {
                        const T d = q[x] - t[x];
                        if constexpr (Squared) row += d * d * wr[x];
                        else row += std::abs(d) * wr[x];
                    }
                    acc += double(row);
                }
                partial[static_cast<std::size_t>(b) * C + c] = acc;
            }
    }
    double total = 0;
    for (const double v : partial) total += v;
    return T(total / denom);
}

/// Accumulates dloss * d loss / d pred into dpred and, when dtarget is not null, dloss * d loss / d target
/// (= the negative) into dtarget; same arguments as pixel_loss_forward. L1 uses sign(pred - target), 0 at 0
/// (as torch).
template <bool Squared, bool MaskedOnly, class T>
void pixel_loss_backward(T* dpred, T* dtarget, T dloss, const T* pred, const T* target, const T* mask, int B, int C, int R,
                         int r) {
    detail::check_pixel_loss_shape("pixel_loss_backward", B, C, R, r);
    const int g = R / r;
    const T scale = T(double(dloss) / detail::pixel_loss_denominator<MaskedOnly>(mask, B, C, R, r)) * (Squared ? T(2) : T(1));
#pragma omp parallel if (static_cast<std::ptrdiff_t>(B) * C * R * R >= kernels::kParallelMinWork)
    {
        std::vector<T> w(static_cast<std::size_t>(R), T(1));  // (R) this thread's pixel mask row
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; ++b)
            for (int c = 0; c < C; ++c)
                for (int y = 0; y < R; ++y) {
                    if constexpr (MaskedOnly) {
                        if (y % r == 0) {
                            const T* m = mask + (static_cast<std::ptrdiff_t>(b) * g + y / r) * g;
                            for (int x = 0; x < R; ++x) w[x] = m[x / r];
                        }
                    }
                    const std::ptrdiff_t base = ((static_cast<std::ptrdiff_t>(b) * C + c) * R + y) * R;
                    const T* q = pred + base;
                    const T* t = target + base;
                    const T* wr = w.data();
                    T* dp = dpred + base;
                    if (dtarget) {
                        T* dt = dtarget + base;
#pragma omp simd
                        for (int x = 0; x < R; ++x) {
                            const T d = q[x] - t[x];
                            const T e = Squared ? d : T((T(0) < d) - (d < T(0)));
                            const T v = e * wr[x] * scale;
                            dp[x] += v;
                            dt[x] -= v;
                        }
                    } else {
#pragma omp simd
                        for (int x = 0; x < R; ++x) {
                            const T d = q[x] - t[x];
                            const T e = Squared ? d : T((T(0) < d) - (d < T(0)));
                            dp[x] += e * wr[x] * scale;
                        }
                    }
                }
    }
}

}  // namespace simmim::ops
