// simmim/ops/masked_l1.hpp: the official SimMIM loss,
//   loss = sum(|x - x_rec| * mask_px) / (sum(mask_px) + 1e-5) / C,
// with mask_px the token mask (B, g, g) repeated p x p to pixels (B, 1, H, W).
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

namespace simmim::ops {

namespace detail {
template <class T>
T sign(T v) { return T((T(0) < v) - (v < T(0))); }  // torch.sign: 0 at 0
}

/// Returns the loss. pred, target: (B, C, S, S); mask: (B, g, g) with g = S / p, 1 = masked.
template <class T>
T masked_l1_forward(const T* pred, const T* target, const T* mask, int B, int C, int S, int p) {
    const int g = S / p;
    double mask_sum = 0;
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(B) * g * g; ++i) mask_sum += double(mask[i]);
    mask_sum *= double(p) * p;
    std::vector<T> partial(static_cast<std::size_t>(B) * C);  // (B, C), summed in order: deterministic
#pragma omp parallel for collapse(2) schedule(static)
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

/// Accumulates dloss/dpred into dpred and, when dtarget is not null, dloss/dtarget into dtarget
/// (the target is the input image, so the input gradient has this direct term too).
template <class T>
void masked_l1_backward(T* dpred, T* dtarget, T dloss, const T* pred, const T* target, const T* mask, int B, int C,
                        int S, int p) {
    const int g = S / p;
    double mask_sum = 0;
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(B) * g * g; ++i) mask_sum += double(mask[i]);
    mask_sum *= double(p) * p;
    const T scale = dloss / (T(mask_sum) + T(1e-5)) / T(C);
#pragma omp parallel for collapse(2) schedule(static)
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

}  // namespace simmim::ops
