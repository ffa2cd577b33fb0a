// simmim/ops/patch.hpp: images <-> patch rows.
//
// patchify: image (B, C, H, W) -> patches (B, L, C*p*p), L = (H/p)*(W/p) in row-major grid order,
// each row ordered (c, i, j). With this order a stride-p Conv2d with weight (D, C, p, p) is a Linear on
// the rows, and the official head's PixelShuffle(p) of a (B, C*p*p, h, w) map is exactly unpatchify:
// out[c, y*p+i, x*p+j] = in[c*p*p + i*p + j, y, x]. Each is the other's backward (a permutation).
#pragma once

#include <cstddef>

namespace simmim::ops {

namespace detail {
/// Below this many elements a copy runs on the calling thread (a parallel region costs more than it saves).
inline constexpr std::ptrdiff_t kPatchParallelMinWork = std::ptrdiff_t(1) << 15;
}  // namespace detail

/// patches (B, L, C*p*p) = patch rows of image (B, C, H, W), H = W = S.
template <class T>
void patchify(T* patches, const T* image, int B, int C, int S, int p) {
    const int g = S / p;
    [[maybe_unused]] const bool parallel = static_cast<std::ptrdiff_t>(B) * C * S * S >= detail::kPatchParallelMinWork;
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
    for (int b = 0; b < B; ++b)
        for (int y = 0; y < g; ++y)
            for (int x = 0; x < g; ++x) {
                T* row = patches + ((static_cast<std::ptrdiff_t>(b) * g + y) * g + x) * C * p * p;
                for (int c = 0; c < C; ++c)
                    for (int i = 0; i < p; ++i) {
                        const T* src = image + ((static_cast<std::ptrdiff_t>(b) * C + c) * S + y * p + i) * S + x * p;
                        for (int j = 0; j < p; ++j) *row++ = src[j];
                    }
            }
}

/// image (B, C, H, W) = pixel-shuffled patch rows (B, L, C*p*p). With accumulate, adds instead.
template <class T>
void unpatchify(T* image, const T* patches, int B, int C, int S, int p, bool accumulate = false) {
    const int g = S / p;
    [[maybe_unused]] const bool parallel = static_cast<std::ptrdiff_t>(B) * C * S * S >= detail::kPatchParallelMinWork;
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
    for (int b = 0; b < B; ++b)
        for (int y = 0; y < g; ++y)
            for (int x = 0; x < g; ++x) {
                const T* row = patches + ((static_cast<std::ptrdiff_t>(b) * g + y) * g + x) * C * p * p;
                for (int c = 0; c < C; ++c)
                    for (int i = 0; i < p; ++i) {
                        T* dst = image + ((static_cast<std::ptrdiff_t>(b) * C + c) * S + y * p + i) * S + x * p;
                        for (int j = 0; j < p; ++j) {
                            if (accumulate) dst[j] += *row++;
                            else dst[j] = *row++;
                        }
                    }
            }
}

}  // namespace simmim::ops
