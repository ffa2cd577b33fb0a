// Checkpoint round trip: weights, AdamW moments and step survive a save/load exactly, and training
// continued from a loaded checkpoint is bit-identical to training that never stopped.
#include <catch2/catch.hpp>

#include <filesystem>

#include "gradcheck.hpp"
#include "simmim/io/checkpoint.hpp"
#include "simmim/simmim.hpp"

using namespace simmim;
namespace fs = std::filesystem;

namespace {
constexpr ViTConfig kCfg{16, 1, 4, 16, 2, 2, 2};
constexpr MaskSpec kCfgMask{8, 0.5};
using Model = ViTSimMIM<float, kCfg>;
constexpr int kB = 3;

struct Trainer {
    Model model{random_mask_patch<kCfg, kCfgMask>(), 9};
    AdamW<float> opt{model.params()};
    std::vector<float> images = [] {
        std::vector<float> v(kB * kCfg.image_numel());
        Rng rng(4);
        for (auto& x : v) x = float(rng.normal());
        return v;
    }();
    float step(std::int64_t s) {
        std::vector<float> mask(kB * kCfg.num_patches());
        model.draw_mask(1, s, kB, mask.data());
        model.zero_grad();
        const float loss = model.forward(images.data(), mask.data(), kB);
        model.backward();
        clip_grad_norm(model.params(), 5.0);
        opt.step(1e-3);
        return loss;
    }
};

fs::path temp_file(const char* name) { return fs::temp_directory_path() / (std::string(name) + std::to_string(::getpid()) + ".safetensors"); }
}  // namespace

TEST_CASE("checkpoint: save and load restore weights, moments and step exactly; training continues bit-identically", "[checkpoint]") {
    Trainer a;
    for (int s = 0; s < 3; ++s) a.step(s);
    const auto path = temp_file("simmim_ckpt_");
    io::save_checkpoint(path, a.model.params(), a.opt, {{"step", "3"}});

    Trainer b;  // same seed, untrained: differs until loaded
    const auto meta = io::load_checkpoint(path, b.model.params(), b.opt);
    fs::remove(path);
    CHECK(meta.at("step") == "3");
    CHECK(meta.at("format") == io::kCheckpointFormat);
    CHECK(b.opt.steps() == 3);
    CHECK(std::equal(a.model.params().values(), a.model.params().values() + a.model.params().size(), b.model.params().values()));
    CHECK(a.opt.exp_avg() == b.opt.exp_avg());
    CHECK(a.opt.exp_avg_sq() == b.opt.exp_avg_sq());
    for (int s = 3; s < 6; ++s) {
        const float la = a.step(s), lb = b.step(s);
        CHECK(la == lb);  // bitwise: same parameters, same optimizer state, same masks
    }
}

TEST_CASE("checkpoint: a weights-only file or a foreign format is refused with the file named", "[checkpoint]") {
    Trainer a;
    const auto path = temp_file("simmim_weights_");
    io::TensorFile f;
    io::export_params(f, a.model.params());
    io::write_safetensors(path, f);
    CHECK_THROWS_WITH(io::load_checkpoint(path, a.model.params(), a.opt),
                      Catch::Contains(path.string()) && Catch::Contains("not a simmim training checkpoint"));
    fs::remove(path);
}

TEST_CASE("checkpoint: the file doubles as model weights under the official names", "[checkpoint]") {
    Trainer a;
    a.step(0);
    const auto path = temp_file("simmim_ckpt_w_");
    io::save_checkpoint(path, a.model.params(), a.opt, {});
    Model m(random_mask_patch<kCfg, kCfgMask>(), 123);
    io::load_weights(m, path);  // skips the optimizer.* tensors
    fs::remove(path);
    CHECK(std::equal(a.model.params().values(), a.model.params().values() + a.model.params().size(), m.params().values()));
}
