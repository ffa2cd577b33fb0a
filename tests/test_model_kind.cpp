// Self-describing weights: save_weights records which model a file holds (model/model_kind.hpp), the
// header alone tells (io::read_safetensors_metadata), loading into another model says what differs on
// one line, and files without the record (the previous release, PyTorch) still load.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "simmim/io/model_io.hpp"
#include "simmim/simmim.hpp"

using namespace simmim;
namespace fs = std::filesystem;

namespace {
constexpr ViTConfig C = presets::vit_tiny_test;  // 16 px, 3 channels, patch 4, D 32, depth 2, 2 heads, mlp 4

struct TempFile {
    fs::path path = fs::temp_directory_path() / ("simmim_test_model_kind_" + std::to_string(::getpid()) + ".safetensors");
    ~TempFile() { fs::remove(path); }
};
}  // namespace

TEST_CASE("save_weights records the model kind; the header alone reads it back", "[io][model_kind]") {
    TempFile tmp;
    ViTSimMIM<float, C> model(random_mask_patch<C, presets::mask_32px>(), 1);
    io::save_weights(model, tmp.path, {{"simmim.preset", "vit-tiny-test"}, {"note", "x"}});
    const auto meta = io::read_safetensors_metadata(tmp.path);
    // the expected strings are written out by hand: the documented format is the oracle
    CHECK(meta.at("simmim.encoder") == "vit");
    CHECK(meta.at("simmim.encoder.config") ==
          R"({"depth":2,"embed_dim":32,"image_size":16,"in_chans":3,"mlp_ratio":4,"num_heads":2,"patch_size":4})");
    CHECK(meta.at("simmim.geometry") == R"({"image_size":16,"in_chans":3,"mask_grid":4,"out_dim":32,"out_grid":4})");
    CHECK(meta.at("simmim.head") == "linear(resolution=16)");
    CHECK(meta.at("simmim.loss") == "l1,masked,raw,resolution=16");
    CHECK(meta.at("simmim.preset") == "vit-tiny-test");
    CHECK(meta.at("note") == "x");
    CHECK(meta == io::read_safetensors(tmp.path).metadata);  // the whole-file parser agrees

    using Official = OfficialViTSimMIM<float, C>;
    CHECK(Official(random_mask_patch<C, presets::mask_32px>(), 1).metadata().at("simmim.encoder") == "vit-official");
    using Mlp = SimMIM<ViTEncoder<float, C>, MLPHead<float, C, 20, 8>, ReconstructionLoss<float, C, LossSpec{.norm = LossNorm::L2, .region = LossRegion::All, .target = LossTarget::Normalized, .resolution = 8}>, RandomMaskPatch>;
    const auto mlp = Mlp(random_mask_patch<C, presets::mask_32px>(), 1).metadata();
    CHECK(mlp.at("simmim.head") == "mlp(hidden=20,resolution=8)");
    CHECK(mlp.at("simmim.loss") == "l2,all,norm(window=47),resolution=8");
}

TEST_CASE("loading weights of another model names every difference on one line; old files still load", "[io][model_kind]") {
    TempFile tmp;
    ViTSimMIM<float, C> saved(random_mask_patch<C, presets::mask_32px>(), 1);
    io::save_weights(saved, tmp.path);

    SECTION("same model: loads, values equal") {
        ViTSimMIM<float, C> other(random_mask_patch<C, presets::mask_32px>(), 2);
        io::load_weights(other, tmp.path);
        CHECK(std::equal(other.params().values(), other.params().values() + other.params().size(), saved.params().values()));
    }
    SECTION("another encoder form") {
        OfficialViTSimMIM<float, C> official(random_mask_patch<C, presets::mask_32px>(), 2);
        const std::vector<float> before(official.params().values(), official.params().values() + official.params().size());
        CHECK_THROWS_WITH(io::load_weights(official, tmp.path),
                          Catch::Contains("holds another model: simmim.encoder is vit in the file, vit-official in this model") &&
                              !Catch::Contains("\n"));
        CHECK(std::equal(before.begin(), before.end(), official.params().values()));  // untouched
    }
    SECTION("another configuration and head") {
        constexpr ViTConfig wide{16, 3, 4, 32, 2, 4, 4};  // 4 heads: the tensors even have the same shapes
        SimMIM<ViTEncoder<float, wide>, LinearHead<float, wide, 8>, ReconstructionLoss<float, wide, LossSpec{.resolution = 8}>, RandomMaskPatch> m(
            random_mask_patch<wide, presets::mask_32px>(), 2);
        CHECK_THROWS_WITH(io::load_weights(m, tmp.path),
                          Catch::Contains("simmim.encoder.config is {\"depth\":2,\"embed_dim\":32,\"image_size\":16,\"in_chans\":3,"
                                          "\"mlp_ratio\":4,\"num_heads\":2,\"patch_size\":4} in the file") &&
                              Catch::Contains("; simmim.head is linear(resolution=16) in the file, linear(resolution=8) in this model"));
    }
    SECTION("a file without the record (previous release, PyTorch) loads as before") {
        io::TensorFile file;
        io::export_params(file, saved.params());
        io::write_safetensors(tmp.path, file);
        CHECK(io::read_safetensors_metadata(tmp.path).empty());
        ViTSimMIM<float, C> other(random_mask_patch<C, presets::mask_32px>(), 2);
        io::load_weights(other, tmp.path);
        CHECK(std::equal(other.params().values(), other.params().values() + other.params().size(), saved.params().values()));
    }
}

TEST_CASE("read_safetensors_metadata: errors name the file", "[io][model_kind]") {
    TempFile tmp;
    CHECK_THROWS_WITH(io::read_safetensors_metadata(tmp.path), Catch::Contains(tmp.path.string()) && Catch::Contains("cannot open"));
    {
        std::ofstream out(tmp.path, std::ios::binary);
        out.write("\x40\x00\x00\x00\x00\x00\x00\x00{\"__metadata__\"", 23);  // header length 64, 15 bytes follow
    }
    CHECK_THROWS_WITH(io::read_safetensors_metadata(tmp.path), Catch::Contains(tmp.path.string()) && Catch::Contains("header length 64"));
    {
        std::ofstream out(tmp.path, std::ios::binary);
        const std::string header = R"({"__metadata__":{"a":1}})";
        const char len[8] = {static_cast<char>(header.size()), 0, 0, 0, 0, 0, 0, 0};
        out.write(len, 8);
        out << header;
    }
    CHECK_THROWS_WITH(io::read_safetensors_metadata(tmp.path), Catch::Contains("value of key 'a' is not a string"));
}
