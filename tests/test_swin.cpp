// Swin encoder: the window ops against literal transcriptions of the official tensor code, the windowed
// attention against its scalar reference and finite differences, and the whole SimMIM Swin model against
// finite differences in double (every parameter tensor, sampled entries, and the input image).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gradcheck.hpp"
#include "simmim/model/swin_encoder.hpp"

using namespace simmim;

namespace {

/// torch.roll(x, (-s, -s), (1, 2)) then window_partition, written as the official code reads, on a
/// (r, r) grid of token ids: returns the ids in window order.
std::vector<int> official_roll_partition(int r, int ws, int s) {
    std::vector<int> rolled(static_cast<std::size_t>(r) * r);
    for (int h = 0; h < r; ++h)
        for (int w = 0; w < r; ++w) rolled[static_cast<std::size_t>(h) * r + w] = ((h + s) % r) * r + (w + s) % r;  // roll by -s
    // x.view(B, H/ws, ws, W/ws, ws, C).permute(0, 1, 3, 2, 4, 5).view(-1, ws, ws, C)
    std::vector<int> out;
    for (int a = 0; a < r / ws; ++a)
        for (int c = 0; c < r / ws; ++c)
            for (int b = 0; b < ws; ++b)
                for (int d = 0; d < ws; ++d) out.push_back(rolled[static_cast<std::size_t>(a * ws + b) * r + c * ws + d]);
    return out;
}

/// The official attn_mask construction: h/w slices (0:-ws), (-ws:-s), (-s:), labels cnt, partition, lab[j] - lab[i] != 0 -> -100.
std::vector<double> official_attn_mask(int r, int ws, int s) {
    std::vector<int> img(static_cast<std::size_t>(r) * r);
    const int bounds[4] = {0, r - ws, r - s, r};
    int cnt = 0;
    for (int hs = 0; hs < 3; ++hs)
        for (int wsl = 0; wsl < 3; ++wsl) {
            for (int h = bounds[hs]; h < bounds[hs + 1]; ++h)
                for (int w = bounds[wsl]; w < bounds[wsl + 1]; ++w) img[static_cast<std::size_t>(h) * r + w] = cnt;
            ++cnt;
        }
    const auto part = official_roll_partition(r, ws, 0);
    const int N = ws * ws, nW = (r / ws) * (r / ws);
    std::vector<double> m(static_cast<std::size_t>(nW) * N * N);
    for (int w = 0; w < nW; ++w)
        for (int i = 0; i < N; ++i)
            for (int j = 0; j < N; ++j) {
                const int li = img[static_cast<std::size_t>(part[static_cast<std::size_t>(w * N + i)])];
                const int lj = img[static_cast<std::size_t>(part[static_cast<std::size_t>(w * N + j)])];
                m[(static_cast<std::size_t>(w) * N + i) * N + j] = (lj - li) != 0 ? -100.0 : 0.0;
            }
    return m;
}

/// Central differences of f at sampled entries of x (the entry of largest |analytic| and `count` seeded
/// ones): the largest error relative to 1e-8 + 1e-6 |analytic|, which must stay below 1.
double sampled_fd_error(double* x, const double* analytic, std::size_t n, const std::function<double()>& f, int count, std::uint64_t seed) {
    std::vector<std::size_t> picks{static_cast<std::size_t>(
        std::max_element(analytic, analytic + n, [](double a, double b) { return std::abs(a) < std::abs(b); }) - analytic)};
    Rng rng(seed);
    for (int k = 0; k < count; ++k) picks.push_back(static_cast<std::size_t>(rng.uniform() * double(n)) % n);
    double worst = 0;
    for (const std::size_t i : picks) {
        const double saved = x[i], h = 1e-5;
        x[i] = saved + h;
        const double fp = f();
        x[i] = saved - h;
        const double fm = f();
        x[i] = saved;
        const double fd = (fp - fm) / (2 * h);
        worst = std::max(worst, std::abs(fd - analytic[i]) / (1e-8 + 1e-6 * std::abs(analytic[i])));
    }
    return worst;
}

}  // namespace

TEST_CASE("window order is roll(-s) + window_partition, and attn_mask is the official -100 / 0 mask", "[swin][ops]") {
    for (const auto& [r, ws, s] : {std::tuple{8, 4, 2}, std::tuple{8, 4, 0}, std::tuple{12, 6, 3}, std::tuple{4, 4, 0}, std::tuple{6, 2, 1}}) {
        INFO("r " << r << " ws " << ws << " s " << s);
        const auto order = ops::window_order(r, ws, s);
        const auto want = official_roll_partition(r, ws, s);
        REQUIRE(std::vector<int>(order.begin(), order.end()) == want);
        if (s > 0) CHECK(ops::shifted_window_mask<double>(r, ws, s) == official_attn_mask(r, ws, s));
    }
    CHECK_THROWS_AS(ops::window_order(8, 3, 0), std::invalid_argument);
    CHECK_THROWS_AS(ops::window_order(8, 4, 4), std::invalid_argument);
}

TEST_CASE("the window relative position index matches the official index (window 2 closed form)", "[swin][ops]") {
    const auto idx = ops::window_relative_position_index(2);
    CHECK(idx == std::vector<std::int32_t>{4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4});
    const auto idx6 = ops::window_relative_position_index(6);
    CHECK(*std::max_element(idx6.begin(), idx6.end()) == ops::window_table_rows(6) - 1);
    CHECK(*std::min_element(idx6.begin(), idx6.end()) == 0);
}

TEST_CASE("patch merging gathers x0, x1, x2, x3 and its scatter is the adjoint", "[swin][ops]") {
    const int B = 2, r = 4, D = 3;
    std::vector<double> in(static_cast<std::size_t>(B) * r * r * D);
    for (std::size_t i = 0; i < in.size(); ++i) in[i] = double(i);
    std::vector<double> out(in.size());
    ops::merge_gather(out.data(), in.data(), B, r, D);
    // output row (b=1, i=1, j=0), channel block k=1 is x[1, 2i+1, 2j] = grid row 3*4 + 0
    const auto at = [&](int b, int h, int w, int d) { return in[((static_cast<std::size_t>(b) * r + h) * r + w) * D + d]; };
    const std::size_t row = (1 * 4 + 1 * 2 + 0) * 4 * D;
    CHECK(out[row + 0 * D + 2] == at(1, 2, 0, 2));
    CHECK(out[row + 1 * D + 0] == at(1, 3, 0, 0));
    CHECK(out[row + 2 * D + 1] == at(1, 2, 1, 1));
    CHECK(out[row + 3 * D + 0] == at(1, 3, 1, 0));
    // <gather(x), y> == <x, scatter(y)>
    const auto y = test::random_vector(out.size(), 3);
    std::vector<double> sy(in.size());
    ops::merge_scatter(sy.data(), y.data(), B, r, D);
    CHECK(std::abs(test::dot(out, y) - test::dot(in, sy)) < 1e-9 * std::abs(test::dot(out, y)));
}

TEMPLATE_TEST_CASE("biased attention matches the scalar reference over head sizes, with and without a mask, accumulating",
                   "[swin][ops]", float, double) {
    using T = TestType;
    const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-12;
    for (const auto& [N, Dh] : {std::pair{1, 3}, {7, 16}, {16, 32}, {36, 13}, {64, 128}, {64, 129}, {65, 8}, {80, 33}}) {
        CAPTURE(N, Dh);
        const int B = 4, H = 2, nW = 2;
        const auto rm = test::random_vector(static_cast<std::size_t>(nW) * N * N, 7, 2.0);
        const auto rq = test::random_vector(static_cast<std::size_t>(B) * N * 3 * H * Dh, 8);
        const auto rb = test::random_vector(static_cast<std::size_t>(H) * N * N, 9, 0.5);
        const auto rd = test::random_vector(static_cast<std::size_t>(B) * N * H * Dh, 10);
        const std::vector<T> mask(rm.begin(), rm.end()), qkv(rq.begin(), rq.end()), bias(rb.begin(), rb.end()), dout(rd.begin(), rd.end());
        for (const T* m : {static_cast<const T*>(nullptr), mask.data()}) {
            std::vector<T> out(dout.size()), lse(static_cast<std::size_t>(B) * H * N), out_ref(out.size()), lse_ref(lse.size());
            ops::attention_bias_forward(out.data(), lse.data(), qkv.data(), bias.data(), B, N, H, Dh, m, nW);
            ops::attention_bias_forward_reference(out_ref.data(), lse_ref.data(), qkv.data(), bias.data(), B, N, H, Dh, m, nW);
            CHECK(test::relative_error(out, out_ref, out.size()) < tol);
            CHECK(test::relative_error(lse, lse_ref, lse.size()) < tol);
            // backward accumulates: start from a non-zero dqkv and dbias
            const auto r0 = test::random_vector(qkv.size(), 11), r1 = test::random_vector(bias.size(), 12);
            std::vector<T> dqkv(r0.begin(), r0.end()), dbias(r1.begin(), r1.end()), dqkv_ref = dqkv, dbias_ref = dbias;
            ops::attention_bias_backward(dqkv.data(), dbias.data(), dout.data(), qkv.data(), out.data(), lse.data(), bias.data(), B, N, H,
                                         Dh, m, nW);
            ops::attention_bias_backward_reference(dqkv_ref.data(), dbias_ref.data(), dout.data(), qkv.data(), out_ref.data(),
                                                   lse_ref.data(), bias.data(), B, N, H, Dh, m, nW);
            CHECK(test::relative_error(dqkv, dqkv_ref, dqkv.size()) < tol);
            CHECK(test::relative_error(dbias, dbias_ref, dbias.size()) < tol);
        }
    }
}

TEMPLATE_TEST_CASE("windowed attention with a shift mask: fast path = scalar reference; backward = finite differences", "[swin][ops][gradcheck]",
                   float, double) {
    using T = TestType;
    const int nW = 4, B = 2 * nW, N = 16, H = 2, Dh = 5;
    const auto mask64 = ops::shifted_window_mask<double>(8, 4, 2);
    const std::vector<T> mask(mask64.begin(), mask64.end());
    const auto rq = test::random_vector(static_cast<std::size_t>(B) * N * 3 * H * Dh, 1);
    const auto rb = test::random_vector(static_cast<std::size_t>(H) * N * N, 2, 0.5);
    const std::vector<T> qkv(rq.begin(), rq.end()), bias(rb.begin(), rb.end());
    std::vector<T> out(static_cast<std::size_t>(B) * N * H * Dh), lse(static_cast<std::size_t>(B) * H * N), out_ref(out.size()), lse_ref(lse.size());
    ops::attention_bias_forward(out.data(), lse.data(), qkv.data(), bias.data(), B, N, H, Dh, mask.data(), nW);
    ops::attention_bias_forward_reference(out_ref.data(), lse_ref.data(), qkv.data(), bias.data(), B, N, H, Dh, mask.data(), nW);
    const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
    CHECK(test::relative_error(out, out_ref, out.size()) < tol);
    CHECK(test::relative_error(lse, lse_ref, lse.size()) < tol);
    const auto rd = test::random_vector(out.size(), 4);
    const std::vector<T> dout(rd.begin(), rd.end());
    std::vector<T> dqkv(qkv.size(), T(0)), dbias(bias.size(), T(0)), dqkv_ref(qkv.size(), T(0)), dbias_ref(bias.size(), T(0));
    ops::attention_bias_backward(dqkv.data(), dbias.data(), dout.data(), qkv.data(), out.data(), lse.data(), bias.data(), B, N, H, Dh,
                                 mask.data(), nW);
    ops::attention_bias_backward_reference(dqkv_ref.data(), dbias_ref.data(), dout.data(), qkv.data(), out_ref.data(), lse_ref.data(),
                                           bias.data(), B, N, H, Dh, mask.data(), nW);
    CHECK(test::relative_error(dqkv, dqkv_ref, dqkv.size()) < tol);
    CHECK(test::relative_error(dbias, dbias_ref, dbias.size()) < tol);
    // the mask matters: without it the output differs
    std::vector<T> out_nomask(out.size());
    ops::attention_bias_forward(out_nomask.data(), lse.data(), qkv.data(), bias.data(), B, N, H, Dh);
    CHECK(test::relative_error(out_nomask, out_ref, out.size()) > 1e-3);
    if constexpr (std::is_same_v<T, double>) {
        // the reference's backward against central differences of <dout, out(qkv, bias)>
        std::vector<double> q = qkv, b = bias, o(out.size()), l(lse.size());
        auto f = [&] {
            ops::attention_bias_forward_reference(o.data(), l.data(), q.data(), b.data(), B, N, H, Dh, mask.data(), nW);
            return test::dot(o, dout);
        };
        CHECK(test::relative_error(dqkv_ref, test::numeric_gradient(q.data(), q.size(), f), q.size()) < 1e-7);
        CHECK(test::relative_error(dbias_ref, test::numeric_gradient(b.data(), b.size(), f), b.size()) < 1e-7);
    }
    CHECK_THROWS_AS(ops::attention_bias_forward(out.data(), lse.data(), qkv.data(), bias.data(), B, N, H, Dh, mask.data(), 3),
                    std::invalid_argument);
}

TEST_CASE("Swin configurations: the clamp rule, geometry and presets", "[swin]") {
    constexpr SwinConfig t = presets::swin_tiny_test;
    STATIC_REQUIRE(t.resolution(0) == 8);
    STATIC_REQUIRE(!t.clamped(0));
    STATIC_REQUIRE(t.shift(0) == 2);
    STATIC_REQUIRE(t.clamped(1));
    STATIC_REQUIRE(t.window(1) == 4);
    STATIC_REQUIRE(t.shift(1) == 0);
    STATIC_REQUIRE(t.stride() == 4);
    STATIC_REQUIRE(t.geometry() == EncoderGeometry{16, 3, 8, 4, 32});
    constexpr SwinConfig b = presets::swin_b_192;
    STATIC_REQUIRE(b.resolution(3) == 6);
    STATIC_REQUIRE(b.window(3) == 6);
    STATIC_REQUIRE(b.shift(3) == 0);
    STATIC_REQUIRE(b.geometry() == EncoderGeometry{192, 3, 48, 6, 1024});
    constexpr SwinConfig c = presets::swin_clamp_test;
    STATIC_REQUIRE(c.window(2) == 2);
    STATIC_REQUIRE(c.geometry() == EncoderGeometry{16, 1, 8, 2, 32});
    STATIC_REQUIRE(SwinEncoder<float, c>::Stage<2>::Block::nW == 1);
    STATIC_REQUIRE(SwinEncoder<float, t>::Stage<0>::Block::nW == 4);
    CHECK(presets::find_swin("swin-d32-c1")->config.in_chans == 1);
    CHECK(presets::find_swin("swin-b-192")->mask.patch_size == 32);
    CHECK(presets::find_swin("vit-t4-32") == nullptr);
}

TEST_CASE("the official Swin-B for SimMIM has the official parameter count and names", "[swin]") {
    ParamArena<float> arena;
    SwinEncoder<float, presets::swin_b_192> encoder(arena);
    // 89,874,104 parameters with the official 3-channel decoder Conv2d(1024, 32*32*3, 1): 3,148,800 of them
    CHECK(arena.size() + (1024 * 32 * 32 * 3 + 32 * 32 * 3) == 89'874'104);
    const auto& ps = arena.params();
    CHECK(ps.front().name == "encoder.mask_token");  // the official state-dict order
    CHECK(ps[1].name == "encoder.patch_embed.proj.weight");
    CHECK(ps.back().name == "encoder.norm.bias");
    const auto has = [&](const std::string& n) { return std::any_of(ps.begin(), ps.end(), [&](const ParamInfo& p) { return p.name == n; }); };
    CHECK(has("encoder.layers.2.blocks.17.attn.relative_position_bias_table"));
    CHECK(has("encoder.layers.2.downsample.reduction.weight"));
    CHECK(!has("encoder.layers.3.downsample.reduction.weight"));
    CHECK(has("encoder.norm.weight"));
}

namespace {
template <SwinConfig C>
void check_swin_model_gradients(std::uint64_t seed) {
    constexpr EncoderGeometry G = SwinEncoder<double, C>::geometry;
    SwinSimMIM<double, C> model(random_mask_patch<G, MaskSpec{4, 0.6}>(), seed);
    Rng rng(seed + 1);
    for (std::size_t i = 0; i < model.params().size(); ++i) model.params().values()[i] += 0.05 * rng.normal();
    const int B = 2;
    auto images = test::random_vector(static_cast<std::size_t>(B) * G.image_numel(), seed + 2);
    std::vector<double> mask(static_cast<std::size_t>(B) * G.mask_tokens());
    model.draw_mask(seed, 0, B, mask.data());
    model.zero_grad();
    std::vector<double> dimages(images.size(), 0.0);
    const double loss = model.forward(images.data(), mask.data(), B);
    REQUIRE(std::isfinite(loss));
    model.backward(dimages.data());
    const std::vector<double> grads(model.params().grads(), model.params().grads() + model.params().size());
    auto f = [&] { return model.forward(images.data(), mask.data(), B); };
    for (const auto& p : model.params().params()) {
        const double err = sampled_fd_error(model.params().values() + p.offset, grads.data() + p.offset, p.size, f, 4, p.offset);
        INFO(p.name << ": worst error / tolerance " << err);
        CHECK(err < 1);
    }
    INFO("input image");
    CHECK(sampled_fd_error(images.data(), dimages.data(), images.size(), f, 16, 7) < 1);
    // encode() on the const model gives the training forward's features
    const std::size_t nf = static_cast<std::size_t>(B) * G.out_tokens() * G.out_dim;
    std::vector<double> features(nf), trained(nf);
    model.encoder().forward(trained.data(), images.data(), mask.data(), B);
    const auto& const_model = model;
    const_model.encoder().encode(features.data(), images.data(), mask.data(), B);
    CHECK(test::relative_error(features, trained, nf) < 1e-14);
}
}  // namespace

TEST_CASE("Swin SimMIM: whole-model gradients match finite differences in double", "[swin][gradcheck]") {
    SECTION("swin-tiny-test: a shifted stage and a clamped one") { check_swin_model_gradients<presets::swin_tiny_test>(11); }
    SECTION("swin-clamp-test: 1 channel, a stage clamped to a 2x2 window") { check_swin_model_gradients<presets::swin_clamp_test>(12); }
}
