// Finite-difference checks (double) of every op's hand-written backward, and closed-form checks of
// the forwards. Each check projects the output on a random tensor R: f(x) = <op(x), R>.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

#include "gradcheck.hpp"
#include "simmim/ops/attention.hpp"
#include "simmim/ops/gelu.hpp"
#include "simmim/ops/layernorm.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/masked_l1.hpp"
#include "simmim/ops/patch.hpp"

using namespace simmim;
using test::dot;
using test::numeric_gradient;
using test::random_vector;
using test::relative_error;

namespace {
constexpr double kTol = 1e-7;
}

TEST_CASE("linear forward matches the definition and backward matches finite differences", "[ops][linear]") {
    const int M = 5, K = 4, N = 3;
    auto x = random_vector(M * K, 1), w = random_vector(N * K, 2), b = random_vector(N, 3), r = random_vector(M * N, 4);
    std::vector<double> y(M * N);
    ops::linear_forward(y.data(), x.data(), w.data(), b.data(), M, K, N);
    for (int i = 0; i < M; ++i)
        for (int o = 0; o < N; ++o) {
            double s = b[o];
            for (int k = 0; k < K; ++k) s += x[i * K + k] * w[o * K + k];
            CHECK(y[i * N + o] == Approx(s).epsilon(1e-14));
        }
    auto f = [&] {
        ops::linear_forward(y.data(), x.data(), w.data(), b.data(), M, K, N);
        return dot(y, r);
    };
    std::vector<double> dx(M * K, 0.5), dw(N * K, 0.25), db(N, -1.0);  // nonzero: backward must accumulate
    ops::linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), M, K, N);
    auto nx = numeric_gradient(x.data(), x.size(), f), nw = numeric_gradient(w.data(), w.size(), f),
         nb = numeric_gradient(b.data(), b.size(), f);
    for (auto& v : dx) v -= 0.5;
    for (auto& v : dw) v -= 0.25;
    for (auto& v : db) v += 1.0;
    CHECK(relative_error(dx, nx, dx.size()) < kTol);
    CHECK(relative_error(dw, nw, dw.size()) < kTol);
    CHECK(relative_error(db, nb, db.size()) < kTol);
}

TEST_CASE("linear at parallel sizes: bias add, blocked bias gradient and din_beta 0 against a long-double loop", "[ops][linear]") {
    // M * N above kernels::kParallelMinWork, and M not a multiple of the 256-row blocks of the bias gradient
    const int M = 777, K = 9, N = 70;
    const auto x = random_vector(M * K, 21), w = random_vector(N * K, 22), b = random_vector(N, 23), r = random_vector(M * N, 24);
    std::vector<double> y(M * N);
    ops::linear_forward(y.data(), x.data(), w.data(), b.data(), M, K, N);
    std::vector<double> dx(M * K, std::numeric_limits<double>::quiet_NaN()), dw(N * K, 0.25), db(N, -1.0);
    ops::linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), M, K, N, 0.0);  // dx overwritten, never read
    double ey = 0, ex = 0, ew = 0, eb = 0;
    for (int i = 0; i < M; ++i)
        for (int o = 0; o < N; ++o) {
            long double s = b[o];
            for (int k = 0; k < K; ++k) s += static_cast<long double>(x[i * K + k]) * w[o * K + k];
            ey = std::max(ey, std::abs(static_cast<double>(s) - y[i * N + o]));
        }
    for (int i = 0; i < M; ++i)
        for (int k = 0; k < K; ++k) {
            long double s = 0;
            for (int o = 0; o < N; ++o) s += static_cast<long double>(r[i * N + o]) * w[o * K + k];
            ex = std::max(ex, std::abs(static_cast<double>(s) - dx[i * K + k]));
        }
    for (int o = 0; o < N; ++o) {
        long double sb = -1.0;
        for (int i = 0; i < M; ++i) sb += r[i * N + o];
        eb = std::max(eb, std::abs(static_cast<double>(sb) - db[o]));
        for (int k = 0; k < K; ++k) {
            long double s = 0.25;
            for (int i = 0; i < M; ++i) s += static_cast<long double>(r[i * N + o]) * x[i * K + k];
            ew = std::max(ew, std::abs(static_cast<double>(s) - dw[o * K + k]));
        }
    }
    CHECK(ey < 1e-12);
    CHECK(ex < 1e-12);
    CHECK(ew < 1e-11);
    CHECK(eb < 1e-11);
}

TEST_CASE("layernorm forward has zero mean, unit variance and backward matches finite differences", "[ops][layernorm]") {
    const int M = 4, D = 7;
    auto x = random_vector(M * D, 5, 3.0), w = random_vector(D, 6), b = random_vector(D, 7), r = random_vector(M * D, 8);
    std::vector<double> y(M * D), mean(M), rstd(M);
    std::vector<double> ones(D, 1.0), zeros(D, 0.0);
    ops::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), ones.data(), zeros.data(), M, D, 1e-6);
    for (int i = 0; i < M; ++i) {
        double s = 0, s2 = 0;
        for (int d = 0; d < D; ++d) s += y[i * D + d], s2 += y[i * D + d] * y[i * D + d];
        CHECK(s / D == Approx(0).margin(1e-12));
        CHECK(s2 / D == Approx(1).epsilon(1e-5));  // eps 1e-6 inside the sqrt
    }
    auto f = [&] {
        ops::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), M, D, 1e-6);
        return dot(y, r);
    };
    f();
    std::vector<double> dx(M * D, 0), dw(D, 0), db(D, 0);
    ops::layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), mean.data(), rstd.data(), w.data(), M, D);
    CHECK(relative_error(dx, numeric_gradient(x.data(), x.size(), f), dx.size()) < kTol);
    CHECK(relative_error(dw, numeric_gradient(w.data(), w.size(), f), dw.size()) < kTol);
    CHECK(relative_error(db, numeric_gradient(b.data(), b.size(), f), db.size()) < kTol);
}

TEST_CASE("gelu is the exact erf form and its backward matches finite differences", "[ops][gelu]") {
    std::vector<double> x = {-4.0, -1.5, -0.3, 0.0, 1e-3, 0.7, 2.2, 5.0};
    std::vector<double> y(x.size());
    ops::gelu_forward(y.data(), x.data(), static_cast<std::ptrdiff_t>(x.size()));
    // closed form values: x * Phi(x)
    CHECK(y[3] == 0.0);
    CHECK(y[5] == Approx(0.7 * 0.5 * (1 + std::erf(0.7 / std::sqrt(2.0)))).epsilon(1e-15));
    CHECK(y[1] == Approx(-1.5 * 0.066807201268858057).epsilon(1e-12));  // Phi(-1.5)
    auto r = random_vector(x.size(), 9);
    auto f = [&] {
        ops::gelu_forward(y.data(), x.data(), static_cast<std::ptrdiff_t>(x.size()));
        return dot(y, r);
    };
    std::vector<double> dx(x.size(), 0);
    ops::gelu_backward(dx.data(), r.data(), x.data(), static_cast<std::ptrdiff_t>(x.size()));
    CHECK(relative_error(dx, numeric_gradient(x.data(), x.size(), f), dx.size()) < kTol);
}

TEST_CASE("naive attention: rows of P sum to one and backward matches finite differences", "[ops][attention]") {
    const int B = 2, N = 5, H = 2, Dh = 3, D = H * Dh;
    auto qkv = random_vector(B * N * 3 * D, 10), r = random_vector(B * N * D, 11);
    std::vector<double> out(B * N * D), probs(B * H * N * N);
    auto f = [&] {
        ops::attention_forward(out.data(), probs.data(), qkv.data(), B, N, H, Dh);
        return dot(out, r);
    };
    f();
    for (int row = 0; row < B * H * N; ++row) {
        double s = 0;
        for (int j = 0; j < N; ++j) s += probs[row * N + j];
        CHECK(s == Approx(1).epsilon(1e-14));
    }
    // scalar oracle of one output element: b=1, n=2, h=1, d=0
    {
        const int b = 1, n = 2, h = 1;
        auto at = [&](int which, int tok, int d) { return qkv[((b * N + tok) * 3 + which) * D + h * Dh + d]; };
        std::vector<double> s(N);
        double mx = -1e300, z = 0;
        for (int j = 0; j < N; ++j) {
            s[j] = 0;
            for (int d = 0; d < Dh; ++d) s[j] += at(0, n, d) * at(1, j, d) / std::sqrt(double(Dh));
            mx = std::max(mx, s[j]);
        }
        for (auto& v : s) z += std::exp(v - mx);
        double o = 0;
        for (int j = 0; j < N; ++j) o += std::exp(s[j] - mx) / z * at(2, j, 0);
        CHECK(out[(b * N + n) * D + h * Dh + 0] == Approx(o).epsilon(1e-13));
    }
    std::vector<double> dqkv(qkv.size(), 0);
    ops::attention_backward(dqkv.data(), r.data(), qkv.data(), probs.data(), B, N, H, Dh);
    CHECK(relative_error(dqkv, numeric_gradient(qkv.data(), qkv.size(), f), dqkv.size()) < kTol);
}

TEST_CASE("patchify orders rows as a stride-p conv and unpatchify is the official PixelShuffle", "[ops][patch]") {
    const int B = 2, C = 3, S = 6, p = 3, g = S / p;
    std::vector<double> img(B * C * S * S);
    for (std::size_t i = 0; i < img.size(); ++i) img[i] = double(i);
    std::vector<double> rows(img.size()), back(img.size());
    ops::patchify(rows.data(), img.data(), B, C, S, p);
    for (int b = 0; b < B; ++b)
        for (int c = 0; c < C; ++c)
            for (int y = 0; y < S; ++y)
                for (int x = 0; x < S; ++x) {
                    // PixelShuffle: out[c, h*r+i, w*r+j] = in[c*r*r + i*r + j, h, w]
                    const int l = (y / p) * g + x / p, k = c * p * p + (y % p) * p + x % p;
                    REQUIRE(rows[(b * g * g + l) * C * p * p + k] == img[((b * C + c) * S + y) * S + x]);
                }
    ops::unpatchify(back.data(), rows.data(), B, C, S, p);
    CHECK(back == img);
}

TEST_CASE("masked L1 equals the official formula and its backward matches finite differences", "[ops][loss]") {
    const int B = 2, C = 2, S = 4, p = 2, g = 2;
    auto pred = random_vector(B * C * S * S, 12), target = random_vector(B * C * S * S, 13);
    std::vector<double> mask = {1, 0, 0, 1, 0, 0, 1, 1};  // (B, g, g)
    // oracle: the formula written out with the mask upsampled to pixels
    double num = 0, msum = 0;
    for (int b = 0; b < B; ++b)
        for (int y = 0; y < S; ++y)
            for (int x = 0; x < S; ++x) {
                const double m = mask[(b * g + y / p) * g + x / p];
                msum += m;
                for (int c = 0; c < C; ++c) num += std::abs(target[((b * C + c) * S + y) * S + x] - pred[((b * C + c) * S + y) * S + x]) * m;
            }
    const double expected = num / (msum + 1e-5) / C;
    CHECK(ops::masked_l1_forward(pred.data(), target.data(), mask.data(), B, C, S, p) == Approx(expected).epsilon(1e-14));
    auto f = [&] { return ops::masked_l1_forward(pred.data(), target.data(), mask.data(), B, C, S, p); };
    std::vector<double> dpred(pred.size(), 0), dtarget(pred.size(), 0);
    ops::masked_l1_backward(dpred.data(), dtarget.data(), 1.0, pred.data(), target.data(), mask.data(), B, C, S, p);
    CHECK(relative_error(dpred, numeric_gradient(pred.data(), pred.size(), f), dpred.size()) < kTol);
    CHECK(relative_error(dtarget, numeric_gradient(target.data(), target.size(), f), dtarget.size()) < kTol);
}
