// simmim/analysis/avgdist.hpp: AvgDist, the SimMIM paper's measure of how hard a mask is.
//
// AvgDist = mean over masked pixels of the Euclidean distance (in pixels) to the nearest visible pixel.
// Computed exactly with the Felzenszwalb-Huttenlocher squared Euclidean distance transform (Theory of
// Computing 8, 2012): the 1-D transform along every row, then along every column of the row result.
// Distances and envelope boundaries are integers and fractions until the final square root, so the
// result equals a brute-force search.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace simmim::analysis {

/// "No visible pixel in reach" in a squared distance transform.
inline constexpr std::int64_t unreachable = std::numeric_limits<std::int64_t>::max();

/// Largest mask side accepted: it keeps every integer in the distance transform within 64 bits.
inline constexpr int max_mask_side = 1 << 20;

namespace detail {

/// Where two parabolas of a lower envelope meet: the abscissa num / den, den > 0, kept as a fraction
/// so that every comparison is exact integer arithmetic.
struct EnvelopeBoundary {
    std::int64_t num = 0, den = 1;
};

/// 1-D squared distance transform of a sampled function f (n values):
/// d[q] = min over p with f[p] != unreachable of (q - p)^2 + f[p]; unreachable when every f[p] is.
/// Requires n <= max_mask_side = 2^20 and reachable f values in [0, 2^40], so that the cross products
/// (below 2^41 * 2^21) fit in 64 bits. d must not alias f. Uses `vertex` (n ints) and `boundary` (n values)
/// as scratch. O(n).
inline void squared_distance_transform_1d(const std::int64_t* f, int n, std::int64_t* d, int* vertex,
                                          EnvelopeBoundary* boundary) {
    // Lower envelope of the parabolas (q - p)^2 + f[p] over the reachable p: parabola vertex[i] is the
    // lowest on [boundary[i], boundary[i + 1]); boundary[0] is -infinity and boundary[k + 1] +infinity.
    const auto greater = [](const EnvelopeBoundary& a, const EnvelopeBoundary& b) {
        return a.num * b.den > b.num * a.den;
    };
    int k = -1;  // index of the rightmost parabola of the envelope
    for (int q = 0; q < n; ++q) {
        const std::int64_t fq = f[q];
        if (fq == unreachable) continue;
        EnvelopeBoundary s;
        while (k >= 0) {
            const int p = vertex[k];
            s = {(fq + std::int64_t(q) * q) - (f[p] + std::int64_t(p) * p), 2 * (std::int64_t(q) - p)};
            if (k == 0 || greater(s, boundary[k])) break;
            --k;
        }
        ++k;
        vertex[k] = q;
        boundary[k] = s;
    }
    if (k < 0) {
        for (int q = 0; q < n; ++q) d[q] = unreachable;
        return;
    }
    int j = 0;
    for (int q = 0; q < n; ++q) {
        while (j < k && boundary[j + 1].num < q * boundary[j + 1].den) ++j;
        const std::int64_t dq = q - vertex[j];
        d[q] = dq * dq + f[vertex[j]];
    }
}

}  // namespace detail

/// Exact squared Euclidean distance from every pixel to the nearest visible pixel of an (H, W)
/// row-major mask (nonzero = masked): 0 on visible pixels, `unreachable` everywhere if none is visible.
/// Throws std::invalid_argument if H or W is not in [1, max_mask_side] or the mask is null.
inline std::vector<std::int64_t> squared_distance_to_visible(const std::uint8_t* pixel_mask, int H, int W) {
    if (H <= 0 || W <= 0 || H > max_mask_side || W > max_mask_side)
        throw std::invalid_argument("squared_distance_to_visible: mask size " + std::to_string(H) + "x" + std::to_string(W) +
                                    ", expected each side in [1, " + std::to_string(max_mask_side) + "]");
    if (pixel_mask == nullptr) throw std::invalid_argument("squared_distance_to_visible: pixel_mask is null");
    const int longest = H > W ? H : W;
    std::vector<std::int64_t> dist(static_cast<std::size_t>(H) * W);  // (H, W) row pass, then the result
    std::vector<std::int64_t> line_in(longest), line_out(longest);    // one row or column
    std::vector<int> vertex(longest);
    std::vector<detail::EnvelopeBoundary> boundary(longest);
    for (int y = 0; y < H; ++y) {
        const std::uint8_t* mask_row = pixel_mask + static_cast<std::ptrdiff_t>(y) * W;
        for (int x = 0; x < W; ++x) line_in[x] = mask_row[x] != 0 ? unreachable : 0;
        std::int64_t* dist_row = dist.data() + static_cast<std::ptrdiff_t>(y) * W;
        detail::squared_distance_transform_1d(line_in.data(), W, dist_row, vertex.data(), boundary.data());
    }
    for (int x = 0; x < W; ++x) {
        for (int y = 0; y < H; ++y) line_in[y] = dist[static_cast<std::size_t>(y) * W + x];
        detail::squared_distance_transform_1d(line_in.data(), H, line_out.data(), vertex.data(), boundary.data());
        for (int y = 0; y < H; ++y) dist[static_cast<std::size_t>(y) * W + x] = line_out[y];
    }
    return dist;
}

/// AvgDist of an (H, W) row-major pixel mask (nonzero = masked): the mean over masked pixels of the
/// Euclidean distance in pixels to the nearest visible pixel. Returns 0 if no pixel is masked and NaN
/// if no pixel is visible (the distance is undefined). Throws std::invalid_argument if H or W is not
/// in [1, max_mask_side] or the mask is null.
inline double avg_dist(const std::uint8_t* pixel_mask, int H, int W) {
    const std::vector<std::int64_t> dist = squared_distance_to_visible(pixel_mask, H, W);  // (H, W)
    const std::size_t pixels = dist.size();
    double sum = 0;
    std::size_t masked = 0;
    for (std::size_t i = 0; i < pixels; ++i) {
        if (pixel_mask[i] == 0) continue;
        if (dist[i] == unreachable) return std::numeric_limits<double>::quiet_NaN();
        sum += std::sqrt(static_cast<double>(dist[i]));
        ++masked;
    }
    return masked == 0 ? 0.0 : sum / static_cast<double>(masked);
}

/// Upsample a (grid, grid) token mask (nonzero = masked, any arithmetic T) to its (grid * patch,
/// grid * patch) pixel mask of 0/1, each token covering a patch x patch square, as the loss does.
/// Throws std::invalid_argument if grid or patch is not positive or the mask is null.
template <class T>
std::vector<std::uint8_t> upsample_token_mask(const T* token_mask, int grid, int patch) {
    if (grid <= 0 || patch <= 0)
        throw std::invalid_argument("upsample_token_mask: grid " + std::to_string(grid) + " and patch " +
                                    std::to_string(patch) + " must be positive");
    if (token_mask == nullptr) throw std::invalid_argument("upsample_token_mask: token_mask is null");
    const std::int64_t side64 = std::int64_t(grid) * patch;
    if (side64 > std::numeric_limits<int>::max())
        throw std::invalid_argument("upsample_token_mask: grid " + std::to_string(grid) + " times patch " + std::to_string(patch) +
                                    " does not fit in an int");
    const auto side = static_cast<std::size_t>(side64);
    const auto g = static_cast<std::size_t>(grid), p = static_cast<std::size_t>(patch);
    std::vector<std::uint8_t> pixels(side * side);  // (side, side)
    for (std::size_t y = 0; y < side; ++y)
        for (std::size_t x = 0; x < side; ++x) pixels[y * side + x] = token_mask[(y / p) * g + x / p] != T(0) ? 1 : 0;
    return pixels;
}

}  // namespace simmim::analysis
