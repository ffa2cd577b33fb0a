// Whole-model checks: finite-difference gradients of the loss w.r.t. every parameter tensor and the
// input image (double), initialisation statistics, and float/double agreement.
#include <catch2/catch.hpp>

#include <map>

#include "gradcheck.hpp"
#include "simmim/simmim.hpp"

using namespace simmim;

namespace {
// Small enough for exhaustive finite differences, with every structural feature of the presets:
// several heads, several blocks, mask patch larger than the model patch, more than one channel.
constexpr ViTConfig kSmall{8, 2, 2, 8, 2, 2, 4};
constexpr MaskSpec kSmallMask{4, 0.5};
using Model = ViTSimMIM<double, kSmall>;
}  // namespace

TEST_CASE("whole-model gradients match finite differences for every parameter tensor and the input", "[model][gradcheck]") {
    Model model(random_mask_patch<kSmall, kSmallMask>(), 7);
    // Perturb every parameter so LayerNorm weights, biases and tokens are all non-trivial.
    Rng rng(99);
    for (std::size_t i = 0; i < model.params().size(); ++i) model.params().values()[i] += 0.05 * rng.normal();
    const int B = 2;
    auto images = test::random_vector(B * kSmall.image_numel(), 3);
    std::vector<double> mask(B * kSmall.num_patches());
    model.draw_mask(11, 0, B, mask.data());
    model.zero_grad();
    std::vector<double> dimages(images.size(), 0.0);
    model.forward(images.data(), mask.data(), B);
    model.backward(dimages.data());
    const std::vector<double> grads(model.params().grads(), model.params().grads() + model.params().size());
    auto f = [&] { return model.forward(images.data(), mask.data(), B); };
    for (const auto& p : model.params().params()) {
        double* v = model.params().values() + p.offset;
        const auto numeric = test::numeric_gradient(v, p.size, f);
        const double err = test::relative_error(grads.data() + p.offset, numeric, p.size);
        INFO(p.name << " relative error " << err);
        CHECK(err < 1e-6);
    }
    const auto numeric_img = test::numeric_gradient(images.data(), images.size(), f);
    INFO("input image");
    CHECK(test::relative_error(dimages, numeric_img, images.size()) < 1e-6);
}

TEST_CASE("parameters are registered under the official names with PyTorch shapes", "[model]") {
    ViTSimMIM<float, presets::vit_tiny_test> model(random_mask_patch<presets::vit_tiny_test, presets::mask_32px>(), 0);
    std::map<std::string, std::vector<std::int64_t>> shapes;
    for (const auto& p : model.params().params()) shapes[p.name] = p.shape;
    CHECK(shapes.size() == 4 + 2 * 12 + 2 + 1 + 2);
    CHECK(shapes.at("encoder.patch_embed.proj.weight") == std::vector<std::int64_t>{32, 3, 4, 4});
    CHECK(shapes.at("encoder.pos_embed") == std::vector<std::int64_t>{1, 17, 32});
    CHECK(shapes.at("encoder.cls_token") == std::vector<std::int64_t>{1, 1, 32});
    CHECK(shapes.at("encoder.mask_token") == std::vector<std::int64_t>{1, 1, 32});
    CHECK(shapes.at("encoder.blocks.1.attn.qkv.weight") == std::vector<std::int64_t>{96, 32});
    CHECK(shapes.at("encoder.blocks.0.mlp.fc2.weight") == std::vector<std::int64_t>{32, 128});
    CHECK(shapes.at("decoder.0.weight") == std::vector<std::int64_t>{48, 32, 1, 1});
    CHECK(shapes.at("decoder.0.bias") == std::vector<std::int64_t>{48});
}

TEST_CASE("initialisation: truncated normal std 0.02, zero biases, LayerNorm 1/0, seeded", "[model][init]") {
    using M = ViTSimMIM<double, presets::vit_t4_32>;
    M a(random_mask_patch<presets::vit_t4_32, presets::mask_32px>(), 5), b(random_mask_patch<presets::vit_t4_32, presets::mask_32px>(), 5), c(random_mask_patch<presets::vit_t4_32, presets::mask_32px>(), 6);
    CHECK(std::equal(a.params().values(), a.params().values() + a.params().size(), b.params().values()));
    CHECK_FALSE(std::equal(a.params().values(), a.params().values() + a.params().size(), c.params().values()));
    double s = 0, s2 = 0, mx = 0;
    std::size_t n = 0;
    for (const auto& p : a.params().params()) {
        const double* v = a.params().values() + p.offset;
        if (p.init == Init::TruncNormal002) {
            for (std::size_t i = 0; i < p.size; ++i) s += v[i], s2 += v[i] * v[i], mx = std::max(mx, std::abs(v[i])), ++n;
        } else {
            const double want = p.init == Init::Ones ? 1.0 : 0.0;
            for (std::size_t i = 0; i < p.size; ++i) REQUIRE(v[i] == want);
        }
        const bool one_d = p.shape.size() == 1;
        if (one_d || p.name.find("token") != std::string::npos || p.name.find("pos_embed") != std::string::npos) {
            INFO(p.name);
            CHECK_FALSE(p.weight_decay);
        }
    }
    CHECK(s / n == Approx(0).margin(2e-4));
    CHECK(std::sqrt(s2 / n) == Approx(0.02).epsilon(0.01));
    CHECK(mx < 0.02 * 6);
}

TEST_CASE("float and double instantiations agree on the loss", "[model]") {
    constexpr auto C = presets::vit_tiny_test;
    ViTSimMIM<double, C> md(random_mask_patch<C, presets::mask_of<C>()>(), 1);
    ViTSimMIM<float, C> mf(random_mask_patch<C, presets::mask_of<C>()>(), 1);
    auto img = test::random_vector(2 * C.image_numel(), 2);
    std::vector<float> imgf(img.begin(), img.end());
    std::vector<double> mask(2 * C.num_patches());
    md.draw_mask(3, 0, 2, mask.data());
    std::vector<float> maskf(mask.begin(), mask.end());
    const double ld = md.forward(img.data(), mask.data(), 2);
    const float lf = mf.forward(imgf.data(), maskf.data(), 2);
    CHECK(lf == Approx(ld).epsilon(1e-5));
    CHECK(test::relative_error(mf.pred(), md.pred(), md.pred().size()) < 1e-5);
}
