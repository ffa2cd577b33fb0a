// AdamW and clip_grad_norm on parameters long enough for their SIMD bodies, scalar tails and
// OpenMP split (test_optim.cpp covers the formulas on a few elements): against a double-precision
// scalar oracle of torch's AdamW written out here, and a long-double oracle of the gradient norm.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "simmim/core/random.hpp"
#include "simmim/optim/adamw.hpp"

using namespace simmim;

namespace {

// 100003 elements: parallel update (> 65536), SIMD body and a tail of 3 (16 float lanes); 21: one
// SIMD batch and a tail on the serial path.
constexpr std::size_t kLong = 100003, kShort = 21;

template <class T>
void fill_normal(T* p, std::size_t n, std::uint64_t seed, double stddev) {
    Rng rng(seed);
    for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<T>(stddev * rng.normal());
}

}  // namespace

TEST_CASE("AdamW on long parameters matches a scalar double oracle", "[optim][simd]") {
    ParamArena<float> arena;
    arena.add<Shape<kLong>>("w", Init::Zeros, true);
    arena.add<Shape<kShort>>("b", Init::Zeros, false);
    arena.allocate();
    const std::size_t n = arena.size();
    fill_normal(arena.values(), n, 1, 1.0);
    const AdamWConfig cfg{0.9, 0.999, 1e-8, 0.05};
    AdamW<float> opt(arena, cfg);

    // Oracle state in double, from the same float starting values.
    std::vector<double> p(arena.values(), arena.values() + n), m(n, 0.0), v(n, 0.0);
    const double lrs[3] = {1e-3, 5e-4, 2e-3};
    double worst = 0;
    for (int t = 1; t <= 3; ++t) {
        // Gradients of mixed scales, including exact zeros (v = 0 where eps matters).
        fill_normal(arena.grads(), n, 10 + t, 1.0);
        for (std::size_t i = 0; i < n; i += 97) arena.grads()[i] *= 1e-4f;
        for (std::size_t i = 5; i < n; i += 1009) arena.grads()[i] = 0.0f;
        opt.step(lrs[t - 1]);
        const double lr = lrs[t - 1];
        const double bc1 = 1 - std::pow(cfg.beta1, t), bc2 = 1 - std::pow(cfg.beta2, t);
        for (std::size_t i = 0; i < n; ++i) {
            const double g = arena.grads()[i], wd = i < kLong ? cfg.weight_decay : 0.0;
            p[i] *= 1 - lr * wd;
            m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g;
            v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * g * g;
            p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + cfg.eps);
        }
        for (std::size_t i = 0; i < n; ++i) {
            // float state: a few ulp of |p| plus a few ulp of the step (lr scale); with 1 - beta2
            // rounded from float(1) - float(0.999) instead of double, this was 1.7e-6
            const double err = std::fabs(arena.values()[i] - p[i]) / (std::fabs(p[i]) + lr);
            worst = std::max(worst, err);
            if (err > 5e-7) {
                INFO("step " << t << " element " << i << ": " << arena.values()[i] << " vs " << p[i]);
                CHECK(err <= 5e-7);
                return;
            }
        }
        for (std::size_t i = 0; i < n; i += 4999) {
            CHECK(opt.exp_avg()[i] == Approx(m[i]).epsilon(1e-6).margin(1e-12));
            CHECK(opt.exp_avg_sq()[i] == Approx(v[i]).epsilon(1e-6).margin(1e-14));
        }
    }
    CHECK(worst <= 5e-7);
}

TEST_CASE("clip_grad_norm on a long gradient: long-double norm, same result on 1 and 2 threads", "[optim][simd]") {
    const auto make = [](ParamArena<float>& arena) {
        arena.add<Shape<kLong>>("w", Init::Zeros, true);
        arena.add<Shape<kShort>>("b", Init::Zeros, false);
        arena.allocate();
        fill_normal(arena.grads(), arena.size(), 77, 0.5);
    };
    ParamArena<float> a, b, c;
    make(a);
    long double sq = 0;
    for (std::size_t i = 0; i < a.size(); ++i) sq += static_cast<long double>(a.grads()[i]) * a.grads()[i];
    const double expected = static_cast<double>(std::sqrt(sq));
    const std::vector<float> g0(a.grads(), a.grads() + a.size());

    const double norm = clip_grad_norm(a, 1.0);
    CHECK(norm == Approx(expected).epsilon(1e-13));
    const double coef = 1.0 / (expected + 1e-6);
    for (std::size_t i = 0; i < a.size(); i += 101) CHECK(a.grads()[i] == Approx(g0[i] * coef).epsilon(1e-6));

#ifdef _OPENMP
    const int threads = omp_get_max_threads();
    make(b);
    make(c);
    omp_set_num_threads(1);
    const double norm1 = clip_grad_norm(b, 1.0);
    omp_set_num_threads(2);
    const double norm2 = clip_grad_norm(c, 1.0);
    omp_set_num_threads(threads);
    CHECK(norm1 == norm2);
    CHECK(norm1 == norm);
#endif
}
