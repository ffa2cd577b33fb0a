// simmim/model/any_encoder.hpp: a pretrained encoder chosen at run time from a weights file.
//
// The encoders are types (ViTEncoder<T, C>, OfficialViTEncoder<T, C>): a program that reads weights written
// by someone else does not know C or the form when it is compiled. AnyEncoder is a type-erased float encoder
// over every compiled preset (presets::all) in both ViT forms; AnyEncoder::open(path) decides which one the
// file holds and loads its "encoder." tensors (decoder and optimizer tensors are ignored):
//   - with metadata (files written from the simmim.* metadata format on): "simmim.encoder" is "vit" (the
//     common form) or "vit-official", "simmim.encoder.config" the ViTConfig as JSON; the preset is the one
//     whose configuration equals it ("simmim.preset" names it when the writer knew it). "simmim.geometry",
//     when present, must agree with the configuration.
//   - without (files of the previous release, PyTorch state dicts): the form is official when the file has
//     encoder.rel_pos_bias.relative_position_bias_table, else common; the preset is the one whose encoder's
//     parameters (names and shapes, listed by constructing it on an arena that is never allocated) are
//     exactly the file's floating-point "encoder." tensors (integer buffers such as PyTorch's
//     relative_position_index are ignored). Several matches are an error: the common form's tensors do not
//     fix the number of heads.
// Every error is one EncoderFileError line naming the file and what is wrong.
//
// encode() is the encoders' inference path (features (B, o*o, D) of images (B, C, S, S), mask (B, m*m) or
// null), bit for bit the concrete encoder's encode(). The arena holds no gradients.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "simmim/core/config.hpp"
#include "simmim/core/geometry.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/io/model_io.hpp"
#include "simmim/io/safetensors.hpp"
#include "simmim/model/model_kind.hpp"
#include "simmim/model/vit_encoder.hpp"
#include "simmim/model/vit_official.hpp"

namespace simmim {

/// A weights file that holds no encoder AnyEncoder can build: the message is one line naming the file.
class EncoderFileError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// What a weights file holds: the form ("vit" or "vit-official", the values of "simmim.encoder"), the
/// preset, its configuration, and whether the metadata said so or the tensors did.
struct EncoderIdentity {
    std::string form;
    std::string preset;
    ViTConfig config;
    bool from_metadata = false;

    /// e.g. "vit-official vit-m4-32-c1 (inferred from tensor names)".
    std::string description() const {
        return form + " " + preset + (from_metadata ? " (from metadata)" : " (inferred from tensor names)");
    }
};

namespace detail {

/// The forms, as recorded in "simmim.encoder" (ViTEncoder::kind(), OfficialViTEncoder::kind()).
inline const std::string kCommonForm = ViTEncoder<float, presets::vit_tiny_test>::kind();
inline const std::string kOfficialForm = OfficialViTEncoder<float, presets::vit_tiny_test>::kind();
inline constexpr const char* kRelPosTable = "encoder.rel_pos_bias.relative_position_bias_table";

/// The parameters (names, shapes) an encoder type registers: constructed on an arena never allocated.
template <class Enc>
std::vector<ParamInfo> expected_params() {
    ParamArena<typename Enc::scalar_type> arena;
    const Enc encoder(arena);
    return arena.params();
}

template <ViTConfig C>
std::vector<ParamInfo> expected_params(std::string_view form) {
    if (form == kOfficialForm) return expected_params<OfficialViTEncoder<float, C>>();
    return expected_params<ViTEncoder<float, C>>();
}

/// The parameters of the encoder of `form` and preset `name` (which must exist).
inline std::vector<ParamInfo> expected_params(std::string_view form, std::string_view name) {
    std::vector<ParamInfo> out;
    dispatch_preset(name, [&]<ViTConfig C>() { out = expected_params<C>(form); });
    return out;
}

inline bool is_float_dtype(io::DType d) {
    return d == io::DType::F32 || d == io::DType::F64 || d == io::DType::F16 || d == io::DType::BF16;
}

/// Why the file's encoder tensors are not exactly `expected` (empty when they are): a missing or
/// misshapen parameter, a non-float one, or a floating-point "encoder." tensor that is no parameter.
inline std::string encoder_mismatch(const io::TensorFile& file, const std::vector<ParamInfo>& expected) {
    std::set<std::string> names;
    for (const auto& p : expected) {
        names.insert(p.name);
        if (!file.contains(p.name)) return "tensor '" + p.name + "' is missing";
        const auto& t = file.at(p.name);
        if (t.shape != p.shape)
            return "tensor '" + p.name + "' has shape " + io::detail::shape_string(t.shape) + ", expected " + io::detail::shape_string(p.shape);
        if (!is_float_dtype(t.dtype)) return "tensor '" + p.name + "' has dtype " + std::string(io::dtype_name(t.dtype)) + ", not a float type";
    }
    for (const auto& n : file.names())
        if (n.starts_with("encoder.") && !names.count(n) && is_float_dtype(file.at(n).dtype))
            return "tensor '" + n + "' is not a parameter of this encoder";
    return {};
}

/// How messages name a file: its path ("<path>: what is wrong").
inline std::string source_name(const io::TensorFile& file) {
    return file.source.empty() ? std::string("in-memory safetensors data") : file.source;
}

inline std::string preset_names() {
    std::string names;
    for (const auto& p : presets::all) names += (names.empty() ? "" : ", ") + std::string(p.name);
    return names;
}

inline std::string config_text(const ViTConfig& c) {
    return "image " + std::to_string(c.image_size) + ", " + std::to_string(c.in_chans) + " channels, patch " + std::to_string(c.patch_size) +
           ", dim " + std::to_string(c.embed_dim) + ", depth " + std::to_string(c.depth) + ", heads " + std::to_string(c.num_heads) +
           ", mlp ratio " + std::to_string(c.mlp_ratio);
}

/// A ViTConfig from the JSON of "simmim.encoder.config": exactly the seven integer fields.
inline std::optional<ViTConfig> parse_vit_config(const std::string& text, std::string& why) {
    const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) {
        why = "is not a JSON object";
        return std::nullopt;
    }
    ViTConfig c;
    const std::pair<const char*, int*> fields[] = {{"image_size", &c.image_size}, {"in_chans", &c.in_chans},   {"patch_size", &c.patch_size},
                                                   {"embed_dim", &c.embed_dim},   {"depth", &c.depth},         {"num_heads", &c.num_heads},
                                                   {"mlp_ratio", &c.mlp_ratio}};
    for (const auto& [key, field] : fields) {
        if (!j.contains(key) || !j[key].is_number_integer()) {
            why = std::string("has no integer '") + key + "'";
            return std::nullopt;
        }
        *field = j[key].get<int>();
    }
    for (const auto& [key, value] : j.items()) {
        bool known = false;
        for (const auto& f : fields) known = known || key == f.first;
        if (!known) {
            why = "has the field '" + key + "' this build does not know";
            return std::nullopt;
        }
    }
    return c;
}

/// From the metadata (which has "simmim.encoder"): the form, the preset and the configuration.
inline EncoderIdentity identity_from_metadata(const std::map<std::string, std::string>& meta, const std::string& src) {
    const auto fail = [&](const std::string& what) { throw EncoderFileError(src + ": " + what); };
    const std::string& form = meta.at("simmim.encoder");
    if (form != kCommonForm && form != kOfficialForm)
        fail("metadata 'simmim.encoder' is '" + form + "', an encoder this build cannot run (it runs vit and vit-official)");
    const auto cfg_it = meta.find("simmim.encoder.config");
    if (cfg_it == meta.end()) fail("metadata has 'simmim.encoder' but no 'simmim.encoder.config'");
    std::string why;
    const auto config = parse_vit_config(cfg_it->second, why);
    if (!config) fail("metadata 'simmim.encoder.config' " + why + ": " + cfg_it->second);
    EncoderIdentity id{form, {}, *config, true};
    const auto named = meta.find("simmim.preset");
    if (named != meta.end())
        if (const auto* p = presets::find(named->second); p && p->config == *config) id.preset = std::string(p->name);
    if (id.preset.empty())
        for (const auto& p : presets::all)
            if (p.config == *config) {
                id.preset = std::string(p.name);
                break;
            }
    if (id.preset.empty())
        fail("the " + form + " encoder of its metadata (" + cfg_it->second + ") is none of the compiled presets (" + preset_names() + ")");
    if (const auto g = meta.find("simmim.geometry"); g != meta.end()) {
        const auto j = nlohmann::json::parse(g->second, nullptr, /*allow_exceptions=*/false);
        const EncoderGeometry want = config->geometry();
        const bool same = j.is_object() && j.value("image_size", -1) == want.image_size && j.value("in_chans", -1) == want.in_chans &&
                          j.value("mask_grid", -1) == want.mask_grid && j.value("out_grid", -1) == want.out_grid &&
                          j.value("out_dim", -1) == want.out_dim;
        if (!same) fail("metadata 'simmim.geometry' " + g->second + " disagrees with 'simmim.encoder.config' " + cfg_it->second);
    }
    return id;
}

/// From the tensors alone (see the top of this header).
inline EncoderIdentity identity_from_tensors(const io::TensorFile& file, const std::string& src) {
    const auto fail = [&](const std::string& what) { throw EncoderFileError(src + ": " + what); };
    std::size_t encoder_tensors = 0;
    for (const auto& n : file.names()) encoder_tensors += n.starts_with("encoder.");
    if (encoder_tensors == 0)
        fail("no encoder tensors (no tensor name starts with 'encoder.'; " + std::to_string(file.names().size()) + " tensors" +
             (file.names().empty() ? std::string() : ", the first '" + file.names().front() + "'") + ")");
    const std::string form(file.contains(kRelPosTable) ? kOfficialForm : kCommonForm);
    std::vector<std::string> matches;
    for (const auto& p : presets::all)
        if (encoder_mismatch(file, expected_params(form, p.name)).empty()) matches.emplace_back(p.name);
    if (matches.size() > 1) {
        std::string names;
        for (const auto& m : matches) names += (names.empty() ? "" : ", ") + m;
        fail("its " + form + " encoder tensors fit several presets (" + names +
             ") that differ in what the tensors do not fix (the heads); write the weights with simmim.* metadata");
    }
    if (matches.empty()) {
        // describe the file's encoder by the tensors that fix its sizes; a preset of that width, channels,
        // patch and depth (the nearest) says which tensor differs
        std::vector<std::int64_t> pe;  // (D, C, p, p)
        if (file.contains("encoder.patch_embed.proj.weight")) pe = file.at("encoder.patch_embed.proj.weight").shape;
        int depth = 0;
        while (file.contains("encoder.blocks." + std::to_string(depth) + ".norm1.weight")) ++depth;
        std::string what = pe.size() == 4 ? "dim " + std::to_string(pe[0]) + ", " + std::to_string(pe[1]) + " channels, patch " +
                                                 std::to_string(pe[2]) + ", "
                                           : std::string();
        what += std::to_string(depth) + " blocks";
        std::string nearest;
        for (const auto& p : presets::all)
            if (nearest.empty() && pe.size() == 4 && pe[0] == p.config.embed_dim && pe[1] == p.config.in_chans && pe[2] == p.config.patch_size &&
                depth == p.config.depth)
                nearest = "; as " + std::string(p.name) + ": " + encoder_mismatch(file, expected_params(form, p.name));
        fail("its " + form + " encoder tensors (" + what + ") match none of the compiled presets (" + preset_names() + ")" + nearest);
    }
    const auto* p = presets::find(matches.front());
    return EncoderIdentity{form, matches.front(), p->config, false};
}

/// The type-erased encoder: a virtual base and one implementation per encoder type.
class AnyEncoderBase {
public:
    virtual ~AnyEncoderBase() = default;
    virtual void encode(float* features, const float* images, const float* mask, int B) const = 0;
    virtual std::size_t parameter_count() const = 0;
    virtual const ParamArena<float>& params() const = 0;
};

template <class Enc>
class AnyEncoderModel final : public AnyEncoderBase {
public:
    /// Builds the encoder, allocates its values (no gradients) and loads its parameters from `file`.
    explicit AnyEncoderModel(const io::TensorFile& file) : encoder_(arena_) {
        arena_.allocate(/*with_gradients=*/false);
        io::LoadOptions opt;
        opt.only_params_with_prefix = "encoder.";
        opt.allow_unexpected = true;  // decoder.*, optimizer.*, integer buffers
        io::import_params(arena_, file, opt);
    }
    void encode(float* features, const float* images, const float* mask, int B) const override {
        encoder_.encode(features, images, mask, B);
    }
    std::size_t parameter_count() const override { return arena_.size(); }
    const ParamArena<float>& params() const override { return arena_; }
    const Enc& encoder() const { return encoder_; }

private:
    ParamArena<float> arena_;  // declared before the encoder, which registers its parameters in it
    Enc encoder_;
};

}  // namespace detail

/// What a weights file holds (see the top of this header); EncoderFileError otherwise.
inline EncoderIdentity identify_encoder(const io::TensorFile& file) {
    const std::string src = detail::source_name(file);
    if (file.metadata.count("simmim.encoder")) return detail::identity_from_metadata(file.metadata, src);
    return detail::identity_from_tensors(file, src);
}

/// A float encoder of any compiled preset and ViT form, loaded from a weights file.
class AnyEncoder {
public:
    /// Reads `weights` (a weights file or a training checkpoint), decides what encoder it holds and loads
    /// its "encoder." tensors. EncoderFileError or io::SafetensorsError, one line naming the file, otherwise.
    static AnyEncoder open(const std::filesystem::path& weights) {
        // metadata first (the header only): a file whose metadata names an encoder this build does not
        // have fails before its tensors are read
        const auto meta = io::read_safetensors_metadata(weights);
        if (meta.count("simmim.encoder")) (void)detail::identity_from_metadata(meta, weights.string());
        return from_file(io::read_safetensors(weights));
    }

    /// The encoder `file` holds (see open()).
    static AnyEncoder from_file(const io::TensorFile& file) {
        AnyEncoder out;
        out.id_ = identify_encoder(file);
        const std::string src = detail::source_name(file);
        // with metadata, the tensors must still be the encoder's exactly (import_params allows extras)
        if (const std::string why = detail::encoder_mismatch(file, detail::expected_params(out.id_.form, out.id_.preset)); !why.empty())
            throw EncoderFileError(src + ": holds a " + out.id_.form + " " + out.id_.preset + " encoder by its metadata, but " + why);
        dispatch_preset(out.id_.preset, [&]<ViTConfig C>() {
            if (out.id_.form == detail::kOfficialForm) out.impl_ = std::make_unique<detail::AnyEncoderModel<OfficialViTEncoder<float, C>>>(file);
            else out.impl_ = std::make_unique<detail::AnyEncoderModel<ViTEncoder<float, C>>>(file);
        });
        out.geometry_ = out.id_.config.geometry();
        return out;
    }

    /// Image size, channels, mask grid, output grid and feature width.
    const EncoderGeometry& geometry() const noexcept { return geometry_; }
    const EncoderIdentity& identity() const noexcept { return id_; }
    /// e.g. "vit-official vit-m4-32-c1 (inferred from tensor names)".
    std::string description() const { return id_.description(); }
    /// features (B, o*o, D) of images (B, C, S, S) with a mask (B, m*m) (1 = masked) or null (nothing
    /// masked): the concrete encoder's encode(), bit for bit.
    void encode(float* features, const float* images, const float* mask_or_null, int B) const {
        impl_->encode(features, images, mask_or_null, B);
    }
    /// Number of parameters (floats) of the encoder.
    std::size_t parameter_count() const { return impl_->parameter_count(); }
    /// The loaded parameters under their official names.
    const ParamArena<float>& params() const { return impl_->params(); }

private:
    AnyEncoder() = default;
    EncoderIdentity id_;
    EncoderGeometry geometry_;
    std::unique_ptr<detail::AnyEncoderBase> impl_;
};

}  // namespace simmim
