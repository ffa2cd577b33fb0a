// tests/test_attention_fused.cpp: fused (online-softmax) attention against the naive reference,
// a long-double scalar oracle for lse, and central finite differences for the backward pass.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/ops/attention.hpp"
#include "simmim/ops/attention_fused.hpp"

namespace {

struct AttnShape {
    int B, H, N, Dh;
    std::size_t qkv() const { return static_cast<std::size_t>(B) * N * 3 * H * Dh; }
    std::size_t out() const { return static_cast<std::size_t>(B) * N * H * Dh; }
    std::size_t rows() const { return static_cast<std::size_t>(B) * H * N; }
};

std::string describe(const AttnShape& s) {
    return "B=" + std::to_string(s.B) + " H=" + std::to_string(s.H) + " N=" + std::to_string(s.N) +
           " Dh=" + std::to_string(s.Dh);
}

template <class T>
std::vector<T> normal_vector(std::size_t n, std::uint64_t seed, double stddev) {
    simmim::Rng rng(seed);
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(stddev * rng.normal());
    return v;
}

/// ||a - b|| / ||b||, accumulated in long double.
template <class T>
double relative_l2(const std::vector<T>& a, const std::vector<T>& b) {
    long double num = 0, den = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const long double d = static_cast<long double>(a[i]) - b[i];
        num += d * d;
        den += static_cast<long double>(b[i]) * b[i];
    }
    return static_cast<double>(std::sqrt(num / den));
}

/// Scalar oracle: lse[b, h, i] = log sum_j exp(q_i . k_j / sqrt(Dh)), in long double.
template <class T>
std::vector<long double> lse_oracle(const std::vector<T>& qkv, const AttnShape& s) {
    const std::size_t D = static_cast<std::size_t>(s.H) * s.Dh;
    const long double scale = 1.0L / std::sqrt(static_cast<long double>(s.Dh));
    std::vector<long double> lse(s.rows());
    std::vector<long double> scores(s.N);
    for (int b = 0; b < s.B; ++b)
        for (int h = 0; h < s.H; ++h)
            for (int i = 0; i < s.N; ++i) {
                const T* q = &qkv[(static_cast<std::size_t>(b) * s.N + i) * 3 * D + h * s.Dh];
                long double m = -INFINITY;
                for (int j = 0; j < s.N; ++j) {
                    const T* k = &qkv[(static_cast<std::size_t>(b) * s.N + j) * 3 * D + D + h * s.Dh];
                    long double dot = 0;
                    for (int d = 0; d < s.Dh; ++d) dot += static_cast<long double>(q[d]) * k[d];
                    scores[j] = dot * scale;
                    m = std::max(m, scores[j]);
                }
                long double sum = 0;
                for (int j = 0; j < s.N; ++j) sum += std::exp(scores[j] - m);
                lse[(static_cast<std::size_t>(b) * s.H + h) * s.N + i] = m + std::log(sum);
            }
    return lse;
}

template <class T>
void check_against_naive(const AttnShape& s, double tol) {
    INFO(describe(s));
    // Standard deviation 1.5 gives scores of spread ~2, so softmax rows are far from uniform.
    const auto qkv = normal_vector<T>(s.qkv(), 11 + s.N, 1.5);
    const auto dout = normal_vector<T>(s.out(), 12 + s.N, 1.0);

    std::vector<T> out_naive(s.out()), probs(static_cast<std::size_t>(s.B) * s.H * s.N * s.N);
    simmim::ops::attention_forward(out_naive.data(), probs.data(), qkv.data(), s.B, s.N, s.H, s.Dh);
    std::vector<T> out(s.out()), lse(s.rows());
    simmim::ops::attention_forward_fused(out.data(), lse.data(), qkv.data(), s.B, s.N, s.H, s.Dh);

    CHECK(relative_l2(out, out_naive) <= tol);
    const auto lse_ref = lse_oracle(qkv, s);
    double lse_err = 0;
    for (std::size_t i = 0; i < lse.size(); ++i)
        lse_err = std::max(lse_err, static_cast<double>(std::fabs(lse[i] - lse_ref[i]) /
                                                         std::max(1.0L, std::fabs(lse_ref[i]))));
    CHECK(lse_err <= tol);

    std::vector<T> dqkv_naive(s.qkv(), T(0)), dqkv(s.qkv(), T(0));
    simmim::ops::attention_backward(dqkv_naive.data(), dout.data(), qkv.data(), probs.data(), s.B, s.N, s.H, s.Dh);
    simmim::ops::attention_backward_fused(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.N, s.H, s.Dh);
    CHECK(relative_l2(dqkv, dqkv_naive) <= tol);

    // Accumulation: starting from a non-zero dqkv, the result must be that plus the gradient.
    const auto start = normal_vector<T>(s.qkv(), 13 + s.N, 1.0);
    std::vector<T> accumulated = start, expected(s.qkv());
    simmim::ops::attention_backward_fused(accumulated.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.N, s.H,
                                          s.Dh);
    for (std::size_t i = 0; i < expected.size(); ++i) expected[i] = start[i] + dqkv_naive[i];
    CHECK(relative_l2(accumulated, expected) <= tol);
}

const AttnShape kShapes[] = {{2, 3, 17, 32}, {1, 2, 65, 64}, {2, 2, 1, 16}, {1, 1, 130, 8}, {3, 2, 33, 64}};

}  // namespace

TEST_CASE("fused attention matches the naive reference in float", "[attention][fused]") {
    for (const auto& s : kShapes) check_against_naive<float>(s, 1e-5);
}

TEST_CASE("fused attention matches the naive reference in double", "[attention][fused]") {
    for (const auto& s : kShapes) check_against_naive<double>(s, 1e-12);
}

TEST_CASE("fused attention covers tile tails and odd head widths", "[attention][fused]") {
    // N around the query tile (72 rows) and key tile (192 keys), several key tiles (N = 400: the
    // online-softmax rescaling), head widths off the SIMD width.
    const AttnShape shapes[] = {{1, 1, 63, 5},   {1, 2, 72, 64},  {1, 1, 73, 32},  {2, 1, 7, 24},
                                {1, 2, 193, 32}, {1, 1, 200, 72}, {1, 1, 400, 16}, {1, 1, 385, 64}};
    for (const auto& s : shapes) {
        check_against_naive<float>(s, 1e-5);
        check_against_naive<double>(s, 1e-12);
    }
}

TEST_CASE("fused attention: single-tile and key-tiled paths around their boundary", "[attention][fused]") {
    // N <= kMaxKeyTile (256) takes the single-tile path (query strips of 6, P and dS of the whole
    // head), longer sequences the key-tiled one (balanced tiles: 257 -> 2 x 144 keys, 600 -> 3 x
    // 208). B = 1 and B = 3 run head by head on two threads, B = 2 and B = 8 sample by sample.
    static_assert(simmim::ops::fused_attention_detail::kMaxKeyTile == 256);
    const AttnShape shapes[] = {{8, 4, 36, 32}, {3, 3, 65, 64}, {1, 1, 6, 64},   {2, 2, 255, 32},
                                {1, 1, 256, 64}, {1, 2, 257, 32}, {1, 1, 600, 24}, {2, 1, 12, 40}};
    for (const auto& s : shapes) {
        check_against_naive<float>(s, 1e-5);
        check_against_naive<double>(s, 1e-12);
    }
}

TEST_CASE("fused attention masks padded keys when every score is very negative", "[attention][fused]") {
    // k = -q + noise for every token, so all scores are about -|q|^2 / sqrt(Dh) (-60 .. -200 here).
    // A padded key that leaked into the softmax (score 0 instead of -inf) would dominate every row.
    for (const AttnShape s : {AttnShape{2, 2, 36, 32}, AttnShape{1, 2, 7, 5}, AttnShape{1, 1, 65, 64},
                              AttnShape{1, 1, 300, 16}}) {
        INFO(describe(s));
        const std::size_t D = static_cast<std::size_t>(s.H) * s.Dh;
        auto qkv = normal_vector<double>(s.qkv(), 31 + s.N, 0.3);
        const auto base = normal_vector<double>(static_cast<std::size_t>(s.B) * D, 32, 1.0);
        const double magnitude = 4.0 * std::pow(static_cast<double>(s.Dh), 0.25);
        for (int b = 0; b < s.B; ++b)
            for (int n = 0; n < s.N; ++n)
                for (std::size_t c = 0; c < D; ++c) {
                    double* row = &qkv[(static_cast<std::size_t>(b) * s.N + n) * 3 * D];
                    row[c] += magnitude * base[b * D + c];      // q
                    row[D + c] -= magnitude * base[b * D + c];  // k
                }
        std::vector<double> out_naive(s.out()), probs(static_cast<std::size_t>(s.B) * s.H * s.N * s.N);
        simmim::ops::attention_forward(out_naive.data(), probs.data(), qkv.data(), s.B, s.N, s.H, s.Dh);
        std::vector<double> out(s.out()), lse(s.rows());
        simmim::ops::attention_forward_fused(out.data(), lse.data(), qkv.data(), s.B, s.N, s.H, s.Dh);
        CHECK(relative_l2(out, out_naive) <= 1e-12);
        const auto lse_ref = lse_oracle(qkv, s);
        double lse_max = -INFINITY, lse_err = 0;
        for (std::size_t i = 0; i < lse.size(); ++i) {
            lse_max = std::max(lse_max, static_cast<double>(lse_ref[i]));
            lse_err = std::max(lse_err, static_cast<double>(std::fabs(lse[i] - lse_ref[i]) / std::fabs(lse_ref[i])));
        }
        CHECK(lse_max < -40.0);  // the construction works: every row's log-sum-exp is far below 0
        CHECK(lse_err <= 1e-12);
        const auto dout = normal_vector<double>(s.out(), 33, 1.0);
        std::vector<double> dqkv_naive(s.qkv(), 0.0), dqkv(s.qkv(), 0.0);
        simmim::ops::attention_backward(dqkv_naive.data(), dout.data(), qkv.data(), probs.data(), s.B, s.N, s.H, s.Dh);
        simmim::ops::attention_backward_fused(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.N, s.H,
                                              s.Dh);
        CHECK(relative_l2(dqkv, dqkv_naive) <= 1e-10);
    }
}

TEST_CASE("fused attention results do not depend on earlier calls (reused scratch)", "[attention][fused]") {
    // The per-thread scratch is kept between calls and never cleared: a call after a larger one with
    // other data must give bit-identical results to the same call made before it.
    const AttnShape small{2, 3, 40, 32}, large{1, 2, 300, 64};
    const auto run = [](const AttnShape& s, std::uint64_t seed) {
        const auto qkv = normal_vector<float>(s.qkv(), seed, 1.5);
        const auto dout = normal_vector<float>(s.out(), seed + 1, 1.0);
        std::vector<float> out(s.out()), lse(s.rows()), dqkv(s.qkv(), 0.0f);
        simmim::ops::attention_forward_fused(out.data(), lse.data(), qkv.data(), s.B, s.N, s.H, s.Dh);
        simmim::ops::attention_backward_fused(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), s.B, s.N, s.H,
                                              s.Dh);
        out.insert(out.end(), lse.begin(), lse.end());
        out.insert(out.end(), dqkv.begin(), dqkv.end());
        return out;
    };
    const auto first = run(small, 41);
    run(large, 42);
    const auto second = run(small, 41);
    CHECK(first == second);
}

TEST_CASE("fused attention packs K^T panels like the scalar packer", "[attention][fused]") {
    // pack_panels uses 16 x 16 AVX-512 register transposes for float when available; it must write
    // exactly what pack_panels_scalar writes, zero padding included, for any rows and widths.
    namespace fa = simmim::ops::fused_attention_detail;
    const auto check = [](auto zero) {
        using T = decltype(zero);
        constexpr int W = fa::Simd<T>::width;
        for (const int dh : {1, 5, 16, 24, 32, 64, 72})
            for (const int rows : {1, 15, 16, 17, 36, 65}) {
                INFO("dh=" << dh << " rows=" << rows);
                const int dhp = fa::Tiling<T>::padded_dh(dh), padded = fa::round_up(rows, W);
                const std::ptrdiff_t lds = 3 * dh + 7;
                const auto src = normal_vector<T>(static_cast<std::size_t>(rows) * lds, 51 + dh + rows, 1.0);
                std::vector<T> fast(static_cast<std::size_t>(dhp) * padded, T(-1)), slow(fast.size(), T(-2));
                fa::pack_panels<T, 0>(fast.data(), dhp, src.data(), lds, rows, padded, dh);
                fa::pack_panels_scalar<T>(slow.data(), dhp, src.data(), lds, rows, padded, dh);
                CHECK(fast == slow);
            }
    };
    check(0.0f);
    check(0.0);
}

TEST_CASE("fused attention backward matches central finite differences", "[attention][fused][gradcheck]") {
    const AttnShape s{2, 2, 5, 3};
    const auto qkv0 = normal_vector<double>(s.qkv(), 21, 1.0);
    const auto g = normal_vector<double>(s.out(), 22, 1.0);  // L = sum(out * g), so dL/dout = g

    const auto loss = [&](const std::vector<double>& qkv) {
        std::vector<double> out(s.out()), lse(s.rows());
        simmim::ops::attention_forward_fused(out.data(), lse.data(), qkv.data(), s.B, s.N, s.H, s.Dh);
        long double l = 0;
        for (std::size_t i = 0; i < out.size(); ++i) l += static_cast<long double>(out[i]) * g[i];
        return static_cast<double>(l);
    };

    std::vector<double> out(s.out()), lse(s.rows()), dqkv(s.qkv(), 0.0);
    simmim::ops::attention_forward_fused(out.data(), lse.data(), qkv0.data(), s.B, s.N, s.H, s.Dh);
    simmim::ops::attention_backward_fused(dqkv.data(), g.data(), qkv0.data(), out.data(), lse.data(), s.B, s.N, s.H, s.Dh);

    const double eps = 1e-5;
    std::vector<double> numeric(s.qkv());
    for (std::size_t i = 0; i < qkv0.size(); ++i) {
        auto plus = qkv0, minus = qkv0;
        plus[i] += eps;
        minus[i] -= eps;
        numeric[i] = (loss(plus) - loss(minus)) / (2 * eps);
    }
    // Central differences: truncation O(eps^2) ~ 1e-10, rounding ~ 1e-16 / eps ~ 1e-11.
    CHECK(relative_l2(dqkv, numeric) <= 1e-8);
}

TEST_CASE("vector exp used by the fused kernels is accurate", "[attention][fused][exp]") {
    using simmim::ops::fused_attention_detail::Simd;
    // Softmax only ever evaluates exp at x <= 0: cover [-104, 0] densely, plus -inf. Results in the
    // normal range need a small relative error; subnormal results may be flushed to zero, which
    // cannot move a softmax sum that already holds exp(0) = 1.
    const auto check_exp = [](auto zero, double max_relative_error) {
        using T = decltype(zero);
        using S = Simd<T>;
        constexpr int W = S::width;
        const long double smallest_normal = std::numeric_limits<T>::min();
        double worst_relative = 0, worst_subnormal = 0;
        T xs[W], ys[W];
        for (int i = 0; i <= 1'040'000; i += W) {
            for (int l = 0; l < W; ++l) xs[l] = static_cast<T>(-(i + l) * 1e-4);
            S::store(ys, S::exp(S::load(xs)));
            for (int l = 0; l < W; ++l) {
                const long double ref = std::exp(static_cast<long double>(xs[l]));
                const double err = static_cast<double>(std::fabs(ys[l] - ref));
                if (ref >= smallest_normal)
                    worst_relative = std::max(worst_relative, err / static_cast<double>(ref));
                else
                    worst_subnormal = std::max(worst_subnormal, err / static_cast<double>(smallest_normal));
            }
        }
        CHECK(worst_relative < max_relative_error);
        CHECK(worst_subnormal <= 1.0);
        for (int l = 0; l < W; ++l) xs[l] = -std::numeric_limits<T>::infinity();
        S::store(ys, S::exp(S::load(xs)));
        for (int l = 0; l < W; ++l) CHECK(ys[l] == T(0));
        // NaN scores (NaN inputs) must stay visible, not turn into a probability.
        for (int l = 0; l < W; ++l) xs[l] = l % 2 ? std::numeric_limits<T>::quiet_NaN() : T(-1);
        S::store(ys, S::exp(S::load(xs)));
        for (int l = 0; l < W; ++l) CHECK(std::isnan(ys[l]) == (l % 2 == 1));
    };
    check_exp(0.0f, 2e-7);
    check_exp(0.0, 4.5e-16);  // ~2 ulp
}

TEST_CASE("fused attention rejects bad arguments", "[attention][fused][errors]") {
    std::vector<float> qkv(3 * 4 * 8, 1.0f), out(4 * 8), lse(4), dqkv(qkv.size());
    using simmim::ops::attention_backward_fused;
    using simmim::ops::attention_forward_fused;
    CHECK_THROWS_AS(attention_forward_fused(out.data(), lse.data(), qkv.data(), 1, 0, 1, 8), std::runtime_error);
    CHECK_THROWS_AS(attention_forward_fused(out.data(), lse.data(), qkv.data(), 1, 4, -1, 8), std::runtime_error);
    CHECK_THROWS_WITH(attention_forward_fused<float>(out.data(), nullptr, qkv.data(), 1, 4, 1, 8), Catch::Contains("lse"));
    CHECK_THROWS_WITH(attention_backward_fused<float>(dqkv.data(), out.data(), qkv.data(), nullptr, lse.data(), 1, 4, 1, 8),
                      Catch::Contains("'out'"));
    CHECK_THROWS_WITH(attention_backward_fused(dqkv.data(), out.data(), qkv.data(), out.data(), lse.data(), 1, 4, 1, 0),
                      Catch::Contains("Dh=0"));
    CHECK_NOTHROW(attention_forward_fused(out.data(), lse.data(), qkv.data(), 1, 4, 1, 8));
}
