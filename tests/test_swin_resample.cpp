// Swin relative position bias table transfer to another window size (model/swin_resample.hpp) against
// SciPy: tests/pytorch/make_resample_fixture.py ran the official remap_pretrained_keys_swin loop with
// scipy.interpolate.interp2d (float64, and the official float32 pipeline) on seeded random tables.
// Plus checks independent of SciPy: polynomial reproduction and the identity for equal windows.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "simmim/io/safetensors.hpp"
#include "simmim/model/swin_resample.hpp"

#ifndef SIMMIM_SOURCE_DIR
#error "SIMMIM_SOURCE_DIR must point at the source tree (set by tests/CMakeLists.txt)"
#endif

using namespace simmim;

namespace {
// A missing or unreadable fixture throws here, which fails the test (it is never skipped).
const io::TensorFile& fixture() {
    static const io::TensorFile f = io::read_safetensors(SIMMIM_SOURCE_DIR "/tests/fixtures/swin_resample.safetensors");
    return f;
}

struct Case {
    const char *table, *scipy, *official32, *q;
    int w1, w2, heads;
};
// 6 -> 7 and 12 -> 14 (the SimMIM Swin-B / Swin-L fine-tuning transfers), 7 -> 6 (q pinned near 1.01)
// and 3 -> 5 (q pinned near 1.5, targets beyond the source coordinates: clamped as FITPACK does).
constexpr Case kCases[] = {
    {"table6", "table7_scipy", "table7_official32", "q_6_7", 6, 7, 4},
    {"table12", "table14_scipy", "table14_official32", "q_12_14", 12, 14, 2},
    {"down7to6.table", "down7to6.scipy", "down7to6.official32", "down7to6.q", 7, 6, 1},
    {"up3to5.table", "up3to5.scipy", "up3to5.official32", "up3to5.q", 3, 5, 1},
};

std::int64_t rows(int window) { return std::int64_t(2 * window - 1) * (2 * window - 1); }
}  // namespace

TEST_CASE("swin resample: q from the official bisection matches the fixture", "[swin_resample]") {
    for (const Case& c : kCases) {
        const double expected = fixture().get<double>(c.q, {})[0];
        const double q = swin_geometric_ratio(2 * c.w1 - 1, 2 * c.w2 - 1);
        INFO(c.q << ": C++ " << q << ", SciPy script " << expected);
        CHECK(std::abs(q - expected) <= 1e-12);  // the same loop and libm pow: in practice bit-identical
    }
    // the values documented for SimMIM (swin-reference.md section 3)
    CHECK(std::abs(swin_geometric_ratio(11, 13) - 1.091281) < 5e-7);
    CHECK(std::abs(swin_geometric_ratio(23, 27) - 1.032893) < 5e-7);
    const auto x = swin_geometric_coordinates(11, 13);
    REQUIRE(x.size() == 11);
    CHECK(x[5] == 0.0);
    CHECK(x[6] == 1.0);
    CHECK(std::abs(x[10] - 6.0) < 1e-5);  // the outermost offset 5 lands near 6 = 13 // 2
    for (int i = 0; i < 11; ++i) CHECK(x[i] == -x[10 - i]);
}

TEST_CASE("swin resample: tables match SciPy interp2d (float64) within 1e-6", "[swin_resample]") {
    double worst = 0.0;
    for (const Case& c : kCases) {
        const auto table = fixture().get<double>(c.table, {rows(c.w1), c.heads});
        const auto ref = fixture().get<double>(c.scipy, {rows(c.w2), c.heads});
        const auto out = resample_relative_position_table(table, c.w1, c.w2, c.heads);
        REQUIRE(out.size() == ref.size());
        double err = 0.0, scale = 0.0;
        for (std::size_t i = 0; i < out.size(); ++i) {
            err = std::max(err, std::abs(out[i] - ref[i]));
            scale = std::max(scale, std::abs(ref[i]));
        }
        INFO(c.table << " -> " << c.scipy << ": max |C++ - SciPy| = " << err << " (max |value| " << scale << ")");
        CHECK(err <= 1e-6);
        CHECK(err <= 1e-12);  // what is actually achieved (~1e-15): same spline, different arithmetic
        worst = std::max(worst, err);
    }
    WARN("max |C++ double - SciPy float64| over all cases: " << worst);
}

TEST_CASE("swin resample: the float overload reproduces the official float32 pipeline", "[swin_resample]") {
    for (const Case& c : kCases) {
        const auto table64 = fixture().get<double>(c.table, {rows(c.w1), c.heads});
        const auto ref = fixture().get<float>(c.official32, {rows(c.w2), c.heads});
        const auto ref64 = fixture().get<double>(c.scipy, {rows(c.w2), c.heads});
        std::vector<float> table(table64.begin(), table64.end());  // the official table.float()
        const auto out = resample_relative_position_table(std::span<const float>(table), c.w1, c.w2, c.heads);
        REQUIRE(out.size() == ref.size());
        std::size_t differ = 0;
        double err = 0.0, from64 = 0.0;
        for (std::size_t i = 0; i < out.size(); ++i) {
            differ += out[i] != ref[i];
            err = std::max(err, std::abs(double(out[i]) - double(ref[i])));
            from64 = std::max(from64, std::abs(double(out[i]) - ref64[i]));
        }
        INFO(c.official32 << ": " << differ << " of " << out.size() << " floats differ, max " << err
                          << "; float32 pipeline vs float64 SciPy: " << from64);
        CHECK(err <= 1e-6);
        CHECK(differ == 0);
        CHECK(from64 <= 1e-6);  // the official float32 rounding costs ~2e-7 on N(0, 1) tables
    }
}

TEST_CASE("swin resample: equal windows return the table unchanged", "[swin_resample]") {
    for (const Case& c : kCases) {
        const auto table = fixture().get<double>(c.table, {rows(c.w1), c.heads});
        CHECK(resample_relative_position_table(table, c.w1, c.w1, c.heads) == table);
    }
    const std::vector<float> one = {1.5f, -2.f};  // window 1, 2 heads: allowed when nothing changes
    CHECK(resample_relative_position_table(std::span<const float>(one), 1, 1, 2) == one);
}

TEST_CASE("swin resample: bicubic polynomials are reproduced exactly (independent of SciPy)", "[swin_resample]") {
    // The not-a-knot spline reproduces cubics, so the tensor-product spline reproduces every
    // p(x, y) = sum_{i, j <= 3} a_ij x^i y^j; a different p per head, none symmetric in x and y, so a
    // transposed or head-swapped result fails.
    const auto poly = [](int head, double x, double y) {
        const double a = 0.3 + head, b = -0.7 * (head + 1);
        return a + 0.5 * x - 1.25 * y + b * x * x * y + 0.02 * x * x * x - 0.015 * y * y * y + 0.004 * a * x * x * x * y * y +
               0.001 * x * x * y * y * y - 0.0005 * x * x * x * y * y * y;
    };
    for (const auto& [w1, w2, H] : {std::tuple{6, 7, 3}, std::tuple{12, 14, 2}, std::tuple{7, 6, 2}, std::tuple{3, 4, 2}}) {
        const int src = 2 * w1 - 1, dst = 2 * w2 - 1;
        const auto x = swin_geometric_coordinates(src, dst);
        std::vector<double> table(std::size_t(src) * src * H);
        for (int r = 0; r < src; ++r)
            for (int c = 0; c < src; ++c)
                for (int h = 0; h < H; ++h) table[(std::size_t(r) * src + c) * H + h] = poly(h, x[c], x[r]);  // row = y
        const auto out = resample_relative_position_table(table, w1, w2, H);
        REQUIRE(out.size() == std::size_t(dst) * dst * H);
        // Targets beyond the outermost coordinate are clamped to it (FITPACK's evaluator does so): for
        // 12 -> 14 the last coordinate is 12.99994 < 13 (q is only bisected to ~1e-6); for 3 -> 4 it is 2.5 < 3.
        const auto at = [&](int i) { return std::clamp(double(i - dst / 2), x.front(), x.back()); };
        double err = 0.0;
        for (int r = 0; r < dst; ++r)
            for (int c = 0; c < dst; ++c)
                for (int h = 0; h < H; ++h)
                    err = std::max(err, std::abs(out[(std::size_t(r) * dst + c) * H + h] - poly(h, at(c), at(r))));
        INFO("window " << w1 << " -> " << w2 << ": max error " << err);
        CHECK(err <= 1e-9);
    }
    // 1-D: a cubic is reproduced at arbitrary targets, a quartic is not (the spline is cubic), and the
    // weights interpolate the nodes.
    const std::vector<double> nodes = {-3.5, -2.0, -0.5, 0.0, 1.0, 2.5, 4.0};
    const std::vector<double> targets = {-3.5, -3.1, -1.0, 0.0, 0.3, 1.7, 2.5, 3.99, 4.0};
    const auto W = not_a_knot_cubic_weights(nodes, targets);
    const auto apply = [&](auto f, std::size_t t) {
        double s = 0.0;
        for (std::size_t j = 0; j < nodes.size(); ++j) s += W[t * nodes.size() + j] * f(nodes[j]);
        return s;
    };
    const auto cubic = [](double v) { return 2.0 - v + 0.3 * v * v - 0.07 * v * v * v; };
    const auto quartic = [](double v) { return v * v * v * v; };
    double quartic_err = 0.0;
    for (std::size_t t = 0; t < targets.size(); ++t) {
        CHECK(std::abs(apply(cubic, t) - cubic(targets[t])) <= 1e-12);
        quartic_err = std::max(quartic_err, std::abs(apply(quartic, t) - quartic(targets[t])));
    }
    CHECK(quartic_err > 1e-3);
    const auto at_nodes = not_a_knot_cubic_weights(nodes, nodes);
    for (std::size_t t = 0; t < nodes.size(); ++t)
        for (std::size_t j = 0; j < nodes.size(); ++j) CHECK(std::abs(at_nodes[t * nodes.size() + j] - (t == j)) <= 1e-13);
    // targets beyond the nodes take the boundary value (FITPACK clamps)
    const std::vector<double> outside = {-10.0, 10.0};
    const auto Wo = not_a_knot_cubic_weights(nodes, outside);
    CHECK(Wo[0] == Approx(1.0).margin(1e-13));
    CHECK(Wo[2 * nodes.size() - 1] == Approx(1.0).margin(1e-13));
}

TEST_CASE("swin resample: bad sizes throw std::invalid_argument", "[swin_resample]") {
    const std::vector<double> table(121 * 4, 0.0);
    CHECK_THROWS_AS(resample_relative_position_table(table, 6, 7, 3), std::invalid_argument);  // 121 x 3 != 484
    CHECK_THROWS_AS(resample_relative_position_table(table, 5, 7, 4), std::invalid_argument);  // window 5 is 81 rows
    CHECK_THROWS_AS(resample_relative_position_table(table, 6, 6, 3), std::invalid_argument);  // checked even if equal
    CHECK_THROWS_AS(resample_relative_position_table(table, 6, 0, 4), std::invalid_argument);
    CHECK_THROWS_AS(resample_relative_position_table(table, 6, 7, 0), std::invalid_argument);
    CHECK_THROWS_AS(resample_relative_position_table(table, 6, 7, -4), std::invalid_argument);
    CHECK_THROWS_AS(resample_relative_position_table(table, 0, 7, 4), std::invalid_argument);
    CHECK_THROWS_AS(resample_relative_position_table(table, 6, swin_resample_max_window + 1, 4), std::invalid_argument);
    const std::vector<double> w2(9 * 2, 0.0);  // window 2: 3 coordinates per axis, too few for a cubic
    CHECK_THROWS_AS(resample_relative_position_table(w2, 2, 3, 2), std::invalid_argument);
    CHECK_NOTHROW(resample_relative_position_table(w2, 2, 2, 2));
    CHECK_THROWS_AS(swin_geometric_ratio(1, 13), std::invalid_argument);
    CHECK_THROWS_AS(swin_geometric_ratio(12, 13), std::invalid_argument);  // sides are odd (2w - 1)
    CHECK_THROWS_AS(swin_geometric_ratio(11, 0), std::invalid_argument);
    CHECK_THROWS_AS(swin_geometric_ratio(11, -13), std::invalid_argument);
    const std::vector<double> three = {0.0, 1.0, 2.0}, unsorted = {0.0, 2.0, 1.0, 3.0}, t = {0.5};
    CHECK_THROWS_AS(not_a_knot_cubic_weights(three, t), std::invalid_argument);
    CHECK_THROWS_AS(not_a_knot_cubic_weights(unsorted, t), std::invalid_argument);
    try {
        resample_relative_position_table(table, 6, 7, 3);
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()).find("needs a table of") != std::string::npos);
    }
}
