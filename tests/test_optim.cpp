// AdamW, gradient clipping and the learning-rate schedule against closed forms.
#include <catch2/catch.hpp>

#include <cmath>

#include "simmim/optim/adamw.hpp"
#include "simmim/optim/schedule.hpp"

using namespace simmim;

TEST_CASE("AdamW first steps follow the closed form, with decay only on the decay group", "[optim]") {
    ParamArena<double> arena;
    auto w = arena.add<Shape<2, 2>>("w", Init::Zeros, true);
    auto b = arena.add<Shape<2>>("b", Init::Zeros, false);
    arena.allocate();
    const double w0[4] = {1.0, -2.0, 0.5, 3.0}, b0[2] = {0.25, -0.75};
    std::copy(w0, w0 + 4, w.data());
    std::copy(b0, b0 + 2, b.data());
    const double g[6] = {0.1, -0.2, 0.3, 1e-3, -0.5, 2.0};
    std::copy(g, g + 6, arena.grads());
    AdamW<double> opt(arena, {0.9, 0.999, 1e-8, 0.05});
    const double lr = 1e-2;
    opt.step(lr);
    // step 1: m_hat = g, v_hat = g^2 -> p1 = p0 (1 - lr wd) - lr g / (|g| + eps)
    for (int i = 0; i < 6; ++i) {
        const double p0 = i < 4 ? w0[i] : b0[i - 4], wd = i < 4 ? 0.05 : 0.0;
        CHECK(arena.values()[i] == Approx(p0 * (1 - lr * wd) - lr * g[i] / (std::abs(g[i]) + 1e-8)).epsilon(1e-12));
    }
    // step 2 with the same gradient: m = g (1 - .9^2), v = g^2 (1 - .999^2) -> update lr*g/(|g| + eps) again
    std::vector<double> p1(arena.values(), arena.values() + 6);
    opt.step(lr);
    for (int i = 0; i < 6; ++i) {
        const double wd = i < 4 ? 0.05 : 0.0;
        CHECK(arena.values()[i] == Approx(p1[i] * (1 - lr * wd) - lr * g[i] / (std::abs(g[i]) + 1e-8)).epsilon(1e-10));
    }
}

TEST_CASE("clip_grad_norm scales to max_norm / (norm + 1e-6) only when above", "[optim]") {
    ParamArena<double> arena;
    arena.add<Shape<2>>("a", Init::Zeros, false);
    arena.allocate();
    arena.grads()[0] = 3;
    arena.grads()[1] = 4;
    CHECK(clip_grad_norm(arena, 10.0) == Approx(5.0));
    CHECK(arena.grads()[0] == 3.0);
    CHECK(clip_grad_norm(arena, 1.0) == Approx(5.0));
    CHECK(arena.grads()[0] == Approx(3.0 / (5.0 + 1e-6)).epsilon(1e-14));
    CHECK(arena.grads()[1] == Approx(4.0 / (5.0 + 1e-6)).epsilon(1e-14));
}

TEST_CASE("schedule: linear warmup then timm cosine over the whole run, lr scaled by batch/512", "[optim]") {
    auto s = CosineSchedule::scaled(2e-4, 1e-5, 1e-6, 128, 10, 110);
    CHECK(s.base_lr == Approx(5e-5));
    CHECK(s(0) == Approx(2.5e-7));
    CHECK(s(5) == Approx(2.5e-7 + 5 * (5e-5 - 2.5e-7) / 10));
    CHECK(s(10) == Approx(2.5e-6 + 0.5 * (5e-5 - 2.5e-6) * (1 + std::cos(M_PI * 10 / 110))));
    CHECK(s(55) == Approx(2.5e-6 + 0.5 * (5e-5 - 2.5e-6)));
    CHECK(s(110) == Approx(2.5e-6));
    CHECK(s(500) == Approx(2.5e-6));
}
