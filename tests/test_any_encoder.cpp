// AnyEncoder (model/any_encoder.hpp): a weights file of a preset model, in either ViT form, with or without
// the simmim.* metadata, opens as the right encoder and encodes bit for bit as the concrete encoder holding
// the same weights; the PyTorch fixture's state dict opens as vit-tiny-test and its features, through the
// fixture's decoder, give PyTorch's float32 prediction; files that hold no usable encoder fail with one line
// naming the file and what is wrong.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <unistd.h>

#include "gradcheck.hpp"
#include "simmim/io/model_io.hpp"
#include "simmim/model/any_encoder.hpp"
#include "simmim/simmim.hpp"

#ifndef SIMMIM_SOURCE_DIR
#error "SIMMIM_SOURCE_DIR must point at the source tree (set by tests/CMakeLists.txt)"
#endif

using namespace simmim;
namespace fs = std::filesystem;

namespace {

constexpr ViTConfig kTiny = presets::vit_tiny_test;

struct TempDir {
    fs::path path = fs::temp_directory_path() / ("simmim_any_encoder_" + std::to_string(::getpid()));
    TempDir() { fs::create_directories(path); }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

/// A float model of preset C with every parameter moved off its initial value (so LayerNorm weights,
/// biases, tokens and the bias table all matter).
template <class Model>
std::unique_ptr<Model> perturbed_model(std::uint64_t seed) {
    constexpr ViTConfig C = Model::encoder_type::config;
    auto model = std::make_unique<Model>(random_mask_patch<C, presets::mask_of<C>()>(), seed);
    Rng rng(seed + 100);
    for (std::size_t i = 0; i < model->params().size(); ++i) model->params().values()[i] += 0.05f * float(rng.normal());
    return model;
}

/// `file` without its simmim.* metadata (a file of the previous release).
void strip_simmim_metadata(const fs::path& file) {
    auto f = io::read_safetensors(file);
    std::erase_if(f.metadata, [](const auto& kv) { return kv.first.starts_with("simmim."); });
    io::write_safetensors(file, f);
}

std::vector<float> float_vector(std::size_t n, std::uint64_t seed) {
    const auto v = test::random_vector(n, seed);
    return {v.begin(), v.end()};
}

/// The message of the EncoderFileError (or SafetensorsError) that body() throws; "" if none.
template <class Body>
std::string error_of(Body&& body) {
    try {
        body();
    } catch (const EncoderFileError& e) {
        return e.what();
    } catch (const io::SafetensorsError& e) {
        return e.what();
    }
    return {};
}

/// Opens `path` and checks identity and encode() against the concrete encoder of `model`.
template <class Model>
void check_opens_as(const Model& model, const fs::path& path, const std::string& form, const std::string& preset, bool from_metadata) {
    using Enc = typename Model::encoder_type;
    constexpr EncoderGeometry G = Enc::geometry;
    const AnyEncoder any = AnyEncoder::open(path);
    CHECK(any.identity().form == form);
    CHECK(any.identity().preset == preset);
    CHECK(any.identity().from_metadata == from_metadata);
    CHECK(any.description() == form + " " + preset + (from_metadata ? " (from metadata)" : " (inferred from tensor names)"));
    CHECK(any.geometry() == G);
    CHECK_FALSE(any.params().has_gradients());
    std::size_t encoder_params = 0;
    for (const auto& p : model.params().params())
        if (p.name.starts_with("encoder.")) encoder_params += p.size;
    CHECK(any.parameter_count() == encoder_params);

    const int B = 3;
    const auto images = float_vector(static_cast<std::size_t>(B) * G.image_numel(), 5);
    std::vector<float> mask(static_cast<std::size_t>(B) * G.mask_tokens(), 0.f);
    for (std::size_t i = 0; i < mask.size(); i += 3) mask[i] = 1.f;
    const std::size_t n = static_cast<std::size_t>(B) * G.out_tokens() * G.out_dim;
    for (const float* m : {static_cast<const float*>(nullptr), static_cast<const float*>(mask.data())}) {
        std::vector<float> got(n, -1.f), want(n, -2.f);
        any.encode(got.data(), images.data(), m, B);
        model.encoder().encode(want.data(), images.data(), m, B);
        INFO((m ? "with a mask" : "no mask"));
        CHECK(got == want);  // bit for bit
    }
    // the features depend on the loaded weights: an encoder of the same type with other weights differs
    auto other = perturbed_model<Model>(999);
    std::vector<float> a(n), b(n);
    any.encode(a.data(), images.data(), nullptr, B);
    other->encoder().encode(b.data(), images.data(), nullptr, B);
    CHECK(a != b);
}

}  // namespace

TEST_CASE("AnyEncoder: weights of the common ViT open as vit vit-tiny-test, encode bit for bit", "[any_encoder]") {
    TempDir dir;
    const auto model = perturbed_model<ViTSimMIM<float, kTiny>>(1);
    const auto path = dir.path / "common.safetensors";
    io::save_weights(*model, path);
    SECTION("as save_weights writes them") {
        const bool meta = io::read_safetensors(path).metadata.count("simmim.encoder") > 0;
        check_opens_as(*model, path, "vit", "vit-tiny-test", meta);
    }
    SECTION("without simmim.* metadata (inferred from the tensors)") {
        strip_simmim_metadata(path);
        check_opens_as(*model, path, "vit", "vit-tiny-test", false);
    }
}

TEST_CASE("AnyEncoder: weights of the official ViT open as vit-official vit-tiny-test, encode bit for bit", "[any_encoder]") {
    TempDir dir;
    const auto model = perturbed_model<OfficialViTSimMIM<float, kTiny>>(2);
    const auto path = dir.path / "official.safetensors";
    io::save_weights(*model, path);
    SECTION("as save_weights writes them") {
        const bool meta = io::read_safetensors(path).metadata.count("simmim.encoder") > 0;
        check_opens_as(*model, path, "vit-official", "vit-tiny-test", meta);
    }
    SECTION("without simmim.* metadata (inferred from the tensors)") {
        strip_simmim_metadata(path);
        check_opens_as(*model, path, "vit-official", "vit-tiny-test", false);
    }
}

TEST_CASE("AnyEncoder: a training checkpoint (optimizer moments, integer buffers, other metadata) opens", "[any_encoder]") {
    TempDir dir;
    const auto model = perturbed_model<OfficialViTSimMIM<float, presets::vit_m4_32_c1>>(3);
    io::TensorFile file;
    io::export_params(file, model->params());
    io::export_params(file, model->params(), /*gradients=*/true, "optimizer.exp_avg.");
    const std::vector<std::int64_t> index(static_cast<std::size_t>(65 * 65), 0);
    file.set<std::int64_t>("encoder.rel_pos_bias.relative_position_index", index, {65, 65});  // PyTorch's buffer
    file.metadata = {{"format", "simmim-checkpoint-1"}, {"model", "vit-m4-32-c1"}, {"step", "2"}};
    const auto path = dir.path / "checkpoint.safetensors";
    io::write_safetensors(path, file);
    check_opens_as(*model, path, "vit-official", "vit-m4-32-c1", false);
}

TEST_CASE("AnyEncoder: with simmim.* metadata the form and preset come from it", "[any_encoder]") {
    TempDir dir;
    const auto model = perturbed_model<OfficialViTSimMIM<float, kTiny>>(4);
    io::TensorFile file;
    io::export_params(file, model->params());
    const auto meta = [&](std::string form, std::string config) {
        return std::map<std::string, std::string>{{"simmim.encoder", std::move(form)},
                                                  {"simmim.encoder.config", std::move(config)},
                                                  {"simmim.geometry", geometry_json(kTiny.geometry())},
                                                  {"simmim.head", "linear"},
                                                  {"simmim.loss", "masked l1"}};
    };
    const auto path = dir.path / "meta.safetensors";
    SECTION("matching metadata") {
        file.metadata = meta("vit-official", config_json(kTiny));
        io::write_safetensors(path, file);
        check_opens_as(*model, path, "vit-official", "vit-tiny-test", true);
        file.metadata["simmim.preset"] = "vit-tiny-test";
        io::write_safetensors(path, file);
        check_opens_as(*model, path, "vit-official", "vit-tiny-test", true);
    }
    SECTION("a configuration no preset has: one line naming the config and the presets") {
        ViTConfig c = kTiny;
        c.num_heads = 4;
        file.metadata = meta("vit-official", config_json(c));
        io::write_safetensors(path, file);
        const std::string e = error_of([&] { (void)AnyEncoder::open(path); });
        INFO(e);
        CHECK(e.starts_with(path.string() + ": "));
        CHECK(e.find(config_json(c)) != std::string::npos);
        CHECK(e.find("none of the compiled presets (vit-t4-32, ") != std::string::npos);
        CHECK(e.find('\n') == std::string::npos);
    }
    SECTION("metadata that names the other form: the tensors disagree") {
        file.metadata = meta("vit", config_json(kTiny));
        io::write_safetensors(path, file);
        const std::string e = error_of([&] { (void)AnyEncoder::open(path); });
        INFO(e);
        CHECK(e.starts_with(path.string() + ": holds a vit vit-tiny-test encoder by its metadata, but tensor 'encoder.pos_embed' is missing"));
    }
    SECTION("an encoder this build cannot run, a malformed config, a geometry that disagrees") {
        for (const auto& [m, fragment] : std::vector<std::pair<std::map<std::string, std::string>, std::string>>{
                 {meta("swin", config_json(kTiny)), "'simmim.encoder' is 'swin', an encoder this build cannot run"},
                 {meta("vit-official", "{\"depth\":2}"), "'simmim.encoder.config' has no integer 'image_size'"},
                 {meta("vit-official", "not json"), "'simmim.encoder.config' is not a JSON object"},
                 {meta("vit-official",
                       [&] {
                           auto j = nlohmann::json::parse(config_json(kTiny));
                           j["qkv_bias"] = 1;
                           return j.dump();
                       }()),
                  "'simmim.encoder.config' has the field 'qkv_bias' this build does not know"},
                 {[&] {
                      auto x = meta("vit-official", config_json(kTiny));
                      x["simmim.geometry"] = geometry_json(presets::vit_t4_32.geometry());
                      return x;
                  }(),
                  "'simmim.geometry' {\"image_size\":32"}}) {
            file.metadata = m;
            io::write_safetensors(path, file);
            const std::string e = error_of([&] { (void)AnyEncoder::open(path); });
            INFO(e);
            CHECK(e.starts_with(path.string() + ": "));
            CHECK(e.find(fragment) != std::string::npos);
        }
    }
}

TEST_CASE("AnyEncoder: every small preset in both forms is recognised from its tensors alone", "[any_encoder]") {
    for (const auto& p : presets::all) {
        for (const std::string form : {"vit", "vit-official"}) {
            io::TensorFile file;
            std::size_t numel = 0;
            dispatch_preset(p.name, [&]<ViTConfig C>() {
                for (const auto& info : detail::expected_params<C>(form)) {
                    numel += info.size;
                    if (numel > 6'000'000) return;  // the 224-px S and B presets: too large to build here
                    file.set<float>(info.name, std::vector<float>(info.size, 0.5f), info.shape);
                }
                file.set<float>("decoder.0.weight", std::vector<float>(4, 0.f), {4});
            });
            if (numel > 6'000'000) continue;
            file.source = "mem";
            INFO(p.name << " " << form);
            const EncoderIdentity id = identify_encoder(file);
            CHECK(id.preset == p.name);
            CHECK(id.form == form);
            CHECK(id.config == p.config);
            CHECK_FALSE(id.from_metadata);
        }
    }
}

TEST_CASE("AnyEncoder: the PyTorch fixture's state dict opens as vit-tiny-test; features through its decoder give PyTorch's prediction",
          "[any_encoder][fixture]") {
    const fs::path path = SIMMIM_SOURCE_DIR "/tests/fixtures/vit_tiny.safetensors";
    const AnyEncoder any = AnyEncoder::open(path);  // F64 tensors, no simmim.* metadata, inputs and outputs alongside
    CHECK(any.description() == "vit vit-tiny-test (inferred from tensor names)");
    const auto fx = io::read_safetensors(path);
    const auto images64 = fx.at("images").to<double>(), mask64 = fx.at("mask").to<double>();
    const std::vector<float> images(images64.begin(), images64.end()), mask(mask64.begin(), mask64.end());
    constexpr int B = 2, g = kTiny.grid(), p = kTiny.patch_size, D = kTiny.embed_dim, C = kTiny.in_chans, S = kTiny.image_size;
    std::vector<float> features(static_cast<std::size_t>(B) * g * g * D);
    any.encode(features.data(), images.data(), mask.data(), B);
    // the decoder, written out: 1x1 conv D -> C p p, then PixelShuffle(p)
    const auto w = fx.at("decoder.0.weight").to<float>(), bias = fx.at("decoder.0.bias").to<float>();
    std::vector<double> pred(static_cast<std::size_t>(B) * C * S * S);
    for (int b = 0; b < B; ++b)
        for (int gy = 0; gy < g; ++gy)
            for (int gx = 0; gx < g; ++gx)
                for (int o = 0; o < C * p * p; ++o) {
                    float acc = bias[static_cast<std::size_t>(o)];
                    for (int d = 0; d < D; ++d)
                        acc += w[static_cast<std::size_t>(o) * D + d] * features[((static_cast<std::size_t>(b) * g + gy) * g + gx) * D + d];
                    const int c = o / (p * p), i = (o / p) % p, j = o % p;
                    pred[((static_cast<std::size_t>(b) * C + c) * S + gy * p + i) * S + gx * p + j] = acc;
                }
    const auto want = fx.at("pred32").to<double>();
    REQUIRE(want.size() == pred.size());
    CHECK(test::relative_error(pred, want, want.size()) <= 1e-4);
}

TEST_CASE("AnyEncoder: files without a usable encoder fail with one line naming the file and the problem", "[any_encoder]") {
    TempDir dir;
    const auto model = perturbed_model<ViTSimMIM<float, kTiny>>(5);
    io::TensorFile file;
    io::export_params(file, model->params());
    const auto path = dir.path / "bad.safetensors";
    const auto error_for = [&](const io::TensorFile& f) {
        io::write_safetensors(path, f);
        return error_of([&] { (void)AnyEncoder::open(path); });
    };
    SECTION("no encoder tensors") {
        io::TensorFile decoder_only;
        for (const auto& n : file.names())
            if (!n.starts_with("encoder.")) decoder_only.set(n, file.at(n));
        const std::string e = error_for(decoder_only);
        INFO(e);
        CHECK(e.starts_with(path.string() + ": no encoder tensors (no tensor name starts with 'encoder.'; 2 tensors, the first 'decoder.0.weight')"));
    }
    SECTION("a truncated tensor shape") {
        const std::string name = "encoder.blocks.1.mlp.fc1.weight";  // (128, 32) -> (127, 32)
        const auto v = file.at(name).to<float>();
        file.set<float>(name, std::span<const float>(v.data(), v.size() - 32), {127, 32});
        const std::string e = error_for(file);
        INFO(e);
        CHECK(e.starts_with(path.string() + ": its vit encoder tensors (dim 32, 3 channels, patch 4, 2 blocks) match none of the compiled presets"));
        CHECK(e.find("; as vit-tiny-test: tensor 'encoder.blocks.1.mlp.fc1.weight' has shape [127, 32], expected [128, 32]") != std::string::npos);
        CHECK(e.find('\n') == std::string::npos);
    }
    SECTION("a truncated tensor shape in a file with metadata") {
        file.metadata = model->metadata();
        const std::string name = "encoder.blocks.0.attn.qkv.weight";  // (96, 32) -> (95, 32)
        const auto v = file.at(name).to<float>();
        file.set<float>(name, std::span<const float>(v.data(), v.size() - 32), {95, 32});
        const std::string e = error_for(file);
        INFO(e);
        CHECK(e == path.string() + ": holds a vit vit-tiny-test encoder by its metadata, but tensor 'encoder.blocks.0.attn.qkv.weight' has shape "
                                   "[95, 32], expected [96, 32]");
    }
    SECTION("a block too many") {
        for (const char* suffix : {"norm1.weight", "norm1.bias"})
            file.set<float>(std::string("encoder.blocks.2.") + suffix, std::vector<float>(32, 1.f), {32});
        const std::string e = error_for(file);
        INFO(e);
        CHECK(e.find("3 blocks) match none of the compiled presets") != std::string::npos);
    }
    SECTION("a model not among the presets: the official PyTorch fixture (dim 24, 3 heads)") {
        const fs::path fixture = SIMMIM_SOURCE_DIR "/tests/fixtures/vit_official_tiny.safetensors";
        const std::string e = error_of([&] { (void)AnyEncoder::open(fixture); });
        INFO(e);
        CHECK(e.starts_with(fixture.string() + ": its vit-official encoder tensors (dim 24, 3 channels, patch 4, 2 blocks) match none"));
    }
    SECTION("not a safetensors file, or no file") {
        {
            std::ofstream(path) << "hello";
        }
        const std::string e = error_of([&] { (void)AnyEncoder::open(path); });
        INFO(e);
        CHECK(e.find(path.string()) != std::string::npos);
        CHECK(e.find("shorter than the 8-byte header length") != std::string::npos);
        const auto missing = dir.path / "missing.safetensors";
        const std::string m = error_of([&] { (void)AnyEncoder::open(missing); });
        INFO(m);
        CHECK(m.find(missing.string()) != std::string::npos);
        CHECK(m.find("cannot open") != std::string::npos);
    }
}

TEST_CASE("ParamArena::allocate(false) allocates the values only; grads() is null", "[any_encoder][arena]") {
    for (const bool with_gradients : {true, false}) {
        ParamArena<float> arena;
        (void)arena.add<Shape<1000>>("w", Init::Ones, false);
        const std::int64_t before = aligned_bytes_in_use();  // AlignedAllocator's count (core/tensor.hpp)
        arena.allocate(with_gradients);
        INFO("with_gradients " << with_gradients);
        CHECK(aligned_bytes_in_use() - before == (with_gradients ? 8000 : 4000));
        CHECK(arena.allocated());
        CHECK(arena.has_gradients() == with_gradients);
        CHECK((arena.grads() != nullptr) == with_gradients);
        arena.initialize(3);  // initialises the values; zeroes gradients only when there are any
        CHECK(arena.values()[999] == 1.f);
    }
}
