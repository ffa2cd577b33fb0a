// End-to-end checks of the simmim_reconstruct command-line contract, with the PyTorch fixture as oracle:
// weights written by PyTorch load and give PyTorch's loss, prediction and gradients.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sys/wait.h>
#include <unistd.h>
#include <sstream>

#include "gradcheck.hpp"
#include "simmim/io/model_io.hpp"
#include "simmim/simmim.hpp"

#ifndef SIMMIM_BINARY_DIR
#error "SIMMIM_BINARY_DIR must point at the build tree (set by tests/CMakeLists.txt)"
#endif

using namespace simmim;
namespace fs = std::filesystem;

namespace {

const fs::path kBinary = fs::path(SIMMIM_BINARY_DIR) / "examples" / "simmim_reconstruct";

struct Run {
    int code;
    std::string output;  // stdout + stderr
};

Run run(const std::string& args) {
    REQUIRE(fs::exists(kBinary));
    const fs::path log = fs::temp_directory_path() / ("simmim_cli_" + std::to_string(::getpid()) + ".log");
    const int status = std::system((kBinary.string() + " " + args + " > " + log.string() + " 2>&1").c_str());
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    fs::remove(log);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ss.str()};
}

struct TempDir {
    fs::path path = fs::temp_directory_path() / ("simmim_cli_" + std::to_string(::getpid()) + "_" + std::to_string(std::rand()));
    TempDir() { fs::create_directories(path); }
    ~TempDir() { fs::remove_all(path); }
    std::string operator/(const std::string& name) const { return (path / name).string(); }
};

const io::TensorFile& fixture() {
    static const io::TensorFile f = io::read_safetensors(SIMMIM_SOURCE_DIR "/tests/fixtures/vit_tiny.safetensors");
    return f;
}

/// Writes the fixture's PyTorch weights as a plain weights file (F32, official names) and its batch as IN.
void write_fixture_inputs(const TempDir& dir, bool with_mask) {
    io::TensorFile weights;
    for (const auto& name : fixture().names())
        if (name.rfind("encoder.", 0) == 0 || name.rfind("decoder.", 0) == 0) {
            const auto v = fixture().at(name).to<float>();
            weights.set<float>(name, std::span<const float>(v), fixture().at(name).shape);
        }
    io::write_safetensors(dir / "w.safetensors", weights);
    io::TensorFile in;
    const auto images = fixture().at("images").to<float>();
    in.set<float>("images", std::span<const float>(images), {2, 3, 16, 16});
    if (with_mask) {
        const auto mask = fixture().at("mask").to<std::uint8_t>();
        in.set<std::uint8_t>("mask", std::span<const std::uint8_t>(mask), {2, 4, 4});
    }
    io::write_safetensors(dir / "in.safetensors", in);
}

}  // namespace

TEST_CASE("reconstruct: PyTorch weights give PyTorch's prediction, loss and gradients", "[cli]") {
    TempDir dir;
    write_fixture_inputs(dir, true);
    const auto r = run("--model vit-tiny-test --weights " + dir / "w.safetensors" + " --input " + dir / "in.safetensors" +
                       " --output " + dir / "out.safetensors" + " --grads --png " + dir / "grid.png");
    INFO(r.output);
    REQUIRE(r.code == 0);
    const auto out = io::read_safetensors(dir / "out.safetensors");
    CHECK(out.at("pred").dtype == io::DType::F32);
    CHECK(out.at("pred").shape == std::vector<std::int64_t>{2, 3, 16, 16});
    CHECK(out.at("mask").shape == std::vector<std::int64_t>{2, 4, 4});
    CHECK(out.at("loss").numel() == 1);
    const auto pred = out.at("pred").to<double>(), ref = fixture().at("pred32").to<double>();
    CHECK(test::relative_error(pred, ref, ref.size()) <= 1e-4);
    CHECK(out.at("loss").to<double>()[0] == Approx(fixture().at("loss").to<double>()[0]).epsilon(1e-4));
    CHECK(out.at("mask").to<double>() == fixture().at("mask").to<double>());
    std::size_t grads = 0;
    for (const auto& name : fixture().names())
        if (name.rfind("grad.", 0) == 0) {
            ++grads;
            INFO(name);
            REQUIRE(out.contains(name));
            const auto g = out.at(name).to<double>(), want = fixture().at(name).to<double>();
            CHECK(out.at(name).shape == fixture().at(name).shape);
            CHECK(test::relative_error(g, want, want.size()) <= 1e-4);
        }
    CHECK(grads == 33);
    CHECK(fs::file_size(dir / "grid.png") > 100);
}

TEST_CASE("reconstruct: without a mask, one is drawn from --seed with the official generator", "[cli]") {
    TempDir dir;
    write_fixture_inputs(dir, false);
    const std::string base = "--model vit-tiny-test --weights " + dir / "w.safetensors" + " --input " + dir / "in.safetensors";
    REQUIRE(run(base + " --seed 3 --output " + dir / "a.safetensors").code == 0);
    REQUIRE(run(base + " --seed 3 --output " + dir / "b.safetensors").code == 0);
    REQUIRE(run(base + " --seed 4 --output " + dir / "c.safetensors").code == 0);
    const auto a = io::read_safetensors(dir / "a.safetensors").at("mask").to<float>();
    const auto b = io::read_safetensors(dir / "b.safetensors").at("mask").to<float>();
    std::vector<float> expected(a.size());
    random_mask_patch<presets::vit_tiny_test, presets::mask_32px>().generate(3, 0, 2, expected.data());
    CHECK(a == b);
    CHECK(a == expected);
    for (int s = 0; s < 2; ++s) CHECK(std::accumulate(a.begin() + s * 16, a.begin() + (s + 1) * 16, 0.f) == 12.f);  // 3 of 4 mask patches
}

TEST_CASE("reconstruct: bad input gives a one-line error naming what is wrong, never a crash", "[cli]") {
    TempDir dir;
    write_fixture_inputs(dir, true);
    const std::string w = " --weights " + dir / "w.safetensors", in = " --input " + dir / "in.safetensors",
                      out = " --output " + dir / "o.safetensors";
    SECTION("unknown preset: usage error, exit 2") {
        const auto r = run("--model vit-nope" + w + in + out);
        CHECK(r.code == 2);
        CHECK_THAT(r.output, Catch::Contains("unknown model preset 'vit-nope'"));
    }
    SECTION("missing required option: exit 2") { CHECK(run("--model vit-tiny-test" + w + in).code == 2); }
    SECTION("weights for another preset: names the tensor and both shapes") {
        const auto r = run("--model vit-t4-32" + w + in + out);
        CHECK(r.code == 1);
        CHECK_THAT(r.output, Catch::Contains("encoder.") && Catch::Contains("expected"));
    }
    SECTION("images of the wrong shape") {
        io::TensorFile bad;
        std::vector<float> img(2 * 3 * 8 * 8);
        bad.set<float>("images", std::span<const float>(img), {2, 3, 8, 8});
        io::write_safetensors(dir / "bad.safetensors", bad);
        const auto r = run("--model vit-tiny-test" + w + " --input " + dir / "bad.safetensors" + out);
        CHECK(r.code == 1);
        CHECK_THAT(r.output, Catch::Contains("'images'") && Catch::Contains("[2, 3, 8, 8]"));
    }
    SECTION("truncated weights file") {
        const auto bytes = fs::file_size(dir / "w.safetensors");
        fs::resize_file(dir / "w.safetensors", bytes / 2);
        const auto r = run("--model vit-tiny-test" + w + in + out);
        CHECK(r.code == 1);
        CHECK_THAT(r.output, Catch::Contains("w.safetensors"));
    }
    SECTION("a missing parameter is named") {
        io::TensorFile weights = io::read_safetensors(dir / "w.safetensors");
        io::TensorFile partial;
        for (const auto& n : weights.names())
            if (n != "encoder.norm.bias") partial.set(n, weights.at(n));
        io::write_safetensors(dir / "w.safetensors", partial);
        const auto r = run("--model vit-tiny-test" + w + in + out);
        CHECK(r.code == 1);
        CHECK_THAT(r.output, Catch::Contains("missing tensor 'encoder.norm.bias'"));
    }
}

TEST_CASE("reconstruct: the contract holds for the small presets with their own weights", "[cli]") {
    TempDir dir;
    auto check_preset = [&]<ViTConfig C>(const std::string& name) {
        ViTSimMIM<float, C> model(random_mask_patch<C, presets::mask_of<C>()>(), 1);
        io::save_weights(model, dir / "w.safetensors");
        std::vector<float> img(C.image_numel());
        Rng rng(2);
        for (auto& v : img) v = float(rng.normal());
        io::TensorFile in;
        in.set<float>("images", std::span<const float>(img), {1, C.in_chans, C.image_size, C.image_size});
        io::write_safetensors(dir / "in.safetensors", in);
        const auto r = run("--model " + name + " --weights " + dir / "w.safetensors" + " --input " + dir / "in.safetensors" +
                           " --output " + dir / "o.safetensors --seed 5");
        INFO(name << ": " << r.output);
        REQUIRE(r.code == 0);
        const auto out = io::read_safetensors(dir / "o.safetensors");
        CHECK(out.at("pred").shape == std::vector<std::int64_t>{1, C.in_chans, C.image_size, C.image_size});
        std::vector<float> mask(C.num_patches());
        model.draw_mask(5, 0, 1, mask.data());
        CHECK(out.at("mask").to<float>() == mask);
        const float loss = model.forward(img.data(), mask.data(), 1);
        CHECK(out.at("loss").to<float>()[0] == Approx(loss).epsilon(1e-5));
    };
    check_preset.operator()<presets::vit_t4_32>("vit-t4-32");
    check_preset.operator()<presets::vit_t4_32_c1>("vit-t4-32-c1");
    check_preset.operator()<presets::vit_t16_224>("vit-t16-224");
}
