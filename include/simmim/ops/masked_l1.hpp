// simmim/ops/masked_l1.hpp: the official SimMIM loss,
//   loss = sum(|x - x_rec| * mask_px) / (sum(mask_px) + 1e-5) / C,
// with mask_px the token mask (B, g, g) repeated p x p to pixels (B, 1, H, W).
//
// masked_l1_forward / masked_l1_backward take the SIMD path of kernels/simd.hpp (vectorised over the
// pixels of a row) when it is enabled for T and otherwise run the scalar masked_l1_forward_reference /
// masked_l1_backward_reference (same signatures and semantics). The forward sums one partial per
// (b, c) plane, each in a fixed order, then the partials in order: deterministic for any thread count.
// Both throw std::runtime_error on an impossible shape (p < 1, S not a multiple of p, B < 0, C < 1).
#pragma once

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/kernels/simd.hpp"

namespace simmim::ops {

namespace detail {
template <class T>
T sign(T v) { return T((T(0) < v) - (v < T(0))); }  // torch.sign: 0 at 0

/// Throws unless the shape makes sense: the mask index y / p, x / p must stay below g = S / p.
inline void check_masked_l1_shape(const char* function, int B, int C, int S, int p) {
    if (B < 0 || C < 1 || S < 1 || p < 1 || S % p != 0)
        throw std::runtime_error(std::string("simmim::ops::") + function + ": expected B >= 0, C >= 1 and an image size S " +
                                 "that is a positive multiple of the patch size p, found B=" + std::to_string(B) +
                                 " C=" + std::to_string(C) + " S=" + std::to_string(S) + " p=" + std::to_string(p));
}

/// sum(mask_px) = p^2 * sum(mask), in double.
template <class T>
double masked_pixel_count(const T* mask, int B, int g, int p) {
    double mask_sum = 0;
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(B) * g * g; ++i) mask_sum += double(mask[i]);
    return mask_sum * double(p) * p;
}
}  // namespace detail

/// Scalar reference of masked_l1_forward.
template <class T>
T masked_l1_forward_reference(const T* pred, const T* target, const T* mask, int B, int C, int S, int p) {
    detail::check_masked_l1_shape("masked_l1_forward_reference", B, C, S, p);
    const int g = S / p;
    [[maybe_unused]] const bool parallel = static_cast<std::ptrdiff_t>(B) * C * S * S >= kernels::kParallelMinWork;
    const double mask_sum = detail::masked_pixel_count(mask, B, g, p);
    std::vector<T> partial(static_cast<std::size_t>(B) * C);  // (B, C), summed in order: deterministic
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
    for (int b = 0; b < B; ++b)
        for (int c = 0; c < C; ++c) {
            T acc = 0;
            for (int y = 0; y < S; ++y) {
                const T* m = mask + (static_cast<std::ptrdiff_t>(b) * g + y / p) * g;
                const std::ptrdiff_t base = ((static_cast<std::ptrdiff_t>(b) * C + c) * S + y) * S;
                for (int x = 0; x < S; ++x) acc += std::abs(target[base + x] - pred[base + x]) * m[x / p];
            }
            partial[static_cast<std::size_t>(b) * C + c] = acc;
        }
    T total = 0;
    for (const T v : partial) total += v;
    return total / (T(mask_sum) + T(1e-5)) / T(C);
}

/// Scalar reference of masked_l1_backward.
template <class T>
void masked_l1_backward_reference(T* dpred, T* dtarget, T dloss, const T* pred, const T* target, const T* mask, int B,
                                  int C, int S, int p) {
    detail::check_masked_l1_shape("masked_l1_backward_reference", B, C, S, p);
    const int g = S / p;
    [[maybe_unused]] const bool parallel = static_cast<std::ptrdiff_t>(B) * C * S * S >= kernels::kParallelMinWork;
    const double mask_sum = detail::masked_pixel_count(mask, B, g, p);
    const T scale = dloss / (T(mask_sum) + T(1e-5)) / T(C);
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
    for (int b = 0; b < B; ++b)
        for (int c = 0; c < C; ++c)
            for (int y = 0; y < S; ++y) {
                const T* m = mask + (static_cast<std::ptrdiff_t>(b) * g + y / p) * g;
                const std::ptrdiff_t base = ((static_cast<std::ptrdiff_t>(b) * C + c) * S + y) * S;
                for (int x = 0; x < S; ++x) {
                    const T d = detail::sign(target[base + x] - pred[base + x]) * m[x / p] * scale;
                    dpred[base + x] -= d;
                    if (dtarget) dtarget[base + x] += d;
                }
            }
}

#if SIMMIM_SIMD
namespace detail {

/// mask_px (S) of one pixel row: the token-mask row m (S / p) repeated p times per entry.
template <class T>
void expand_mask_row(T* mask_px, const T* m, int S, int p) {
    for (int x = 0; x < S; ++x) mask_px[x] = m[x / p];
}

template <class T>
T masked_l1_forward_simd(const T* pred, const T* target, const T* mask, int B, int C, int S, int p) {
    check_masked_l1_shape("masked_l1_forward", B, C, S, p);
    const int g = S / p;
    [[maybe_unused]] const bool parallel = static_cast<std::ptrdiff_t>(B) * C * S * S >= kernels::kParallelMinWork;
    const double mask_sum = masked_pixel_count(mask, B, g, p);
    std::vector<T> partial(static_cast<std::size_t>(B) * C);  // (B, C), summed in order: deterministic
#pragma omp parallel if (parallel)
    {
        std::vector<T> mask_px(static_cast<std::size_t>(S));  // (S) this thread's expanded mask row
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; ++b)
            for (int c = 0; c < C; ++c) {
                T acc = 0;
                for (int y = 0; y < S; ++y) {
                    if (y % p == 0) expand_mask_row(mask_px.data(), mask + (static_cast<std::ptrdiff_t>(b) * g + y / p) * g, S, p);
                    const std::ptrdiff_t base = ((static_cast<std::ptrdiff_t>(b) * C + c) * S + y) * S;
                    const T* t = target + base;
                    const T* q = pred + base;
                    const T* w = mask_px.data();
                    acc += kernels::reduce_sum<T>(S, [&](std::ptrdiff_t x, auto tag) {
                        using V = decltype(tag);
                        using std::abs;  // xsimd::abs for batches, by argument-dependent lookup
                        return abs(kernels::load<V>(t + x) - kernels::load<V>(q + x)) * kernels::load<V>(w + x);
                    });
                }
                partial[static_cast<std::size_t>(b) * C + c] = acc;
            }
    }
    T total = 0;
    for (const T v : partial) total += v;
    return total / (T(mask_sum) + T(1e-5)) / T(C);
}

template <class T>
void masked_l1_backward_simd(T* dpred, T* dtarget, T dloss, const T* pred, const T* target, const T* mask, int B, int C,
                             int S, int p) {
    using Bt = kernels::Batch<T>;
    constexpr std::ptrdiff_t W = kernels::lanes<T>;
    check_masked_l1_shape("masked_l1_backward", B, C, S, p);
    const int g = S / p;
    [[maybe_unused]] const bool parallel = static_cast<std::ptrdiff_t>(B) * C * S * S >= kernels::kParallelMinWork;
    const double mask_sum = masked_pixel_count(mask, B, g, p);
    const T scale = dloss / (T(mask_sum) + T(1e-5)) / T(C);
    const Bt scale_b(scale), one(T(1)), minus_one(T(-1)), zero(T(0));
#pragma omp parallel if (parallel)
    {
        std::vector<T> mask_px(static_cast<std::size_t>(S));  // (S) this thread's expanded mask row
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; ++b)
            for (int c = 0; c < C; ++c)
                for (int y = 0; y < S; ++y) {
                    if (y % p == 0) expand_mask_row(mask_px.data(), mask + (static_cast<std::ptrdiff_t>(b) * g + y / p) * g, S, p);
                    const std::ptrdiff_t base = ((static_cast<std::ptrdiff_t>(b) * C + c) * S + y) * S;
                    std::ptrdiff_t x = 0;
                    for (; x + W <= S; x += W) {
                        const Bt diff = Bt::load_unaligned(target + base + x) - Bt::load_unaligned(pred + base + x);
                        const Bt sgn = xsimd::select(diff > zero, one, xsimd::select(diff < zero, minus_one, zero));
                        const Bt d = sgn * Bt::load_unaligned(mask_px.data() + x) * scale_b;
                        (Bt::load_unaligned(dpred + base + x) - d).store_unaligned(dpred + base + x);
                        if (dtarget) (Bt::load_unaligned(dtarget + base + x) + d).store_unaligned(dtarget + base + x);
                    }
                    for (; x < S; ++x) {
                        const T d = sign(target[base + x] - pred[base + x]) * mask_px[x] * scale;
                        dpred[base + x] -= d;
                        if (dtarget) dtarget[base + x] += d;
                    }
                }
    }
}

}  // namespace detail
#endif

/// Returns the loss. pred, target: (B, C, S, S); mask: (B, g, g) with g = S / p, 1 = masked.
template <class T>
T masked_l1_forward(const T* pred, const T* target, const T* mask, int B, int C, int S, int p) {
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) return detail::masked_l1_forward_simd(pred, target, mask, B, C, S, p);
#endif
    return masked_l1_forward_reference(pred, target, mask, B, C, S, p);
}

/// Accumulates dloss/dpred into dpred and, when dtarget is not null, dloss/dtarget into dtarget
/// (the target is the input image, so the input gradient has this direct term too).
template <class T>
void masked_l1_backward(T* dpred, T* dtarget, T dloss, const T* pred, const T* target, const T* mask, int B, int C,
                        int S, int p) {
#if SIMMIM_SIMD
    if constexpr (kernels::simd_enabled<T>) {
        detail::masked_l1_backward_simd(dpred, dtarget, dloss, pred, target, mask, B, C, S, p);
        return;
    }
#endif
    masked_l1_backward_reference(dpred, dtarget, dloss, pred, target, mask, B, C, S, p);
}

}  // namespace simmim::ops
