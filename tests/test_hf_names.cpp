// Tests of simmim/io/hf_names.hpp (official SimMIM names <-> Hugging Face transformers names) and of its hook in
// io/model_io.hpp (read_weights / load_weights accept HF-named files).
//
// Oracles: the HF names below are written down by hand from transformers' source
// (models/vit/modeling_vit.py: ViTForMaskedImageModeling; models/swin/modeling_swin.py:
// SwinForMaskedImageModeling; models/swin/convert_swin_simmim_to_pytorch.py), with the shapes those modules
// give for the tiny configurations; the official names of the ViT come from simmim's own encoders (their
// ParamArena), those of the Swin from the table of microsoft/SimMIM's state dict. Values are distinct per
// element, so every slice and every round trip is checked value by value.
#include <simmim/io/hf_names.hpp>
#include <simmim/io/model_io.hpp>
#include <simmim/model/linear_head.hpp>
#include <simmim/model/vit_encoder.hpp>
#include <simmim/model/vit_official.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

namespace {

using namespace simmim;
using namespace simmim::io;
using Shape_t = std::vector<std::int64_t>;

// Tiny ViT: image 4, 3 channels, patch 2 (L = 4, N = 5), D = 4, depth 2, 2 heads, MLP 8; decoder 2*2*3 = 12.
constexpr ViTConfig kTiny{4, 3, 2, 4, 2, 2, 2};

/// Names and shapes a model registers, in order.
std::vector<std::pair<std::string, Shape_t>> arena_names(const ParamArena<float>& arena) {
    std::vector<std::pair<std::string, Shape_t>> out;
    for (const auto& p : arena.params()) out.push_back({p.name, p.shape});
    return out;
}

std::vector<std::pair<std::string, Shape_t>> common_vit_names() {
    ParamArena<float> arena;
    ViTEncoder<float, kTiny> encoder(arena);
    LinearHead<float, kTiny> head(arena);
    return arena_names(arena);
}

std::vector<std::pair<std::string, Shape_t>> official_vit_names() {
    ParamArena<float> arena;
    OfficialViTEncoder<float, kTiny> encoder(arena);
    LinearHead<float, kTiny> head(arena);
    return arena_names(arena);
}

std::int64_t numel(const Shape_t& shape) {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
}

/// A file holding `names` with distinct float values (a running counter); tensors in `as_double` are F64.
TensorFile make_file(const std::vector<std::pair<std::string, Shape_t>>& names, const std::vector<std::string>& as_double = {}) {
    TensorFile file;
    double next = 1.0;
    for (const auto& [name, shape] : names) {
        const auto n = static_cast<std::size_t>(numel(shape));
        if (std::find(as_double.begin(), as_double.end(), name) != as_double.end()) {
            std::vector<double> v(n);
            for (auto& x : v) x = (next += 1.0) + 0.25;
            file.set<double>(name, std::span<const double>(v), shape);
        } else {
            std::vector<float> v(n);
            for (auto& x : v) x = static_cast<float>(next += 1.0);
            file.set<float>(name, std::span<const float>(v), shape);
        }
    }
    return file;
}

/// The expected HF ViTForMaskedImageModeling names of the tiny ViT, in the order the official ones map to them.
std::vector<std::pair<std::string, Shape_t>> expected_hf_vit() {
    std::vector<std::pair<std::string, Shape_t>> e = {
        {"vit.embeddings.cls_token", {1, 1, 4}},
        {"vit.embeddings.position_embeddings", {1, 5, 4}},
        {"vit.embeddings.patch_embeddings.projection.weight", {4, 3, 2, 2}},
        {"vit.embeddings.patch_embeddings.projection.bias", {4}},
    };
    for (int i = 0; i < 2; ++i) {
        const std::string l = "vit.encoder.layer." + std::to_string(i) + ".";
        const std::vector<std::pair<std::string, Shape_t>> layer = {
            {l + "layernorm_before.weight", {4}},
            {l + "layernorm_before.bias", {4}},
            {l + "attention.attention.query.weight", {4, 4}},
            {l + "attention.attention.key.weight", {4, 4}},
            {l + "attention.attention.value.weight", {4, 4}},
            {l + "attention.attention.query.bias", {4}},
            {l + "attention.attention.key.bias", {4}},
            {l + "attention.attention.value.bias", {4}},
            {l + "attention.output.dense.weight", {4, 4}},
            {l + "attention.output.dense.bias", {4}},
            {l + "layernorm_after.weight", {4}},
            {l + "layernorm_after.bias", {4}},
            {l + "intermediate.dense.weight", {8, 4}},
            {l + "intermediate.dense.bias", {8}},
            {l + "output.dense.weight", {4, 8}},
            {l + "output.dense.bias", {4}},
        };
        e.insert(e.end(), layer.begin(), layer.end());
    }
    const std::vector<std::pair<std::string, Shape_t>> tail = {
        {"vit.layernorm.weight", {4}},
        {"vit.layernorm.bias", {4}},
        {"vit.embeddings.mask_token", {1, 1, 4}},
        {"decoder.0.weight", {12, 4, 1, 1}},
        {"decoder.0.bias", {12}},
    };
    e.insert(e.end(), tail.begin(), tail.end());
    return e;
}

// Tiny Swin for SimMIM: image 8, patch 2 (grid 4), C = 4, depths [2, 2], heads [1, 2], window 2.
// Stage 0 (res 4, window 2): block 1 shifts by 1, so it has an attn_mask of (nW = 4, 4, 4). Stage 1 (res 2 <=
// window): the official clamp sets the shift to 0, so no attn_mask. Stride 2 * 2 = 4: decoder 4*4*3 = 48.
std::vector<std::pair<std::string, Shape_t>> official_swin_names() {
    std::vector<std::pair<std::string, Shape_t>> n = {
        {"encoder.mask_token", {1, 1, 4}},
        {"encoder.patch_embed.proj.weight", {4, 3, 2, 2}},
        {"encoder.patch_embed.proj.bias", {4}},
        {"encoder.patch_embed.norm.weight", {4}},
        {"encoder.patch_embed.norm.bias", {4}},
    };
    for (int i = 0; i < 2; ++i) {
        const std::int64_t C = 4 << i, heads = 1 + i;
        for (int j = 0; j < 2; ++j) {
            const std::string b = "encoder.layers." + std::to_string(i) + ".blocks." + std::to_string(j) + ".";
            const std::vector<std::pair<std::string, Shape_t>> block = {
                {b + "norm1.weight", {C}},
                {b + "norm1.bias", {C}},
                {b + "attn.relative_position_bias_table", {9, heads}},
                {b + "attn.relative_position_index", {4, 4}},
                {b + "attn.qkv.weight", {3 * C, C}},
                {b + "attn.qkv.bias", {3 * C}},
                {b + "attn.proj.weight", {C, C}},
                {b + "attn.proj.bias", {C}},
                {b + "norm2.weight", {C}},
                {b + "norm2.bias", {C}},
                {b + "mlp.fc1.weight", {4 * C, C}},
                {b + "mlp.fc1.bias", {4 * C}},
                {b + "mlp.fc2.weight", {C, 4 * C}},
                {b + "mlp.fc2.bias", {C}},
            };
            n.insert(n.end(), block.begin(), block.end());
            if (i == 0 && j == 1) n.push_back({b + "attn_mask", {4, 4, 4}});
        }
        if (i == 0) {
            n.push_back({"encoder.layers.0.downsample.reduction.weight", {8, 16}});
            n.push_back({"encoder.layers.0.downsample.norm.weight", {16}});
            n.push_back({"encoder.layers.0.downsample.norm.bias", {16}});
        }
    }
    n.push_back({"encoder.norm.weight", {8}});
    n.push_back({"encoder.norm.bias", {8}});
    n.push_back({"decoder.0.weight", {48, 8, 1, 1}});
    n.push_back({"decoder.0.bias", {48}});
    return n;
}

/// The official Swin file: F32 values, the relative_position_index buffers I64 as PyTorch stores them.
TensorFile make_swin_file() {
    TensorFile file = make_file(official_swin_names());
    for (const auto& name : std::vector<std::string>(file.names())) {
        if (!name.ends_with("relative_position_index")) continue;
        std::vector<std::int64_t> index = {4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4};  // window 2
        file.set<std::int64_t>(name, std::span<const std::int64_t>(index), {4, 4});
    }
    return file;
}

std::vector<std::pair<std::string, Shape_t>> expected_hf_swin() {
    std::vector<std::pair<std::string, Shape_t>> e = {
        {"swin.embeddings.mask_token", {1, 1, 4}},
        {"swin.embeddings.patch_embeddings.projection.weight", {4, 3, 2, 2}},
        {"swin.embeddings.patch_embeddings.projection.bias", {4}},
        {"swin.embeddings.norm.weight", {4}},
        {"swin.embeddings.norm.bias", {4}},
    };
    for (int i = 0; i < 2; ++i) {
        const std::int64_t C = 4 << i, heads = 1 + i;
        for (int j = 0; j < 2; ++j) {
            const std::string b = "swin.encoder.layers." + std::to_string(i) + ".blocks." + std::to_string(j) + ".";
            const std::vector<std::pair<std::string, Shape_t>> block = {
                {b + "layernorm_before.weight", {C}},
                {b + "layernorm_before.bias", {C}},
                {b + "attention.self.relative_position_bias_table", {9, heads}},
                {b + "attention.self.relative_position_index", {4, 4}},
                {b + "attention.self.query.weight", {C, C}},
                {b + "attention.self.key.weight", {C, C}},
                {b + "attention.self.value.weight", {C, C}},
                {b + "attention.self.query.bias", {C}},
                {b + "attention.self.key.bias", {C}},
                {b + "attention.self.value.bias", {C}},
                {b + "attention.output.dense.weight", {C, C}},
                {b + "attention.output.dense.bias", {C}},
                {b + "layernorm_after.weight", {C}},
                {b + "layernorm_after.bias", {C}},
                {b + "intermediate.dense.weight", {4 * C, C}},
                {b + "intermediate.dense.bias", {4 * C}},
                {b + "output.dense.weight", {C, 4 * C}},
                {b + "output.dense.bias", {C}},
            };
            e.insert(e.end(), block.begin(), block.end());
        }
        if (i == 0) {
            e.push_back({"swin.encoder.layers.0.downsample.reduction.weight", {8, 16}});
            e.push_back({"swin.encoder.layers.0.downsample.norm.weight", {16}});
            e.push_back({"swin.encoder.layers.0.downsample.norm.bias", {16}});
        }
    }
    e.push_back({"swin.layernorm.weight", {8}});
    e.push_back({"swin.layernorm.bias", {8}});
    e.push_back({"decoder.0.weight", {48, 8, 1, 1}});
    e.push_back({"decoder.0.bias", {48}});
    return e;
}

std::vector<std::pair<std::string, Shape_t>> names_and_shapes(const TensorFile& file) {
    std::vector<std::pair<std::string, Shape_t>> out;
    for (const auto& n : file.names()) out.push_back({n, file.at(n).shape});
    return out;
}

/// Same names in the same order, and per tensor the same dtype, shape and bytes.
void require_identical(const TensorFile& a, const TensorFile& b) {
    REQUIRE(a.names() == b.names());
    for (const auto& n : a.names()) {
        INFO(n);
        CHECK(a.at(n).dtype == b.at(n).dtype);
        CHECK(a.at(n).shape == b.at(n).shape);
        CHECK(a.at(n).bytes == b.at(n).bytes);
    }
}

/// The three row blocks of an official qkv tensor must be the HF query, key and value tensors, value by value.
void require_qkv_split(const TensorFile& official, const std::string& qkv, const TensorFile& hf, const std::string& hf_pattern_head,
                       const std::string& leaf) {
    const TensorData& t = official.at(qkv);
    const auto all = t.to<double>();
    const std::size_t block = all.size() / 3;
    const char* parts[3] = {"query", "key", "value"};
    for (int k = 0; k < 3; ++k) {
        const std::string name = hf_pattern_head + parts[k] + "." + leaf;
        INFO(name);
        const TensorData& part = hf.at(name);
        CHECK(part.dtype == t.dtype);
        const auto values = part.to<double>();
        REQUIRE(values.size() == block);
        for (std::size_t e = 0; e < block; ++e) REQUIRE(values[e] == all[k * block + e]);
    }
}

template <class Fn>
std::string error_of(Fn&& fn) {
    try {
        fn();
    } catch (const NameConversionError& e) {
        return e.what();
    }
    FAIL("no NameConversionError was thrown");
    return {};
}

}  // namespace

TEST_CASE("hf names: the common ViT maps to HF ViTForMaskedImageModeling names, shapes and q/k/v slices", "[hf_names]") {
    const auto official_names = common_vit_names();
    REQUIRE(official_names.size() == 4 + 2 * 12 + 2 + 1 + 2);  // the timm-form list of the tiny ViT
    // block 1's qkv weight in F64, so dtypes are seen to be kept through the split
    TensorFile official = make_file(official_names, {"encoder.blocks.1.attn.qkv.weight", "encoder.cls_token"});
    official.metadata["simmim.encoder"] = "vit";
    official.source = "tiny_vit.safetensors";

    const TensorFile hf = to_hf_names(official, NameScheme::HFViT);
    CHECK(names_and_shapes(hf) == expected_hf_vit());
    CHECK(hf.metadata.at("simmim.encoder") == "vit");
    CHECK(hf.metadata.at("format") == "pt");  // transformers refuses safetensors metadata without it
    CHECK(hf.at("vit.embeddings.cls_token").dtype == DType::F64);
    CHECK(hf.at("vit.encoder.layer.1.attention.attention.key.weight").dtype == DType::F64);
    CHECK(hf.at("vit.encoder.layer.0.attention.attention.key.weight").dtype == DType::F32);

    // renamed tensors are byte copies
    CHECK(hf.at("vit.embeddings.position_embeddings").bytes == official.at("encoder.pos_embed").bytes);
    CHECK(hf.at("vit.encoder.layer.1.output.dense.weight").bytes == official.at("encoder.blocks.1.mlp.fc2.weight").bytes);
    CHECK(hf.at("decoder.0.weight").bytes == official.at("decoder.0.weight").bytes);

    for (int i = 0; i < 2; ++i) {
        const std::string head = "vit.encoder.layer." + std::to_string(i) + ".attention.attention.";
        require_qkv_split(official, "encoder.blocks." + std::to_string(i) + ".attn.qkv.weight", hf, head, "weight");
        require_qkv_split(official, "encoder.blocks." + std::to_string(i) + ".attn.qkv.bias", hf, head, "bias");
    }
    // one element checked by hand: row 5 (D = 4: key row 1), column 2 of qkv.weight is key.weight[1][2]
    const auto qkv = official.at("encoder.blocks.0.attn.qkv.weight").to<float>();
    const auto key = hf.at("vit.encoder.layer.0.attention.attention.key.weight").to<float>();
    CHECK(key[1 * 4 + 2] == qkv[5 * 4 + 2]);

    CHECK(detect_name_scheme(official) == NameScheme::Official);
    CHECK(detect_name_scheme(hf) == NameScheme::HFViT);
}

TEST_CASE("hf names: ViT round trip official -> HF -> official is bit-identical", "[hf_names]") {
    TensorFile official = make_file(common_vit_names(), {"encoder.blocks.0.attn.qkv.bias", "encoder.norm.weight"});
    official.metadata["simmim.encoder"] = "vit";
    official.metadata["note"] = "kept";
    const NameConversion there = convert_names(official, NameScheme::HFViT);
    CHECK(there.from == NameScheme::Official);
    CHECK(there.dropped.empty());
    const NameConversion back = convert_names(there.file, NameScheme::Official);
    CHECK(back.from == NameScheme::HFViT);
    CHECK(back.dropped.empty());
    require_identical(back.file, official);
    auto expected_metadata = official.metadata;
    expected_metadata["format"] = "pt";
    CHECK(back.file.metadata == expected_metadata);

    // an official file passes through to_official_names unchanged; an HF file through to_hf_names of its scheme
    require_identical(to_official_names(official), official);
    require_identical(to_hf_names(there.file, NameScheme::HFViT), there.file);

    // the bytes on disk: written under HF names, read back, converted
    const auto path = std::filesystem::temp_directory_path() / ("simmim_hf_vit_" + std::to_string(::getpid()) + ".safetensors");
    write_safetensors(path, there.file);
    require_identical(to_official_names(read_safetensors(path)), official);
    std::filesystem::remove(path);
}

TEST_CASE("hf names: Swin maps to HF SwinForMaskedImageModeling names, drops attn_mask, round trips", "[hf_names]") {
    TensorFile official = make_swin_file();
    official.metadata["origin"] = "test";
    CHECK(detect_name_scheme(official) == NameScheme::Official);

    const NameConversion there = convert_names(official, NameScheme::HFSwin);
    CHECK(names_and_shapes(there.file) == expected_hf_swin());
    CHECK(there.dropped == std::vector<std::string>{"encoder.layers.0.blocks.1.attn_mask"});
    CHECK(there.file.at("swin.encoder.layers.1.blocks.0.attention.self.relative_position_index").dtype == DType::I64);
    CHECK(there.file.at("swin.encoder.layers.1.blocks.0.attention.self.relative_position_index").bytes ==
          official.at("encoder.layers.1.blocks.0.attn.relative_position_index").bytes);
    CHECK(there.file.at("swin.encoder.layers.0.downsample.reduction.weight").bytes ==
          official.at("encoder.layers.0.downsample.reduction.weight").bytes);
    CHECK(there.file.at("swin.layernorm.bias").bytes == official.at("encoder.norm.bias").bytes);
    CHECK(there.file.metadata.at("origin") == "test");
    CHECK(detect_name_scheme(there.file) == NameScheme::HFSwin);

    for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) {
            const std::string b = "encoder.layers." + std::to_string(i) + ".blocks." + std::to_string(j) + ".";
            require_qkv_split(official, b + "attn.qkv.weight", there.file, "swin." + b + "attention.self.", "weight");
            require_qkv_split(official, b + "attn.qkv.bias", there.file, "swin." + b + "attention.self.", "bias");
        }

    // back: everything but the attn_mask buffer, bit for bit and in order
    TensorFile without_mask;
    for (const auto& n : official.names())
        if (!n.ends_with("attn_mask")) without_mask.set(n, official.at(n));
    require_identical(to_official_names(there.file), without_mask);
}

TEST_CASE("hf names: HF base-model (bare) names are read too", "[hf_names]") {
    const TensorFile official = make_file(common_vit_names());
    const TensorFile hf = to_hf_names(official, NameScheme::HFViT);
    TensorFile bare;  // what ViTModel.save_pretrained writes: no "vit." prefix, no decoder, a pooler
    for (const auto& n : hf.names())
        if (n.starts_with("vit.")) bare.set(n.substr(4), hf.at(n));
    std::vector<float> pooler(16, 0.5f);
    bare.set<float>("pooler.dense.weight", std::span<const float>(pooler), {4, 4});
    CHECK(detect_name_scheme(bare) == NameScheme::HFViT);

    // the pooler has no official counterpart: reported, not silently dropped
    const std::string why = error_of([&] { (void)to_official_names(bare); });
    CHECK_THAT(why, Catch::Contains("'pooler.dense.weight'") && Catch::Contains("drop_unmapped"));

    const NameConversion c = convert_names(bare, NameScheme::Official, {.drop_unmapped = true});
    CHECK(c.dropped == std::vector<std::string>{"pooler.dense.weight"});
    TensorFile encoder_only;
    for (const auto& n : official.names())
        if (n.starts_with("encoder.")) encoder_only.set(n, official.at(n));
    require_identical(c.file, encoder_only);

    // a bare Swin too
    const TensorFile swin = to_hf_names(make_swin_file(), NameScheme::HFSwin);
    TensorFile bare_swin;
    for (const auto& n : swin.names())
        if (n.starts_with("swin.")) bare_swin.set(n.substr(5), swin.at(n));
    CHECK(detect_name_scheme(bare_swin) == NameScheme::HFSwin);
    CHECK(to_official_names(bare_swin).contains("encoder.layers.1.blocks.1.attn.qkv.weight"));
}

TEST_CASE("hf names: the official-form ViT is refused with the tensors HF has no place for", "[hf_names]") {
    const TensorFile official = make_file(official_vit_names());
    CHECK(detect_name_scheme(official) == NameScheme::Official);
    const std::string why = error_of([&] { (void)to_hf_names(official, NameScheme::HFViT); });
    CHECK_THAT(why, Catch::Contains("official-form") && Catch::Contains("'encoder.blocks.0.gamma_1'") &&
                        Catch::Contains("'encoder.blocks.1.gamma_2'") && Catch::Contains("'encoder.blocks.0.attn.q_bias'") &&
                        Catch::Contains("'encoder.blocks.1.attn.v_bias'") &&
                        Catch::Contains("'encoder.rel_pos_bias.relative_position_bias_table'"));
    // refused even when unmapped tensors may be dropped: leaving them out would change the model
    CHECK_THROWS_AS(to_hf_names(official, NameScheme::HFViT, {.drop_unmapped = true}), NameConversionError);
    // the buffer a PyTorch state dict of that form carries is named too
    TensorFile with_index = official;
    std::vector<std::int64_t> index(25, 0);
    with_index.set<std::int64_t>("encoder.rel_pos_bias.relative_position_index", std::span<const std::int64_t>(index), {5, 5});
    CHECK_THAT(error_of([&] { (void)to_hf_names(with_index, NameScheme::HFViT); }),
               Catch::Contains("'encoder.rel_pos_bias.relative_position_index'"));
}

TEST_CASE("hf names: incomplete or misshapen query/key/value groups and bad qkv shapes", "[hf_names]") {
    const TensorFile hf = to_hf_names(make_file(common_vit_names()), NameScheme::HFViT);

    SECTION("a missing key tensor") {
        TensorFile broken;
        for (const auto& n : hf.names())
            if (n != "vit.encoder.layer.1.attention.attention.key.weight") broken.set(n, hf.at(n));
        const std::string why = error_of([&] { (void)to_official_names(broken); });
        CHECK_THAT(why, Catch::Contains("encoder.blocks.1.attn.qkv.weight") &&
                            Catch::Contains("missing 'vit.encoder.layer.1.attention.attention.key.weight'"));
        // not an "unmapped" tensor: drop_unmapped does not hide it
        CHECK_THROWS_AS(to_official_names(broken, {.drop_unmapped = true}), NameConversionError);
    }
    SECTION("query, key and value of different shapes") {
        TensorFile broken = hf;
        std::vector<float> v(12, 1.0f);
        broken.set<float>("vit.encoder.layer.0.attention.attention.value.weight", std::span<const float>(v), {3, 4});
        CHECK_THAT(error_of([&] { (void)to_official_names(broken); }),
                   Catch::Contains("encoder.blocks.0.attn.qkv.weight") && Catch::Contains("[3, 4]"));
    }
    SECTION("query, key and value of different dtypes") {
        TensorFile broken = hf;
        std::vector<double> v(16, 1.0);
        broken.set<double>("vit.encoder.layer.0.attention.attention.value.weight", std::span<const double>(v), {4, 4});
        CHECK_THAT(error_of([&] { (void)to_official_names(broken); }), Catch::Contains("F64") && Catch::Contains("F32"));
    }
    SECTION("qkv rows not divisible by 3") {
        TensorFile official = make_file(common_vit_names());
        std::vector<float> v(10 * 4, 1.0f);
        official.set<float>("encoder.blocks.0.attn.qkv.weight", std::span<const float>(v), {10, 4});
        CHECK_THAT(error_of([&] { (void)to_hf_names(official, NameScheme::HFViT); }),
                   Catch::Contains("encoder.blocks.0.attn.qkv.weight") && Catch::Contains("not divisible by 3"));
    }
    SECTION("qkv weight of the wrong rank") {
        TensorFile official = make_file(common_vit_names());
        std::vector<float> v(12, 1.0f);
        official.set<float>("encoder.blocks.1.attn.qkv.weight", std::span<const float>(v), {12});
        CHECK_THAT(error_of([&] { (void)to_hf_names(official, NameScheme::HFViT); }),
                   Catch::Contains("encoder.blocks.1.attn.qkv.weight") && Catch::Contains("(3D, D)"));
    }
}

TEST_CASE("hf names: unmapped tensors, wrong targets and mixed files are reported", "[hf_names]") {
    SECTION("an MLP head's second layer has no place in HF") {
        TensorFile official = make_file(common_vit_names());
        std::vector<float> v(12, 1.0f);
        official.set<float>("decoder.2.bias", std::span<const float>(v), {12});
        CHECK_THAT(error_of([&] { (void)to_hf_names(official, NameScheme::HFViT); }), Catch::Contains("'decoder.2.bias'"));
        const NameConversion c = convert_names(official, NameScheme::HFViT, {.drop_unmapped = true});
        CHECK(c.dropped == std::vector<std::string>{"decoder.2.bias"});
        CHECK(c.file.names().size() == expected_hf_vit().size());
    }
    SECTION("a ViT asked for Swin names, and a Swin for ViT names") {
        CHECK_THAT(error_of([&] { (void)to_hf_names(make_file(common_vit_names()), NameScheme::HFSwin); }),
                   Catch::Contains("NameScheme::HFViT"));
        CHECK_THAT(error_of([&] { (void)to_hf_names(make_swin_file(), NameScheme::HFViT); }), Catch::Contains("NameScheme::HFSwin"));
        CHECK_THROWS_AS(to_hf_names(make_swin_file(), NameScheme::Official), std::invalid_argument);
    }
    SECTION("Swin absolute position embeddings are refused both ways") {
        TensorFile official = make_swin_file();
        std::vector<float> v(16 * 4, 1.0f);
        official.set<float>("encoder.absolute_pos_embed", std::span<const float>(v), {1, 16, 4});
        CHECK_THAT(error_of([&] { (void)to_hf_names(official, NameScheme::HFSwin); }), Catch::Contains("absolute_pos_embed"));
        TensorFile hf = to_hf_names(make_swin_file(), NameScheme::HFSwin);
        std::vector<float> w(17 * 4, 1.0f);
        hf.set<float>("swin.embeddings.position_embeddings", std::span<const float>(w), {1, 17, 4});
        CHECK_THAT(error_of([&] { (void)to_official_names(hf, {.drop_unmapped = true}); }),
                   Catch::Contains("swin.embeddings.position_embeddings"));
    }
    SECTION("files mixing namings") {
        TensorFile mixed = to_hf_names(make_file(common_vit_names()), NameScheme::HFViT);
        std::vector<float> v(4, 1.0f);
        mixed.set<float>("encoder.norm.weight", std::span<const float>(v), {4});
        CHECK_THAT(error_of([&] { (void)detect_name_scheme(mixed); }), Catch::Contains("mixes"));
        TensorFile both = to_hf_names(make_file(common_vit_names()), NameScheme::HFViT);
        both.set<float>("swin.layernorm.weight", std::span<const float>(v), {4});
        CHECK_THAT(error_of([&] { (void)detect_name_scheme(both); }), Catch::Contains("mixes"));
    }
    SECTION("an empty file is official") { CHECK(detect_name_scheme(TensorFile{}) == NameScheme::Official); }
}

namespace {
/// The smallest Model load_weights() takes: a common ViT encoder and the linear head.
struct TinyViTModel {
    ParamArena<float> arena;
    ViTEncoder<float, kTiny> encoder{arena};
    LinearHead<float, kTiny> head{arena};
    TinyViTModel() { arena.allocate(false); }
    ParamArena<float>& params() { return arena; }
    const ParamArena<float>& params() const { return arena; }
};
}  // namespace

TEST_CASE("hf names: load_weights reads an HF-named file transparently", "[hf_names]") {
    const TensorFile official = make_file(common_vit_names());
    const auto path = std::filesystem::temp_directory_path() / ("simmim_hf_load_" + std::to_string(::getpid()) + ".safetensors");
    write_safetensors(path, to_hf_names(official, NameScheme::HFViT));

    TinyViTModel model;
    load_weights(model, path);
    for (const auto& p : model.params().params()) {
        INFO(p.name);
        const auto expected = official.at(p.name).to<float>();
        REQUIRE(std::equal(expected.begin(), expected.end(), model.params().values() + p.offset));
    }
    CHECK(detect_name_scheme(read_weights(path)) == NameScheme::Official);

    // an HF file with a pooler: refused by default, loaded when unexpected tensors are allowed
    TensorFile with_pooler = read_safetensors(path);
    std::vector<float> pooler(16, 0.5f);
    with_pooler.set<float>("vit.pooler.dense.weight", std::span<const float>(pooler), {4, 4});
    write_safetensors(path, with_pooler);
    TinyViTModel other;
    CHECK_THROWS_AS(load_weights(other, path), NameConversionError);
    LoadOptions allow;
    allow.allow_unexpected = true;
    load_weights(other, path, allow);
    CHECK(std::equal(model.params().values(), model.params().values() + model.params().size(), other.params().values()));
    std::filesystem::remove(path);
}
