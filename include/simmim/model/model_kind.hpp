// simmim/model/model_kind.hpp: how a weights file says which model it holds.
//
// save_weights() and the training checkpoints record, in the safetensors metadata (all strings):
//   simmim.encoder         the encoder form: "vit" (common timm form), "vit-official" (BEiT-derived) or "swin"
//   simmim.encoder.config  the encoder configuration as JSON with sorted keys, e.g.
//                          {"depth":12,"embed_dim":192,"image_size":32,"in_chans":1,"mlp_ratio":4,"num_heads":3,"patch_size":4}
//                          or for Swin {"depths":[2,2,6],"embed_dim":48,...,"window_size":4}
//   simmim.geometry        {"image_size":..,"in_chans":..,"mask_grid":..,"out_dim":..,"out_grid":..}
//   simmim.head            e.g. "linear(resolution=32)", "mlp(hidden=96,resolution=32)"
//   simmim.loss            e.g. "l1,masked,raw,resolution=32"
//   simmim.preset          the preset name, when the writer knows it (the example programs do)
// Loading compares the keys that decide whether the tensors mean the same thing (kModelKindKeys) and
// names every difference on one line. Files without these keys (written before they existed) still load.
#pragma once

#include <array>
#include <map>
#include <string>

#include "simmim/core/config.hpp"
#include "simmim/core/geometry.hpp"
#include "simmim/core/swin_config.hpp"

namespace simmim {

/// The keys load_weights() compares between a file and the model it loads into.
inline constexpr std::array<const char*, 4> kModelKindKeys{"simmim.encoder", "simmim.encoder.config", "simmim.geometry", "simmim.head"};

inline std::string config_json(const ViTConfig& c) {
    return "{\"depth\":" + std::to_string(c.depth) + ",\"embed_dim\":" + std::to_string(c.embed_dim) +
           ",\"image_size\":" + std::to_string(c.image_size) + ",\"in_chans\":" + std::to_string(c.in_chans) +
           ",\"mlp_ratio\":" + std::to_string(c.mlp_ratio) + ",\"num_heads\":" + std::to_string(c.num_heads) +
           ",\"patch_size\":" + std::to_string(c.patch_size) + "}";
}

inline std::string config_json(const SwinConfig& c) {
    const auto list = [&](const std::array<int, SwinConfig::kMaxStages>& a) {
        std::string s = "[";
        for (int i = 0; i < c.num_stages; ++i) s += (i ? "," : "") + std::to_string(a[static_cast<std::size_t>(i)]);
        return s + "]";
    };
    return "{\"depths\":" + list(c.depths) + ",\"embed_dim\":" + std::to_string(c.embed_dim) +
           ",\"image_size\":" + std::to_string(c.image_size) + ",\"in_chans\":" + std::to_string(c.in_chans) +
           ",\"mlp_ratio\":" + std::to_string(c.mlp_ratio) + ",\"num_heads\":" + list(c.num_heads) +
           ",\"patch_size\":" + std::to_string(c.patch_size) + ",\"window_size\":" + std::to_string(c.window_size) + "}";
}

inline std::string geometry_json(const EncoderGeometry& g) {
    return "{\"image_size\":" + std::to_string(g.image_size) + ",\"in_chans\":" + std::to_string(g.in_chans) +
           ",\"mask_grid\":" + std::to_string(g.mask_grid) + ",\"out_dim\":" + std::to_string(g.out_dim) +
           ",\"out_grid\":" + std::to_string(g.out_grid) + "}";
}

/// The metadata describing a model whose parts say what they are: Enc::kind() and Enc::config (when the
/// encoder has a ViTConfig or a SwinConfig), the geometry, head.kind(), loss.kind() (each only when the part offers it).
template <class Enc, class Hd, class Ls>
std::map<std::string, std::string> model_kind(const Hd& head, const Ls& loss) {
    std::map<std::string, std::string> m;
    if constexpr (requires { Enc::kind(); }) m["simmim.encoder"] = Enc::kind();
    if constexpr (requires { config_json(Enc::config); }) m["simmim.encoder.config"] = config_json(Enc::config);
    m["simmim.geometry"] = geometry_json(Enc::geometry);
    if constexpr (requires { head.kind(); }) m["simmim.head"] = head.kind();
    if constexpr (requires { loss.kind(); }) m["simmim.loss"] = loss.kind();
    return m;
}

/// "" when `file` (a weights file's metadata) may hold `model`'s tensors, else one line naming each of
/// kModelKindKeys that both record with different values. A key the file lacks is not a difference.
inline std::string model_kind_difference(const std::map<std::string, std::string>& file, const std::map<std::string, std::string>& model) {
    std::string diff;
    for (const char* key : kModelKindKeys) {
        const auto f = file.find(key);
        const auto m = model.find(key);
        if (f == file.end() || m == model.end() || f->second == m->second) continue;
        diff += (diff.empty() ? "" : "; ") + std::string(key) + " is " + f->second + " in the file, " + m->second + " in this model";
    }
    return diff;
}

}  // namespace simmim
