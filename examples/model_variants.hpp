// examples/model_variants.hpp: the SimMIM model variants the example binaries offer at run time, for the
// paper's ablations (docs/ablations.md), and the dispatch from command-line choices to model types.
//
// The library composes any encoder, head, loss and masking policy as types (model/simmim_model.hpp); a
// binary has to instantiate every combination it offers, so simmim_pretrain offers:
//   - for every preset: the common ViT, linear head, masked L1 on raw pixels (the core model), with any
//     masking ratio / mask patch and any loss choice below;
//   - for the ablation presets (kAblationPresets): also the official ViT (--vit official, with
//     --drop-path), the 2-layer MLP head (--head mlp), and the prediction resolutions S/2 and g (the
//     token grid) with the linear head (--pred-resolution).
// The loss choices (--loss l1|l2, --loss-region masked|all, --target raw|norm) are a run-time switch over
// the eight ReconstructionLoss types (RuntimeLoss below), so they combine with every model type.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>

#include "simmim/core/config.hpp"
#include "simmim/core/swin_config.hpp"
#include "simmim/io/safetensors.hpp"
#include "simmim/masking/masking.hpp"
#include "simmim/model/linear_head.hpp"
#include "simmim/model/mlp_head.hpp"
#include "simmim/model/reconstruction_loss.hpp"
#include "simmim/model/simmim_model.hpp"
#include "simmim/model/swin_encoder.hpp"
#include "simmim/model/vit_encoder.hpp"
#include "simmim/model/vit_official.hpp"
#include "example_presets.hpp"
#include "training_common.hpp"

namespace simmim::examples {

/// Presets for which the binaries instantiate the ablation variants (each variant is a separate model type).
/// SIMMIM_EXAMPLES_FEW_VARIANTS keeps only the test preset (scripts/sanitize.sh: compile time under ASan).
#ifdef SIMMIM_EXAMPLES_FEW_VARIANTS
inline constexpr std::array<std::string_view, 1> kAblationPresets{"vit-tiny-test"};
#else
inline constexpr std::array<std::string_view, 3> kAblationPresets{"vit-m4-32-c1", "vit-t4-32-c1", "vit-tiny-test"};
#endif

template <ViTConfig C>
constexpr bool offers_ablations() {
    for (const auto& p : presets::all)
        for (const auto name : kAblationPresets)
            if (p.name == name && p.config == C)
                return true;
    return false;
}

/// What the user chose on the command line.
struct ModelChoice {
    std::string vit = "common";     // common | official
    std::string head = "linear";    // linear | mlp
    std::string loss = "l1";        // l1 | l2
    std::string region = "masked";  // masked | all
    std::string target = "raw";     // raw | norm (SwinV2 per-pixel normalised target, 47x47 window)
    int pred_resolution = 0;        // 0: the image size
    double drop_path = -1;          // -1: the variant's default (0.1 for the official ViT, as its pretraining; 0 otherwise)

    bool model_is_default() const { return vit == "common" && head == "linear" && pred_resolution == 0; }
    bool is_default() const { return model_is_default() && loss == "l1" && region == "masked" && target == "raw" && drop_path_rate() == 0; }
    double drop_path_rate() const { return drop_path >= 0 ? drop_path : (vit == "official" ? 0.1 : 0.0); }

    /// Checks what the command line's validators cannot (examples/pretrain_options.hpp checks the names and
    /// ranges); sizes are checked against the preset by dispatch_model<C>().
    void validate() const {
        if (drop_path > 0 && vit != "official") throw UsageError("--drop-path needs --vit official (the common ViT has no stochastic depth)");
    }

    /// The choices as JSON, for the run configuration a resumed run must match.
    nlohmann::json to_json() const {
        return {{"vit", vit}, {"head", head}, {"loss", loss}, {"loss_region", region}, {"target", target},
                {"pred_resolution", pred_resolution}, {"drop_path", drop_path_rate()}};
    }
};

/// A run-time choice among the eight ReconstructionLoss<T, G, {norm, region, target, R}> types (47x47 window
/// for the normalised target). Satisfies the Loss concept; `resolution` is R.
template <class T, EncoderGeometry Geo, int R>
class RuntimeLoss {
    template <LossNorm N, LossRegion G, LossTarget Tg>
    using L = ReconstructionLoss<T, Geo, LossSpec{N, G, Tg, R == Geo.image_size ? 0 : R, 47}>;
    using Any = std::variant<L<LossNorm::L1, LossRegion::Masked, LossTarget::Raw>, L<LossNorm::L1, LossRegion::Masked, LossTarget::Normalized>,
                             L<LossNorm::L1, LossRegion::All, LossTarget::Raw>, L<LossNorm::L1, LossRegion::All, LossTarget::Normalized>,
                             L<LossNorm::L2, LossRegion::Masked, LossTarget::Raw>, L<LossNorm::L2, LossRegion::Masked, LossTarget::Normalized>,
                             L<LossNorm::L2, LossRegion::All, LossTarget::Raw>, L<LossNorm::L2, LossRegion::All, LossTarget::Normalized>>;

public:
    using scalar_type = T;
    static constexpr int resolution = R;

    RuntimeLoss() = default;
    /// index = 4 * (L2) + 2 * (all pixels) + (normalised target)
    void select(const ModelChoice& m) {
        const int index = 4 * (m.loss == "l2") + 2 * (m.region == "all") + (m.target == "norm");
        select_index<0>(index);
    }
    /// Bytes forward() and backward() may allocate for a batch of B: the most any of the eight losses does.
    static std::size_t activation_bytes(int B) {
        return max_bytes(B, std::make_index_sequence<std::variant_size_v<Any>>{});
    }
    /// The chosen loss, as weights files record it (model/model_kind.hpp).
    std::string kind() const {
        return std::visit([](const auto& l) { return l.kind(); }, any_);
    }
    T forward(const T* pred, const T* target, const T* mask, int B) const {
        return std::visit([&](const auto& l) { return l.forward(pred, target, mask, B); }, any_);
    }
    void backward(T* dpred, T* dtarget, T dloss, const T* pred, const T* target, const T* mask, int B) const {
        std::visit([&](const auto& l) { l.backward(dpred, dtarget, dloss, pred, target, mask, B); }, any_);
    }
    double denominator(const T* mask, int B) const {
        return std::visit([&](const auto& l) { return l.denominator(mask, B); }, any_);
    }

private:
    template <std::size_t... I>
    static std::size_t max_bytes(int B, std::index_sequence<I...>) {
        return std::max({std::variant_alternative_t<I, Any>::activation_bytes(B)...});
    }
    template <std::size_t I>
    void select_index(int index) {
        if constexpr (I < std::variant_size_v<Any>) {
            if (static_cast<std::size_t>(index) == I) any_.template emplace<I>();
            else select_index<I + 1>(index);
        }
    }
    Any any_;
};

/// The model type of a (config, ViT form, head, resolution) choice, with the run-time loss.
template <ViTConfig C, bool Official, bool Mlp, int R>
using VariantModel = SimMIM<std::conditional_t<Official, OfficialViTEncoder<float, C>, ViTEncoder<float, C>>,
                            std::conditional_t<Mlp, MLPHead<float, C, C.embed_dim, R>, LinearHead<float, C, R>>,
                            RuntimeLoss<float, C.geometry(), R>, RandomMaskPatch>;

/// The Swin model of a Swin preset: the official head at full resolution, the run-time loss.
template <SwinConfig C>
using SwinVariantModel = SimMIM<SwinEncoder<float, C>, LinearHead<float, C>, RuntimeLoss<float, SwinEncoder<float, C>::geometry, C.image_size>,
                                RandomMaskPatch>;

/// Calls f.template operator()<Model>() with the model type `m` asks for, or throws UsageError naming what this
/// binary does not offer. The caller selects the loss with model.loss_function().select(m).
template <ViTConfig C, class F>
void dispatch_model(const ModelChoice& m, F&& f) {
    constexpr int S = C.image_size, g = C.grid();
    const int R = m.pred_resolution == 0 ? S : m.pred_resolution;
    if (m.model_is_default()) return f.template operator()<VariantModel<C, false, false, S>>();
    if constexpr (offers_ablations<C>()) {
        if (m.vit == "official" && m.head == "linear" && R == S) return f.template operator()<VariantModel<C, true, false, S>>();
        if (m.vit == "common" && m.head == "mlp" && R == S) return f.template operator()<VariantModel<C, false, true, S>>();
        if (m.vit == "common" && m.head == "linear") {
            if constexpr (S % 2 == 0 && (S / 2) % g == 0)
                if (R == S / 2) return f.template operator()<VariantModel<C, false, false, S / 2>>();
            if (R == g) return f.template operator()<VariantModel<C, false, false, g>>();
        }
        throw UsageError("this binary offers one model change at a time for this preset: --vit official, --head mlp, or "
                         "--pred-resolution " + std::to_string(S / 2) + " or " + std::to_string(g) +
                         " (the library composes any; see docs/ablations.md); asked for --vit " + m.vit + " --head " + m.head +
                         " --pred-resolution " + std::to_string(R));
    } else {
        std::string offered;
        for (const auto n : kAblationPresets) offered += (offered.empty() ? "" : ", ") + std::string(n);
        throw UsageError("--vit/--head/--pred-resolution variants are offered for the presets " + offered +
                         " only (the library composes any; see docs/ablations.md)");
    }
}

/// For the preset called `name` (ViT or Swin): f.template operator()<Config, Model>() with the model type `m`
/// asks for (dispatch_model for a ViT; a Swin preset offers its one model with every loss choice). Returns
/// false for an unknown name; throws UsageError for a variant this binary does not offer or a preset left out of this
/// build (example_presets.hpp).
template <class F>
bool dispatch_preset_model(std::string_view name, const ModelChoice& m, F&& f) {
    if (dispatch_vit_preset(name, [&]<ViTConfig C>() { dispatch_model<C>(m, [&]<class Model>() { f.template operator()<C, Model>(); }); }))
        return true;
    return dispatch_swin(name, [&]<SwinConfig C>() {
        if (!m.model_is_default() || m.drop_path > 0)
            throw UsageError("the Swin presets offer the official Swin model (linear head at full resolution, no drop path) with every "
                             "--loss, --loss-region and --target choice; --vit, --head, --pred-resolution and --drop-path are for the ViT presets");
        f.template operator()<C, SwinVariantModel<C>>();
    });
}

/// "official" when a checkpoint or weights file holds an official-form ViT encoder, else "common": from the
/// file's metadata "simmim.encoder" (model/model_kind.hpp), or, for files written before it was recorded,
/// from the tensor names (the official form's shared relative position bias table).
inline std::string checkpoint_vit_form(const std::string& path) {
    const auto metadata = io::read_safetensors_metadata(path);
    if (const auto it = metadata.find("simmim.encoder"); it != metadata.end()) {
        if (it->second == "vit-official") return "official";
        if (it->second == "vit") return "common";
        throw std::runtime_error(path + ": holds a '" + it->second + "' encoder; this program handles the ViT forms 'vit' and 'vit-official'");
    }
    const auto file = io::read_safetensors(path);
    return file.contains("encoder.rel_pos_bias.relative_position_bias_table") ? "official" : "common";
}

}  // namespace simmim::examples
