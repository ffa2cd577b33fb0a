// The llm.c-style reference check: tests/pytorch/make_fixture.py ran the official-formulation model in
// PyTorch (float64 and float32) on fixed weights, images and mask; every tensor is checked by name.
#include <catch2/catch.hpp>

#include "gradcheck.hpp"
#include "simmim/io/model_io.hpp"
#include "simmim/optim/adamw.hpp"
#include "simmim/simmim.hpp"

#ifndef SIMMIM_SOURCE_DIR
#error "SIMMIM_SOURCE_DIR must point at the source tree (set by tests/CMakeLists.txt)"
#endif

using namespace simmim;

namespace {
constexpr ViTConfig kCfg = presets::vit_tiny_test;
constexpr int kBatch = 2;

const io::TensorFile& fixture() {
    static const io::TensorFile f = io::read_safetensors(SIMMIM_SOURCE_DIR "/tests/fixtures/vit_tiny.safetensors");
    return f;
}

template <class T>
struct Loaded {
    ViTSimMIM<T, kCfg> model{random_mask_patch<kCfg, presets::mask_32px>(), 0};
    std::vector<T> images, mask;
    Loaded() {
        io::import_params(model.params(), fixture(), {.allow_unexpected = true});
        images = fixture().at("images").template to<T>();
        mask = fixture().at("mask").template to<T>();
        REQUIRE(images.size() == kBatch * kCfg.image_numel());
        REQUIRE(mask.size() == kBatch * kCfg.num_patches());
    }
};

/// The AdamW protocol of the fixture: 5 steps, lr 1e-3, loss recorded before each update.
template <class T>
std::vector<double> adamw_losses(Loaded<T>& m) {
    AdamW<T> opt(m.model.params(), {0.9, 0.999, 1e-8, 0.05});
    std::vector<double> losses;
    for (int s = 0; s < 5; ++s) {
        m.model.zero_grad();
        losses.push_back(double(m.model.forward(m.images.data(), m.mask.data(), kBatch)));
        m.model.backward();
        opt.step(1e-3);
    }
    return losses;
}
}  // namespace

TEST_CASE("double: prediction, loss and every parameter gradient match PyTorch float64 (rel. L2 <= 1e-10)", "[fixture]") {
    Loaded<double> m;
    m.model.zero_grad();
    const double loss = m.model.forward(m.images.data(), m.mask.data(), kBatch);
    m.model.backward();
    const double ref_loss = fixture().at("loss").to<double>().at(0);
    CHECK(std::abs(loss - ref_loss) / ref_loss <= 1e-10);
    const auto pred = fixture().at("pred").to<double>();
    CHECK(test::relative_error(m.model.pred(), pred, pred.size()) <= 1e-10);
    for (const auto& p : m.model.params().params()) {
        const auto ref = fixture().at("grad." + p.name).to<double>();
        const double err = test::relative_error(m.model.params().grads() + p.offset, ref, p.size);
        INFO("grad." << p.name << " relative error " << err);
        CHECK(err <= 1e-10);
    }
}

TEST_CASE("float: prediction and loss match PyTorch float32, gradients match float64 (rel. L2 <= 1e-4)", "[fixture]") {
    Loaded<float> m;
    m.model.zero_grad();
    const float loss = m.model.forward(m.images.data(), m.mask.data(), kBatch);
    m.model.backward();
    const double ref_loss = fixture().at("loss32").to<double>().at(0);
    CHECK(std::abs(loss - ref_loss) / ref_loss <= 1e-4);
    const auto pred = fixture().at("pred32").to<double>();
    CHECK(test::relative_error(m.model.pred(), pred, pred.size()) <= 1e-4);
    for (const auto& p : m.model.params().params()) {
        const auto ref = fixture().at("grad." + p.name).to<double>();
        const double err = test::relative_error(m.model.params().grads() + p.offset, ref, p.size);
        INFO("grad." << p.name << " relative error " << err);
        CHECK(err <= 1e-4);
    }
}

TEST_CASE("AdamW with the official parameter groups reproduces PyTorch's 5-step losses", "[fixture][optim]") {
    SECTION("double") {
        Loaded<double> m;
        const auto losses = adamw_losses(m);
        const auto ref = fixture().at("adamw_losses").to<double>();
        REQUIRE(ref.size() == 5);
        for (int s = 0; s < 5; ++s) CHECK(std::abs(losses[s] - ref[s]) / ref[s] <= 1e-10);
        // parameters after the 5 updates
        for (const char* name : {"encoder.mask_token", "encoder.blocks.0.attn.qkv.weight", "decoder.0.bias"}) {
            const auto* info = m.model.params().find(name);
            REQUIRE(info != nullptr);
            const auto want = fixture().at(std::string("adamw_final.") + name).to<double>();
            INFO(name);
            CHECK(test::relative_error(m.model.params().values() + info->offset, want, info->size) <= 1e-10);
        }
    }
    SECTION("float") {
        Loaded<float> m;
        const auto losses = adamw_losses(m);
        const auto ref = fixture().at("adamw_losses32").to<double>();
        for (int s = 0; s < 5; ++s) CHECK(std::abs(losses[s] - ref[s]) / ref[s] <= 1e-4);
    }
}
