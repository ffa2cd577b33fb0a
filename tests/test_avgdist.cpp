// AvgDist (mean distance from a masked pixel to the nearest visible one) against a brute-force search
// over all pixel pairs and against closed forms: a single pixel, stripes, squares, a diagonal.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "simmim/analysis/avgdist.hpp"
#include "simmim/core/random.hpp"
#include "simmim/masking/masking.hpp"

using namespace simmim;
using analysis::avg_dist;

namespace {

struct BruteForce {
    std::vector<std::int64_t> squared;  // (H, W) squared distance to the nearest visible pixel, -1 if none
    double avg = 0;                     // NaN if a masked pixel has no visible pixel
};

// O((H W)^2) search; with only_boundary, the candidates are the visible pixels with a masked 4-neighbour,
// which is still exact: the neighbour of the nearest visible pixel one step towards a masked pixel is
// closer to it, so it must be masked.
BruteForce brute_force(const std::vector<std::uint8_t>& mask, int H, int W, bool only_boundary = false) {
    std::vector<int> candidates;  // indices of visible pixels
    for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
            if (mask[y * W + x]) continue;
            const bool boundary = (y > 0 && mask[(y - 1) * W + x]) || (y + 1 < H && mask[(y + 1) * W + x]) ||
                                  (x > 0 && mask[y * W + x - 1]) || (x + 1 < W && mask[y * W + x + 1]);
            if (!only_boundary || boundary) candidates.push_back(y * W + x);
        }
    BruteForce r;
    r.squared.assign(static_cast<std::size_t>(H) * W, 0);
    double sum = 0;
    int masked = 0;
    for (int y = 0; y < H; ++y)
        for (int x = 0; x < W; ++x) {
            if (!mask[y * W + x]) continue;
            std::int64_t best = -1;
            for (int c : candidates) {
                const std::int64_t dy = y - c / W, dx = x - c % W;
                if (best < 0 || dy * dy + dx * dx < best) best = dy * dy + dx * dx;
            }
            r.squared[y * W + x] = best;
            if (best < 0) r.avg = std::numeric_limits<double>::quiet_NaN();
            sum += std::sqrt(static_cast<double>(best < 0 ? 0 : best));
            ++masked;
        }
    if (!std::isnan(r.avg)) r.avg = masked == 0 ? 0.0 : sum / masked;
    return r;
}

void check_against_brute_force(const std::vector<std::uint8_t>& mask, int H, int W, bool only_boundary = false) {
    const BruteForce expected = brute_force(mask, H, W, only_boundary);
    const std::vector<std::int64_t> squared = analysis::squared_distance_to_visible(mask.data(), H, W);
    for (std::size_t i = 0; i < mask.size(); ++i) {
        const std::int64_t want = expected.squared[i] < 0 ? analysis::unreachable : expected.squared[i];
        if (squared[i] != want) {
            CAPTURE(H, W, i, squared[i], want);
            FAIL("squared distance differs from brute force");
        }
    }
    const double got = avg_dist(mask.data(), H, W);
    if (std::isnan(expected.avg)) {
        CHECK(std::isnan(got));
    } else {
        CHECK(std::abs(got - expected.avg) <= 1e-12);
    }
}

// Sum over a masked s x s square inside a visible image: the pixels on ring r (r = 1 outermost) are at
// distance r, and ring r holds (s - 2r + 2)^2 - max(s - 2r, 0)^2 pixels.
double square_avg(int s) {
    double sum = 0;
    for (int r = 1; 2 * r - 2 < s; ++r) {
        const int inner = std::max(s - 2 * r, 0);
        sum += r * double((s - 2 * r + 2) * (s - 2 * r + 2) - inner * inner);
    }
    return sum / (double(s) * s);
}

}  // namespace

TEST_CASE("AvgDist equals a brute-force search on random masks up to 40x40", "[avgdist]") {
    Rng rng(derive_seed(2022, 3));
    int cases = 0;
    for (const double density : {0.02, 0.3, 0.5, 0.8, 0.95, 0.995}) {
        for (int rep = 0; rep < 12; ++rep) {
            const int H = 1 + static_cast<int>(rng.below(40)), W = 1 + static_cast<int>(rng.below(40));
            std::vector<std::uint8_t> mask(static_cast<std::size_t>(H) * W);
            for (auto& m : mask) m = rng.uniform() < density ? 1 : 0;
            CAPTURE(density, H, W);
            check_against_brute_force(mask, H, W);
            ++cases;
        }
    }
    // Blocky masks (unions of rectangles), where distances grow large.
    for (int rep = 0; rep < 20; ++rep) {
        const int H = 20 + static_cast<int>(rng.below(21)), W = 20 + static_cast<int>(rng.below(21));
        std::vector<std::uint8_t> mask(static_cast<std::size_t>(H) * W, 0);
        const int blocks = 1 + static_cast<int>(rng.below(6));
        for (int b = 0; b < blocks; ++b) {
            const int h = 1 + static_cast<int>(rng.below(static_cast<std::uint64_t>(H)));
            const int w = 1 + static_cast<int>(rng.below(static_cast<std::uint64_t>(W)));
            const int top = static_cast<int>(rng.below(static_cast<std::uint64_t>(H - h + 1)));
            const int left = static_cast<int>(rng.below(static_cast<std::uint64_t>(W - w + 1)));
            for (int y = top; y < top + h; ++y)
                for (int x = left; x < left + w; ++x) mask[y * W + x] = 1;
        }
        CAPTURE(H, W, blocks);
        check_against_brute_force(mask, H, W);
        ++cases;
    }
    CHECK(cases == 92);
}

TEST_CASE("AvgDist of official 224-pixel masks equals a brute-force search", "[avgdist]") {
    for (const int mask_patch : {32, 56}) {
        const RandomMaskPatch policy(224, mask_patch, mask_patch / 8, 0.6);
        std::vector<float> tokens(static_cast<std::size_t>(policy.token_grid()) * policy.token_grid());
        policy.generate(9, 1, 1, tokens.data());
        const std::vector<std::uint8_t> pixels = analysis::upsample_token_mask(tokens.data(), policy.token_grid(), mask_patch / 8);
        REQUIRE(pixels.size() == 224u * 224u);
        CAPTURE(mask_patch);
        check_against_brute_force(pixels, 224, 224, /*only_boundary=*/true);
    }
}

TEST_CASE("AvgDist closed forms", "[avgdist]") {
    SECTION("one masked pixel: 1, wherever it is") {
        for (const auto& [y, x] : {std::pair{2, 3}, std::pair{0, 0}, std::pair{4, 6}}) {
            std::vector<std::uint8_t> mask(5 * 7, 0);
            mask[y * 7 + x] = 1;
            CHECK(avg_dist(mask.data(), 5, 7) == 1.0);
        }
    }
    SECTION("a k-wide full-height stripe: (k + 2) / 4 for even k, (m + 1)^2 / k for k = 2m + 1") {
        for (int k = 1; k <= 12; ++k) {
            const int H = 6, W = k + 10;
            std::vector<std::uint8_t> mask(static_cast<std::size_t>(H) * W, 0);
            for (int y = 0; y < H; ++y)
                for (int x = 4; x < 4 + k; ++x) mask[y * W + x] = 1;
            const int m = (k - 1) / 2;
            const double expected = k % 2 == 0 ? (k + 2) / 4.0 : double(m + 1) * (m + 1) / k;
            CAPTURE(k);
            CHECK(std::abs(avg_dist(mask.data(), H, W) - expected) <= 1e-12);
            // the same stripe transposed (full width, k rows)
            std::vector<std::uint8_t> transposed(mask.size());
            for (int y = 0; y < H; ++y)
                for (int x = 0; x < W; ++x) transposed[x * H + y] = mask[y * W + x];
            CHECK(std::abs(avg_dist(transposed.data(), W, H) - expected) <= 1e-12);
        }
    }
    SECTION("a k-wide stripe along the border, visible on one side only: (k + 1) / 2") {
        for (int k = 1; k <= 9; ++k) {
            const int H = 4, W = k + 3;
            std::vector<std::uint8_t> mask(static_cast<std::size_t>(H) * W, 0);
            for (int y = 0; y < H; ++y)
                for (int x = 0; x < k; ++x) mask[y * W + x] = 1;
            CHECK(std::abs(avg_dist(mask.data(), H, W) - (k + 1) / 2.0) <= 1e-12);
        }
    }
    SECTION("an s x s masked square inside a visible image: its rings at distance 1, 2, ...") {
        CHECK(square_avg(3) == Approx(10.0 / 9.0).epsilon(1e-15));  // the ring formula itself, by hand
        CHECK(square_avg(5) == Approx(35.0 / 25.0).epsilon(1e-15));
        for (int s = 1; s <= 15; ++s) {
            const int n = s + 6;
            std::vector<std::uint8_t> mask(static_cast<std::size_t>(n) * n, 0);
            for (int y = 3; y < 3 + s; ++y)
                for (int x = 3; x < 3 + s; ++x) mask[y * n + x] = 1;
            CAPTURE(s);
            CHECK(std::abs(avg_dist(mask.data(), n, n) - square_avg(s)) <= 1e-12);
        }
    }
    SECTION("a diagonal neighbour is sqrt(2) away: 2x2 with only (0, 0) visible gives (2 + sqrt(2)) / 3") {
        const std::vector<std::uint8_t> mask{0, 1, 1, 1};
        CHECK(std::abs(avg_dist(mask.data(), 2, 2) - (2 + std::sqrt(2.0)) / 3) <= 1e-15);
    }
    SECTION("nothing masked gives 0, nothing visible gives NaN") {
        const std::vector<std::uint8_t> none(12, 0), all(12, 1);
        CHECK(avg_dist(none.data(), 3, 4) == 0.0);
        CHECK(std::isnan(avg_dist(all.data(), 3, 4)));
        CHECK(std::isnan(avg_dist(all.data(), 1, 1)));
    }
}

TEST_CASE("token masks upsample to patch x patch pixel squares", "[avgdist]") {
    // 3x3 tokens, only the centre masked, patch 4: a 4x4 masked square in a 12x12 image (rings 12 at 1, 4 at 2)
    const std::vector<float> centre{0, 0, 0, 0, 1, 0, 0, 0, 0};
    const std::vector<std::uint8_t> pixels = analysis::upsample_token_mask(centre.data(), 3, 4);
    REQUIRE(pixels.size() == 144u);
    for (int y = 0; y < 12; ++y)
        for (int x = 0; x < 12; ++x) CHECK(pixels[y * 12 + x] == ((y >= 4 && y < 8 && x >= 4 && x < 8) ? 1 : 0));
    CHECK(avg_dist(pixels.data(), 12, 12) == 1.25);
    // any nonzero token value counts as masked
    const std::vector<double> odd{0.0, -2.5, 0.0, 0.0};
    const std::vector<std::uint8_t> up = analysis::upsample_token_mask(odd.data(), 2, 1);
    CHECK(up == std::vector<std::uint8_t>{0, 1, 0, 0});
}

TEST_CASE("AvgDist rejects bad sizes and null masks", "[avgdist]") {
    const std::vector<std::uint8_t> mask(4, 1);
    CHECK_THROWS_AS(avg_dist(mask.data(), 0, 4), std::invalid_argument);
    CHECK_THROWS_AS(avg_dist(mask.data(), 2, -1), std::invalid_argument);
    CHECK_THROWS_AS(avg_dist(nullptr, 2, 2), std::invalid_argument);
    CHECK_THROWS_AS(avg_dist(mask.data(), 1, analysis::max_mask_side + 1), std::invalid_argument);  // checked before reading
    CHECK_THROWS_AS(analysis::upsample_token_mask(static_cast<const float*>(nullptr), 2, 2), std::invalid_argument);
    CHECK_THROWS_AS(analysis::upsample_token_mask(mask.data(), 2, 0), std::invalid_argument);
    CHECK_THROWS_AS(analysis::upsample_token_mask(mask.data(), 1 << 16, 1 << 16), std::invalid_argument);
}
