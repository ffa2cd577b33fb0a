// Masking policies against the official generator's definition: exact counts, block structure at the
// token grid, per-sample independence, determinism, and uniform coverage.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "simmim/masking/masking.hpp"

using namespace simmim;

TEST_CASE("official mask: exact ceil(R*R*ratio) count, upsampled blocks, 1 = masked", "[masking]") {
    struct Case { int input, mask_patch, model_patch; double ratio; int R, grid, coarse_masked; };
    for (const Case c : {Case{192, 32, 4, 0.6, 6, 48, 22}, Case{224, 32, 16, 0.6, 7, 14, 30}, Case{32, 8, 4, 0.6, 4, 8, 10},
                         Case{224, 32, 16, 0.1, 7, 14, 5}}) {
        RandomMaskPatch m(c.input, c.mask_patch, c.model_patch, c.ratio);
        REQUIRE(m.token_grid() == c.grid);
        const int scale = c.mask_patch / c.model_patch;
        const int B = 4;
        std::vector<float> mask(B * c.grid * c.grid);
        m.generate(1234, 7, B, mask.data());
        for (int b = 0; b < B; ++b) {
            const float* mb = mask.data() + b * c.grid * c.grid;
            int masked = 0;
            for (int y = 0; y < c.grid; ++y)
                for (int x = 0; x < c.grid; ++x) {
                    REQUIRE((mb[y * c.grid + x] == 0.f || mb[y * c.grid + x] == 1.f));
                    // constant within each mask patch
                    REQUIRE(mb[y * c.grid + x] == mb[(y / scale * scale) * c.grid + x / scale * scale]);
                    masked += mb[y * c.grid + x] != 0.f;
                }
            CHECK(masked == c.coarse_masked * scale * scale);
            CHECK(c.coarse_masked == static_cast<int>(std::ceil(c.R * c.R * c.ratio)));
        }
        // per-sample independence: not all samples equal
        bool differ = false;
        for (int b = 1; b < B; ++b)
            differ |= !std::equal(mask.begin(), mask.begin() + c.grid * c.grid, mask.begin() + b * c.grid * c.grid);
        CHECK(differ);
    }
}

TEST_CASE("masks are a pure function of (seed, step, sample)", "[masking]") {
    RandomMaskPatch m(192, 32, 4, 0.6);
    std::vector<float> a(8 * 48 * 48), b(8 * 48 * 48), c(8 * 48 * 48), one(48 * 48);
    m.generate(5, 3, 8, a.data());
    m.generate(5, 3, 8, b.data());
    m.generate(5, 4, 8, c.data());
    CHECK(a == b);
    CHECK(a != c);
    // sample 5 of a batch equals that sample drawn alone from its derived generator
    Rng rng(derive_seed(5, 3, 5));
    m.generate_one(rng, one.data());
    CHECK(std::equal(one.begin(), one.end(), a.begin() + 5 * 48 * 48));
}

TEST_CASE("every mask patch is masked with probability ratio (uniform without replacement)", "[masking]") {
    RandomMaskPatch m(224, 32, 32, 0.6);  // 7x7 grid, 30 of 49 masked -> p = 30/49
    const int draws = 4000;
    std::vector<double> freq(49, 0);
    std::vector<float> mask(49);
    for (int s = 0; s < draws; ++s) {
        m.generate(77, s, 1, mask.data());
        for (int i = 0; i < 49; ++i) freq[i] += mask[i];
    }
    const double p = 30.0 / 49, sd = std::sqrt(p * (1 - p) / draws);
    for (int i = 0; i < 49; ++i) CHECK(std::abs(freq[i] / draws - p) < 5 * sd);
}

TEST_CASE("token-level random policy masks floor(N*ratio) tokens", "[masking]") {
    RandomTokens m(14, 0.6);
    std::vector<double> mask(3 * 196);
    m.generate(1, 0, 3, mask.data());
    for (int b = 0; b < 3; ++b) {
        double s = 0;
        for (int i = 0; i < 196; ++i) s += mask[b * 196 + i];
        CHECK(s == std::floor(196 * 0.6));
    }
}

TEST_CASE("invalid masking parameters are rejected with a message", "[masking]") {
    CHECK_THROWS_WITH(RandomMaskPatch(224, 30, 16, 0.6), Catch::Contains("multiple"));
    CHECK_THROWS_WITH(RandomMaskPatch(192, 32, 4, 1.0), Catch::Contains("(0, 1)"));
    CHECK_THROWS_WITH(RandomTokens(14, 0.0), Catch::Contains("(0, 1)"));
}
