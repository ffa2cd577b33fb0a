// SIMD element-wise kernels (kernels/simd.hpp, ops/gelu.hpp, ops/layernorm.hpp, ops/masked_l1.hpp) and
// the fusions of ops/fused.hpp.
//
// Oracles: std::erf / std::exp for the vector special functions; for every kernel, its scalar
// `<name>_reference` evaluated one precision wider (float kernels against the double reference,
// double kernels against the long double reference), so the oracle's own rounding does not enter
// the tolerance; closed-form gradients for the accumulation semantics; the unfused composition for
// each fusion. Sizes are odd on purpose (D = 1, 7, 33, 192, 385 and random n in 1..1000) so that
// every kernel runs its vector body, its scalar or padded tail, and both together.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "simmim/core/random.hpp"
#include "simmim/kernels/gemm.hpp"
#include "simmim/kernels/simd.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/gelu.hpp"
#include "simmim/ops/layernorm.hpp"
#include "simmim/ops/masked_l1.hpp"

using namespace simmim;

namespace {

/// The oracle's scalar type: one precision wider than T.
template <class T>
using Wider = std::conditional_t<std::is_same_v<T, float>, double, long double>;

/// Tolerance of the kernels of T against the wider reference (the brief's 1e-6 float, 1e-14 double).
template <class T>
constexpr double kTol = std::is_same_v<T, float> ? 1e-6 : 1e-14;

const std::ptrdiff_t kWidths[] = {1, 7, 33, 192, 385};

template <class T>
std::vector<T> normal_vector(std::size_t n, std::uint64_t seed, double mean = 0.0, double stddev = 1.0) {
    Rng rng(seed);
    std::vector<T> v(n);
    for (auto& x : v) x = static_cast<T>(mean + stddev * rng.normal());
    return v;
}

template <class W, class T>
std::vector<W> widen(const std::vector<T>& v) {
    return std::vector<W>(v.begin(), v.end());
}

/// Sizes 1..1000: the fixed odd widths, then `count` random ones.
std::vector<std::ptrdiff_t> test_sizes(std::uint64_t seed, int count) {
    std::vector<std::ptrdiff_t> sizes(std::begin(kWidths), std::end(kWidths));
    Rng rng(seed);
    for (int i = 0; i < count; ++i) sizes.push_back(static_cast<std::ptrdiff_t>(rng.below(1000)) + 1);
    return sizes;
}

/// Largest |got - ref| / bound over the elements (NaN where exactly one of them is NaN counts as
/// infinitely wrong), with the index it occurs at; bound(i) must be positive or zero.
template <class G, class R, class Bound>
std::pair<double, std::size_t> worst_ratio(const std::vector<G>& got, const std::vector<R>& ref, Bound bound) {
    double worst = 0;
    std::size_t at = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) {
        const long double g = got[i], r = ref[i];
        if (std::isnan(g) && std::isnan(r)) continue;
        const long double diff = std::fabs(g - r);
        double ratio;
        if (std::isnan(diff))
            ratio = std::isinf(g) && g == r ? 0.0 : std::numeric_limits<double>::infinity();
        else
            ratio = diff == 0 ? 0.0 : static_cast<double>(diff / static_cast<long double>(bound(i)));
        if (!(ratio <= worst)) {
            worst = ratio;
            at = i;
        }
    }
    return {worst, at};
}

/// Element-wise |got - ref| <= tol * (|ref| + rms(ref) + term_scale): relative for large elements,
/// relative to the array's scale for elements that cancel to near zero. term_scale (optional, one per
/// element) is the magnitude of the terms an element is computed from, where they cancel.
template <class G, class R>
void check_close(const std::vector<G>& got, const std::vector<R>& ref, double tol, const std::string& what,
                 const std::vector<double>& term_scale = {}) {
    REQUIRE(got.size() == ref.size());
    long double sq = 0;
    for (const auto r : ref)
        if (std::isfinite(r)) sq += static_cast<long double>(r) * r;
    const double rms = ref.empty() ? 0.0 : static_cast<double>(std::sqrt(sq / ref.size()));
    const auto [worst, at] = worst_ratio(got, ref, [&](std::size_t i) {
        return tol * (std::fabs(double(ref[i])) + rms + (term_scale.empty() ? 0.0 : term_scale[i]));
    });
    INFO(what << ": worst element " << at << " of " << ref.size() << ", got " << double(got[at]) << ", expected "
              << double(ref[at]) << ", error / tolerance = " << worst);
    CHECK(worst <= 1.0);
}

template <class T>
bool bitwise_equal(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

/// True when the GEMM epilogues run the GELU of this translation unit's own ISA: always header-only; with
/// simmim::kernels, when the level chosen at run time (SIMMIM_ISA may cap it) is the one of the compile flags.
/// Otherwise a fused epilogue's GELU is another ISA's (e.g. without FMA) and equals the unfused op only to rounding.
bool epilogue_isa_is_ours() {
#if defined(SIMMIM_EXTERN_KERNELS)
    return std::string(kernels::dispatch::active().gemm_path) == kernels::gemm_float_path;
#else
    return true;
#endif
}

/// Bitwise equal when the epilogue runs this build's ISA (epilogue_isa_is_ours), else within what the two GELUs'
/// documented error allows: both erfs are within 5e-7 of the exact one (kernels/simd.hpp, with and without FMA), so
/// act and gelu' of |x| <= 4 differ by at most ~2e-6; 4e-6 relative to max(1, |value|) bounds that.
template <class T>
bool epilogue_equal(const std::vector<T>& a, const std::vector<T>& b) {
    if (std::is_same_v<T, double> || epilogue_isa_is_ours()) return bitwise_equal(a, b);
    for (std::size_t i = 0; i < a.size(); ++i)
        if (!(std::fabs(a[i] - b[i]) <= T(4e-6) * std::max(T(1), std::fabs(b[i])))) return false;
    return a.size() == b.size();
}

/// Runs f with `threads` OpenMP threads (when OpenMP is on), restoring the previous setting.
template <class F>
void with_threads(int threads, F&& f) {
#ifdef _OPENMP
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    f();
    omp_set_num_threads(saved);
#else
    (void)threads;
    f();
#endif
}

/// GELU inputs: N(0, 3) plus the values where erf saturates or is special.
template <class T>
std::vector<T> gelu_inputs(std::ptrdiff_t n, std::uint64_t seed) {
    auto x = normal_vector<T>(static_cast<std::size_t>(n), seed, 0.0, 3.0);
    const T special[] = {T(0), T(-0.0), T(1e-30), T(-5.6), T(5.6), T(-9.5), T(12), T(-40), T(1e30), T(-1e30)};
    for (std::size_t i = 0; i < std::size(special) && i < x.size(); ++i) x[(i * 7919) % x.size()] = special[i];
    return x;
}

}  // namespace

TEST_CASE("kernels: the SIMD path is the one the build selects", "[kernels]") {
    INFO("ISA: " << kernels::isa_name());
#if SIMMIM_SIMD
    CHECK(kernels::simd_enabled<float>);
    CHECK(kernels::lanes<float> >= 4);
    CHECK(std::string(kernels::isa_name()) != "scalar");
#else
    CHECK_FALSE(kernels::simd_enabled<float>);
    CHECK_FALSE(kernels::simd_enabled<double>);
    CHECK(std::string(kernels::isa_name()) == "scalar");
#endif
}

#if SIMMIM_SIMD
TEST_CASE("kernels: vector erf and exp match the C library", "[kernels][erf]") {
    SECTION("float erf: abs error < 1e-6 over [-10, 10]") {
        using B = kernels::Batch<float>;
        constexpr std::ptrdiff_t W = kernels::lanes<float>;
        const std::ptrdiff_t n = 400000 - 400000 % W;  // step 5e-5, every lane position used
        double worst = 0, worst_x = 0;
        std::vector<float> x(static_cast<std::size_t>(W)), y(static_cast<std::size_t>(W));
        for (std::ptrdiff_t i = 0; i < n; i += W) {
            for (std::ptrdiff_t k = 0; k < W; ++k) x[k] = -10.0f + 20.0f * static_cast<float>(i + k) / static_cast<float>(n);
            kernels::erf<float>(B::load_unaligned(x.data())).store_unaligned(y.data());
            for (std::ptrdiff_t k = 0; k < W; ++k) {
                const double err = std::fabs(double(y[k]) - std::erf(double(x[k])));
                if (err > worst) worst = err, worst_x = x[k];
            }
        }
        INFO("max abs error " << worst << " at x = " << worst_x);
        CHECK(worst < 1e-6);
        // special values: odd, saturated, NaN-propagating
        const float special[] = {0.0f, -0.0f, 4.0f, -4.0f, 1e30f, -1e30f, std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
        for (const float s : special) {
            float out[B::size];
            kernels::erf<float>(B(s)).store_unaligned(out);
            if (std::isnan(s))
                CHECK(std::isnan(out[0]));
            else
                CHECK(std::fabs(double(out[0]) - std::erf(double(s))) < 1e-6);
        }
    }
    SECTION("double erf: relative error <= 1e-15 over [-10, 10]") {
        using B = kernels::Batch<double>;
        constexpr std::ptrdiff_t W = kernels::lanes<double>;
        Rng rng(7);
        double worst = 0;
        std::vector<double> x(static_cast<std::size_t>(W)), y(static_cast<std::size_t>(W));
        for (int i = 0; i < 20000; ++i) {
            for (auto& v : x) v = rng.uniform(-10, 10);
            kernels::erf<double>(B::load_unaligned(x.data())).store_unaligned(y.data());
            for (std::ptrdiff_t k = 0; k < W; ++k) {
                const long double t = std::erf(static_cast<long double>(x[k]));
                worst = std::max(worst, static_cast<double>(std::fabs(y[k] - t) / std::fabs(t)));
            }
        }
        INFO("max relative error " << worst);
        CHECK(worst <= 1e-15);
    }
    SECTION("exp: relative error < 2 ulp over the range gelu_backward uses") {
        Rng rng(8);
        double worst_f = 0, worst_d = 0;
        for (int i = 0; i < 20000; ++i) {
            const double v = rng.uniform(-85, 0);
            float of[kernels::Batch<float>::size];
            double od[kernels::Batch<double>::size];
            kernels::exp<float>(kernels::Batch<float>(static_cast<float>(v))).store_unaligned(of);
            kernels::exp<double>(kernels::Batch<double>(v)).store_unaligned(od);
            const long double tf = std::exp(static_cast<long double>(static_cast<float>(v))), td = std::exp(static_cast<long double>(v));
            worst_f = std::max(worst_f, static_cast<double>(std::fabs(of[0] - tf) / tf));
            worst_d = std::max(worst_d, static_cast<double>(std::fabs(od[0] - td) / td));
        }
        INFO("float " << worst_f << ", double " << worst_d);
        CHECK(worst_f < 2 * std::numeric_limits<float>::epsilon());
        CHECK(worst_d < 2 * std::numeric_limits<double>::epsilon());
        float zero[kernels::Batch<float>::size];
        kernels::exp<float>(kernels::Batch<float>(-std::numeric_limits<float>::infinity())).store_unaligned(zero);
        CHECK(zero[0] == 0.0f);
    }
}
#endif

TEMPLATE_TEST_CASE("gelu forward and backward match the wider reference on odd sizes", "[kernels][gelu]", float, double) {
    using T = TestType;
    using W = Wider<T>;
    const double tol = kTol<T>;
    for (const std::ptrdiff_t n : test_sizes(11, 20)) {
        INFO("n = " << n);
        const auto x = gelu_inputs<T>(n, 100 + n);
        const auto dout = normal_vector<T>(x.size(), 200 + n);
        const auto din0 = normal_vector<T>(x.size(), 300 + n);
        std::vector<T> y(x.size());
        ops::gelu_forward(y.data(), x.data(), n);
        const auto xw = widen<W>(x);
        std::vector<W> yw(x.size());
        ops::gelu_forward_reference(yw.data(), xw.data(), n);
        // an erf error of e moves gelu by 0.5 |x| e: the bound is relative to |gelu| + |x|
        auto [worst_f, at_f] = worst_ratio(y, yw, [&](std::size_t i) { return tol * (std::fabs(double(yw[i])) + std::fabs(double(x[i]))); });
        INFO("forward: x = " << double(x[at_f]) << ", got " << double(y[at_f]) << ", expected " << double(yw[at_f]));
        CHECK(worst_f <= 1.0);

        auto din = din0;
        ops::gelu_backward(din.data(), dout.data(), x.data(), n);
        auto dinw = widen<W>(din0);
        const auto doutw = widen<W>(dout);
        ops::gelu_backward_reference(dinw.data(), doutw.data(), xw.data(), n);
        auto [worst_b, at_b] = worst_ratio(din, dinw, [&](std::size_t i) {
            return tol * (std::fabs(double(dinw[i])) + std::fabs(double(din0[i])) + std::fabs(double(dout[i])));
        });
        INFO("backward: x = " << double(x[at_b]) << ", got " << double(din[at_b]) << ", expected " << double(dinw[at_b]));
        CHECK(worst_b <= 1.0);
    }
}

TEMPLATE_TEST_CASE("gelu backward accumulates the closed-form derivative", "[kernels][gelu]", float, double) {
    using T = TestType;
    const std::ptrdiff_t n = 37;
    const auto x = normal_vector<T>(n, 41, 0.0, 2.0);
    const auto dout = normal_vector<T>(n, 42);
    std::vector<T> din(n, T(0.75));
    ops::gelu_backward(din.data(), dout.data(), x.data(), n);
    ops::gelu_backward(din.data(), dout.data(), x.data(), n);  // twice: += twice
    std::vector<long double> expected(n);
    for (std::ptrdiff_t i = 0; i < n; ++i) {
        const long double v = x[i];
        const long double pi = 3.14159265358979323846264338327950288L;
        const long double derivative = 0.5L * (1 + std::erf(v / std::sqrt(2.0L))) + v * std::exp(-v * v / 2) / std::sqrt(2 * pi);
        expected[i] = 0.75L + 2 * dout[i] * derivative;
    }
    check_close(din, expected, 4 * kTol<T>, "din");
}

TEMPLATE_TEST_CASE("layernorm forward and backward match the wider reference on odd widths", "[kernels][layernorm]", float, double) {
    using T = TestType;
    using W = Wider<T>;
    const double tol = kTol<T>;
    const T eps = T(1e-6);
    for (const std::ptrdiff_t D : test_sizes(12, 10)) {
        for (const std::ptrdiff_t M : {std::ptrdiff_t(1), std::ptrdiff_t(5), std::ptrdiff_t(67)}) {
            if (M * D > 40000) continue;
            INFO("M = " << M << ", D = " << D);
            const auto seed = static_cast<std::uint64_t>(M * 1000 + D);
            const auto x = normal_vector<T>(M * D, seed, 0.5, 2.0), w = normal_vector<T>(D, seed + 1, 1.0, 0.5),
                       b = normal_vector<T>(D, seed + 2), dy = normal_vector<T>(M * D, seed + 3);
            std::vector<T> y(M * D), mean(M), rstd(M);
            ops::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), M, D, eps);
            const auto xw = widen<W>(x), ww = widen<W>(w), bw = widen<W>(b), dyw = widen<W>(dy);
            std::vector<W> yw(M * D), meanw(M), rstdw(M);
            ops::layernorm_forward_reference(yw.data(), meanw.data(), rstdw.data(), xw.data(), ww.data(), bw.data(), M, D, W(eps));
            check_close(y, yw, tol, "out");
            check_close(mean, meanw, tol, "mean");
            check_close(rstd, rstdw, tol, "rstd");

            // backward from the wider forward's cache on both sides, into nonzero gradients (+=)
            const auto dx0 = normal_vector<T>(M * D, seed + 4), dw0 = normal_vector<T>(D, seed + 5), db0 = normal_vector<T>(D, seed + 6);
            std::vector<T> meanr(meanw.begin(), meanw.end()), rstdr(rstdw.begin(), rstdw.end());
            auto dx = dx0, dw = dw0, db = db0;
            ops::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), meanr.data(), rstdr.data(), w.data(), M, D);
            auto dxw = widen<W>(dx0), dww = widen<W>(dw0), dbw = widen<W>(db0);
            const auto meanrw = widen<W>(meanr), rstdrw = widen<W>(rstdr);
            ops::layernorm_backward_reference(dxw.data(), dww.data(), dbw.data(), dyw.data(), xw.data(), meanrw.data(), rstdrw.data(),
                                              ww.data(), M, D);
            // din = rstd (dy w - mean(dy w) - xhat mean(dy w xhat)) cancels (to 0 for D = 1): bound by its terms
            std::vector<double> din_terms(M * D);
            for (std::ptrdiff_t r = 0; r < M; ++r) {
                double mean_dn = 0, mean_dn_xhat = 0;
                for (std::ptrdiff_t i = 0; i < D; ++i) {
                    const double dn = std::fabs(double(dy[r * D + i]) * w[i]);
                    mean_dn += dn / D;
                    mean_dn_xhat += dn * std::fabs((double(x[r * D + i]) - meanr[r]) * rstdr[r]) / D;
                }
                for (std::ptrdiff_t i = 0; i < D; ++i) {
                    const double xhat = std::fabs((double(x[r * D + i]) - meanr[r]) * rstdr[r]);
                    din_terms[r * D + i] = rstdr[r] * (std::fabs(double(dy[r * D + i]) * w[i]) + mean_dn + xhat * mean_dn_xhat);
                }
            }
            check_close(dx, dxw, tol, "din", din_terms);
            check_close(dw, dww, tol, "dweight");
            check_close(db, dbw, tol, "dbias");
        }
    }
}

TEMPLATE_TEST_CASE("layernorm backward accumulates and is bit-identical for any thread count", "[kernels][layernorm]", float, double) {
    using T = TestType;
    // 257 rows: uneven chunks of the fixed 32-chunk reduction; M * D above kParallelMinWork: threads do run
    const std::ptrdiff_t M = 257, D = 193;
    static_assert(257 * 193 >= kernels::kParallelMinWork);
    const auto x = normal_vector<T>(M * D, 51), w = normal_vector<T>(D, 52), b = normal_vector<T>(D, 53), dy = normal_vector<T>(M * D, 54);
    std::vector<T> y(M * D), mean(M), rstd(M);
    ops::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), M, D, T(1e-6));
    auto run = [&](int threads, const std::vector<T>& dx0, const std::vector<T>& dw0, const std::vector<T>& db0) {
        std::vector<T> dx = dx0, dw = dw0, db = db0;
        with_threads(threads, [&] {
            ops::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), mean.data(), rstd.data(), w.data(), M, D);
        });
        std::vector<T> all = dx;
        all.insert(all.end(), dw.begin(), dw.end());
        all.insert(all.end(), db.begin(), db.end());
        return all;
    };
    const std::vector<T> zero_x(M * D, T(0)), zero_d(D, T(0));
    const auto one = run(1, zero_x, zero_d, zero_d);
    CHECK(bitwise_equal(one, run(1, zero_x, zero_d, zero_d)));
    CHECK(bitwise_equal(one, run(2, zero_x, zero_d, zero_d)));
    CHECK(bitwise_equal(one, run(3, zero_x, zero_d, zero_d)));
    // accumulation: starting from g, one more call gives 2 g (to rounding: the add may be fused)
    const std::vector<T> gx(one.begin(), one.begin() + M * D), gw(one.begin() + M * D, one.begin() + M * D + D),
        gb(one.begin() + M * D + D, one.end());
    const auto twice = run(2, gx, gw, gb);
    std::vector<T> doubled(one.size());
    std::transform(one.begin(), one.end(), doubled.begin(), [](T v) { return v + v; });
    check_close(twice, doubled, kTol<T>, "second accumulation");
    CHECK_FALSE(bitwise_equal(twice, one));
    // forward is deterministic too
    std::vector<T> y2(M * D), mean2(M), rstd2(M);
    with_threads(3, [&] { ops::layernorm_forward(y2.data(), mean2.data(), rstd2.data(), x.data(), w.data(), b.data(), M, D, T(1e-6)); });
    CHECK(bitwise_equal(y, y2));
    CHECK(bitwise_equal(rstd, rstd2));
}

TEMPLATE_TEST_CASE("masked L1 forward and backward match the wider reference", "[kernels][loss]", float, double) {
    using T = TestType;
    using W = Wider<T>;
    const double tol = kTol<T>;
    struct Case { int B, C, S, p; };
    // widths around the lane counts (S % lanes != 0), p = 1, p = S, and a p not dividing the lanes
    const Case cases[] = {{1, 1, 1, 1}, {2, 3, 7, 7}, {2, 3, 33, 3}, {1, 2, 35, 5}, {3, 3, 48, 16}, {1, 3, 40, 4}, {2, 1, 64, 32},
                         {2, 3, 112, 16}};  // the last above kParallelMinWork: threads do run
    for (const Case& k : cases) {
        INFO("B = " << k.B << ", C = " << k.C << ", S = " << k.S << ", p = " << k.p);
        const int g = k.S / k.p;
        const std::size_t n = static_cast<std::size_t>(k.B) * k.C * k.S * k.S;
        const auto seed = static_cast<std::uint64_t>(k.S * 100 + k.p);
        const auto pred = normal_vector<T>(n, seed);
        auto target = normal_vector<T>(n, seed + 1);
        for (std::size_t i = 0; i < n; i += 5) target[i] = pred[i];  // |x - x_rec| = 0: sign 0, as torch.sign
        std::vector<T> mask(static_cast<std::size_t>(k.B) * g * g);
        Rng rng(seed + 2);
        for (auto& m : mask) m = T(rng.below(2));
        mask[0] = T(1);
        const auto predw = widen<W>(pred), targetw = widen<W>(target), maskw = widen<W>(mask);

        const T loss = ops::masked_l1_forward(pred.data(), target.data(), mask.data(), k.B, k.C, k.S, k.p);
        const W lossw = ops::masked_l1_forward_reference(predw.data(), targetw.data(), maskw.data(), k.B, k.C, k.S, k.p);
        // the SIMD sum is blocked (short sequential chains): tol. Without SIMD the dispatch is the scalar
        // reference itself, whose S * S-long sequential sum has the classical bound S^2 * epsilon.
        const double loss_tol = kernels::simd_enabled<T> ? tol : std::max(tol, double(k.S) * k.S * std::numeric_limits<T>::epsilon());
        CHECK(std::fabs(static_cast<W>(loss) - lossw) <= loss_tol * std::fabs(lossw));

        const auto dpred0 = normal_vector<T>(n, seed + 3), dtarget0 = normal_vector<T>(n, seed + 4);
        auto dpred = dpred0, dtarget = dtarget0;
        ops::masked_l1_backward(dpred.data(), dtarget.data(), T(0.5), pred.data(), target.data(), mask.data(), k.B, k.C, k.S, k.p);
        auto dpredw = widen<W>(dpred0), dtargetw = widen<W>(dtarget0);
        ops::masked_l1_backward_reference(dpredw.data(), dtargetw.data(), W(0.5), predw.data(), targetw.data(), maskw.data(), k.B, k.C,
                                          k.S, k.p);
        check_close(dpred, dpredw, tol, "dpred");
        check_close(dtarget, dtargetw, tol, "dtarget");
        // dtarget may be null: dpred is the same
        auto dpred_only = dpred0;
        ops::masked_l1_backward(dpred_only.data(), static_cast<T*>(nullptr), T(0.5), pred.data(), target.data(), mask.data(), k.B, k.C,
                                k.S, k.p);
        CHECK(bitwise_equal(dpred_only, dpred));
        // deterministic for any thread count
        T loss3 = 0;
        with_threads(3, [&] { loss3 = ops::masked_l1_forward(pred.data(), target.data(), mask.data(), k.B, k.C, k.S, k.p); });
        CHECK(std::memcmp(&loss, &loss3, sizeof(T)) == 0);
    }
}

TEST_CASE("masked L1 rejects impossible shapes instead of reading out of bounds", "[kernels][loss]") {
    std::vector<float> img(3 * 10 * 10, 0.0f), mask(4, 1.0f), grad(img.size(), 0.0f);
    CHECK_THROWS_AS(ops::masked_l1_forward(img.data(), img.data(), mask.data(), 1, 3, 10, 4), std::runtime_error);  // 10 % 4
    CHECK_THROWS_AS(ops::masked_l1_forward(img.data(), img.data(), mask.data(), 1, 3, 10, 0), std::runtime_error);
    CHECK_THROWS_AS(ops::masked_l1_backward(grad.data(), grad.data(), 1.0f, img.data(), img.data(), mask.data(), 1, 0, 10, 5),
                    std::runtime_error);
    CHECK_THROWS_WITH(ops::masked_l1_forward_reference(img.data(), img.data(), mask.data(), 1, 3, 10, 4),
                      Catch::Contains("S=10") && Catch::Contains("p=4"));
}

TEMPLATE_TEST_CASE("bias_gelu_forward equals linear bias add then gelu_forward", "[kernels][fused]", float, double) {
    using T = TestType;
    for (const std::ptrdiff_t F : kWidths) {
        const std::ptrdiff_t M = 9;
        INFO("F = " << F);
        const auto in = normal_vector<T>(M * F, 61 + F, 0.0, 2.0), bias = normal_vector<T>(F, 62 + F);
        std::vector<T> pre_ref(M * F), act_ref(M * F);
        for (std::ptrdiff_t r = 0; r < M; ++r)
            for (std::ptrdiff_t i = 0; i < F; ++i) pre_ref[r * F + i] = in[r * F + i] + bias[i];
        ops::gelu_forward(act_ref.data(), pre_ref.data(), M * F);

        std::vector<T> pre(M * F), act(M * F);
        ops::bias_gelu_forward(act.data(), pre.data(), in.data(), bias.data(), M, F);
        CHECK(bitwise_equal(pre, pre_ref));
        CHECK(bitwise_equal(act, act_ref));
        // in place: pre is the linear output buffer
        std::vector<T> inplace = in, act2(M * F);
        ops::bias_gelu_forward(act2.data(), inplace.data(), inplace.data(), bias.data(), M, F);
        CHECK(bitwise_equal(inplace, pre_ref));
        CHECK(bitwise_equal(act2, act_ref));
    }
}

/// The fused MLP ops (the GEMM epilogues) against their unfused composition, in FP32 and (when the CPU has it)
/// bf16 matmul precision: forward bit for bit, backward equal up to the sign of zeros (within rounding when the
/// run-time dispatch runs the epilogue for another ISA than this test's, epilogue_isa_is_ours). Sizes span register-tile
/// edges (rows 1, 8, 9, 131; widths 1, 47, 48, 49, 200) and the products of 131 rows run on several threads.
template <class T>
void check_fused_mlp_ops() {
    for (const std::ptrdiff_t M : {1, 9, 131})
        for (const std::ptrdiff_t F : {1, 47, 49, 200}) {
            const std::ptrdiff_t K = 40, D = 24;
            INFO("M = " << M << ", F = " << F);
            const auto in = normal_vector<T>(static_cast<std::size_t>(M * K), 71 + F, 0.0, 1.0), w1 = normal_vector<T>(static_cast<std::size_t>(F * K), 72 + F, 0.0, 0.3),
                       b1 = normal_vector<T>(static_cast<std::size_t>(F), 73 + F), w2 = normal_vector<T>(static_cast<std::size_t>(D * F), 74 + F, 0.0, 0.3),
                       dout = normal_vector<T>(static_cast<std::size_t>(M * D), 75 + F);
            // forward: linear without bias, then bias + GELU
            std::vector<T> pre_ref(M * F), act_ref(M * F), pre(M * F), act(M * F);
            ops::linear_forward(pre_ref.data(), in.data(), w1.data(), static_cast<const T*>(nullptr), M, K, F);
            ops::bias_gelu_forward(act_ref.data(), pre_ref.data(), pre_ref.data(), b1.data(), M, F);
            ops::linear_bias_gelu_forward(act.data(), pre.data(), in.data(), w1.data(), b1.data(), M, K, F);
            CHECK(bitwise_equal(pre, pre_ref));
            CHECK(epilogue_equal(act, act_ref));
            // backward of fc2 and the GELU: d_act = dout W2, d_pre = 0 + d_act gelu'(pre); fc2's gradients
            std::vector<T> d_act(M * F), d_pre_ref(M * F, T(0)), dw_ref(D * F, T(0.5)), db_ref(D, T(0.25));
            ops::linear_backward(d_act.data(), dw_ref.data(), db_ref.data(), dout.data(), act.data(), w2.data(), M, F, D, T(0));
            ops::gelu_backward(d_pre_ref.data(), d_act.data(), pre.data(), M * F);
            std::vector<T> d_pre(M * F, std::numeric_limits<T>::quiet_NaN()), dw(D * F, T(0.5)), db(D, T(0.25));
            ops::linear_backward_gelu(d_pre.data(), dw.data(), db.data(), dout.data(), act.data(), pre.data(), w2.data(), M, F, D);
            // == : a zero may differ in sign (0 + -0 against -0)
            CHECK((epilogue_isa_is_ours() || std::is_same_v<T, double> ? d_pre == d_pre_ref : epilogue_equal(d_pre, d_pre_ref)));
            CHECK(bitwise_equal(dw, dw_ref));
            CHECK(bitwise_equal(db, db_ref));
        }
}

TEMPLATE_TEST_CASE("the fused MLP GEMM epilogues equal the unfused ops", "[kernels][fused]", float, double) {
    check_fused_mlp_ops<TestType>();
    if constexpr (std::is_same_v<TestType, float>) {
        if (simmim::kernels::cpu_supports_bf16()) {
            INFO("bf16 matmul precision");
            const simmim::kernels::ScopedMatmulPrecision bf16(simmim::kernels::MatmulPrecision::bf16);
            check_fused_mlp_ops<float>();
        }
    }
}

TEMPLATE_TEST_CASE("residual_layernorm_forward equals residual add then layernorm_forward", "[kernels][fused]", float, double) {
    using T = TestType;
    for (const std::ptrdiff_t D : kWidths) {
        const std::ptrdiff_t M = 13;
        INFO("D = " << D);
        const auto x = normal_vector<T>(M * D, 71 + D), res = normal_vector<T>(M * D, 72 + D, 0.3, 2.0),
                   w = normal_vector<T>(D, 73 + D, 1.0, 0.2), b = normal_vector<T>(D, 74 + D);
        std::vector<T> sum_ref(M * D), ln_ref(M * D), mean_ref(M), rstd_ref(M);
        for (std::ptrdiff_t i = 0; i < M * D; ++i) sum_ref[i] = x[i] + res[i];
        ops::layernorm_forward(ln_ref.data(), mean_ref.data(), rstd_ref.data(), sum_ref.data(), w.data(), b.data(), M, D, T(1e-6));

        std::vector<T> sum(M * D), ln(M * D), mean(M), rstd(M);
        ops::residual_layernorm_forward(sum.data(), ln.data(), mean.data(), rstd.data(), x.data(), res.data(), w.data(), b.data(), M, D,
                                        T(1e-6));
        CHECK(bitwise_equal(sum, sum_ref));
        CHECK(bitwise_equal(ln, ln_ref));
        CHECK(bitwise_equal(mean, mean_ref));
        CHECK(bitwise_equal(rstd, rstd_ref));
        // in place, as the ViT block uses it: mid = proj(attn) + in, then LN2(mid)
        std::vector<T> mid = x;
        ops::residual_layernorm_forward(mid.data(), ln.data(), mean.data(), rstd.data(), mid.data(), res.data(), w.data(), b.data(), M, D,
                                        T(1e-6));
        CHECK(bitwise_equal(mid, sum_ref));
        CHECK(bitwise_equal(ln, ln_ref));
    }
}

TEMPLATE_TEST_CASE("mask_blend_pos_forward equals the encoder's token assembly", "[kernels][fused]", float, double) {
    using T = TestType;
    for (const std::ptrdiff_t D : kWidths) {
        const std::ptrdiff_t B = 3, L = 10, N = L + 1;
        INFO("D = " << D);
        const auto e = normal_vector<T>(B * L * D, 81 + D), mt = normal_vector<T>(D, 82 + D), cls = normal_vector<T>(D, 83 + D),
                   pos = normal_vector<T>(N * D, 84 + D);
        std::vector<T> w(B * L);
        Rng rng(85);
        for (auto& v : w) v = T(rng.below(2));
        w[1] = T(0.25);  // a soft weight: both terms contribute
        // oracle: the formula in long double
        std::vector<long double> expected(B * N * D);
        for (std::ptrdiff_t b = 0; b < B; ++b)
            for (std::ptrdiff_t t = 0; t < N; ++t)
                for (std::ptrdiff_t d = 0; d < D; ++d) {
                    const long double pe = pos[t * D + d];
                    if (t == 0) {
                        expected[(b * N) * D + d] = static_cast<long double>(cls[d]) + pe;
                    } else {
                        const long double m = w[b * L + t - 1];
                        expected[(b * N + t) * D + d] = e[(b * L + t - 1) * D + d] * (1 - m) + mt[d] * m + pe;
                    }
                }
        std::vector<T> x0(B * N * D);
        ops::mask_blend_pos_forward(x0.data(), e.data(), w.data(), mt.data(), cls.data(), pos.data(), B, L, D);
        check_close(x0, expected, kTol<T>, "x0");
    }
}
