// simmim/core/swin_config.hpp: compile-time configuration of a Swin Transformer encoder (Liu et al., ICCV
// 2021) as SimMIM uses it (microsoft/SimMIM models/swin_transformer.py, SwinTransformerForSimMIM), and the
// named Swin presets.
//
// Stage i (0-based) works on a grid of side r_i = (S / p) / 2^i with C_i = C * 2^i channels and heads_i
// heads, in windows of side w_i: the official clamp rule makes a stage whose resolution is not larger
// than the window one window of the whole grid (w_i = r_i) without shift; otherwise w_i = window and the
// odd blocks of the stage shift by window / 2. Every stage but the last ends with a 2x2 patch merging.
// The geometry handed to the rest of the model: the mask is on the stage-0 patch grid (S / p), the
// features on the last stage's grid (stride p * 2^(stages-1)) with C * 2^(stages-1) channels.
#pragma once

#include <array>
#include <string_view>
#include <utility>

#include "simmim/core/config.hpp"
#include "simmim/core/geometry.hpp"
#include "simmim/masking/mask_spec.hpp"

namespace simmim {

/// Configuration of a Swin encoder; used as a template argument (a structural type).
struct SwinConfig {
    static constexpr int kMaxStages = 4;
    int image_size = 192;  // S = H = W (square input, as the official code requires)
    int in_chans = 3;      // C_in
    int patch_size = 4;    // p: the stage-0 token side in pixels
    int window_size = 6;   // w: attention window side (clamped per stage, see above)
    int embed_dim = 128;   // C: channels of stage 0
    int num_stages = 4;
    std::array<int, kMaxStages> depths{2, 2, 18, 2};     // blocks per stage (entries past num_stages unused)
    std::array<int, kMaxStages> num_heads{4, 8, 16, 32};  // heads per stage
    int mlp_ratio = 4;

    constexpr int grid() const { return image_size / patch_size; }                // stage-0 grid side
    constexpr int resolution(int stage) const { return grid() >> stage; }        // r_i
    constexpr int dim(int stage) const { return embed_dim << stage; }            // C_i
    constexpr int heads(int stage) const { return num_heads[static_cast<std::size_t>(stage)]; }
    constexpr int depth(int stage) const { return depths[static_cast<std::size_t>(stage)]; }
    /// The clamp rule of SwinTransformerBlock.__init__: window r_i and no shift when r_i <= window.
    constexpr bool clamped(int stage) const { return resolution(stage) <= window_size; }
    constexpr int window(int stage) const { return clamped(stage) ? resolution(stage) : window_size; }
    constexpr int shift(int stage) const { return clamped(stage) ? 0 : window_size / 2; }  // of the odd blocks
    constexpr int total_depth() const {
        int n = 0;
        for (int i = 0; i < num_stages; ++i) n += depth(i);
        return n;
    }
    constexpr int num_features() const { return dim(num_stages - 1); }           // C * 2^(stages-1)
    constexpr int stride() const { return patch_size << (num_stages - 1); }      // decoder stride
    constexpr int image_numel() const { return in_chans * image_size * image_size; }
    constexpr EncoderGeometry geometry() const {
        return {image_size, in_chans, grid(), image_size / stride(), num_features()};
    }
    constexpr operator EncoderGeometry() const { return geometry(); }
    constexpr bool operator==(const SwinConfig&) const = default;
};

namespace detail {
template <SwinConfig C>
constexpr bool swin_windows_divide() {
    for (int i = 0; i < C.num_stages; ++i)
        if (!C.clamped(i) && C.resolution(i) % C.window_size != 0) return false;
    return true;
}
template <SwinConfig C>
constexpr bool swin_merges_even() {
    for (int i = 0; i + 1 < C.num_stages; ++i)
        if (C.resolution(i) % 2 != 0 || C.resolution(i) < 2) return false;
    return true;
}
template <SwinConfig C>
constexpr bool swin_heads_divide() {
    for (int i = 0; i < C.num_stages; ++i)
        if (C.heads(i) <= 0 || C.dim(i) % C.heads(i) != 0) return false;
    return true;
}
template <SwinConfig C>
constexpr bool swin_depths_positive() {
    for (int i = 0; i < C.num_stages; ++i)
        if (C.depth(i) <= 0) return false;
    return true;
}
}  // namespace detail

/// Every constraint of the official code, checked at compile time with a readable message.
template <SwinConfig C>
struct ValidSwinConfig {
    static_assert(C.num_stages >= 1 && C.num_stages <= SwinConfig::kMaxStages, "simmim: a Swin encoder has 1 to 4 stages");
    static_assert(C.image_size > 0 && C.in_chans > 0 && C.patch_size > 0 && C.window_size > 0 && C.embed_dim > 0 &&
                      C.mlp_ratio > 0,
                  "simmim: every size in SwinConfig must be positive");
    static_assert(detail::swin_depths_positive<C>(), "simmim: every Swin stage needs at least one block (depths)");
    static_assert(C.image_size % C.patch_size == 0, "simmim: Swin image_size must be a multiple of patch_size");
    static_assert(detail::swin_heads_divide<C>(), "simmim: every Swin stage's channels (embed_dim * 2^i) must be a multiple of its num_heads");
    static_assert(detail::swin_merges_even<C>(),
                  "simmim: every Swin stage before the last needs an even resolution (patch merging halves it)");
    static_assert(detail::swin_windows_divide<C>(),
                  "simmim: a Swin stage whose resolution is larger than window_size needs resolution % window_size == 0");
    static_assert(C.image_size % C.stride() == 0, "simmim: the decoder stride patch_size * 2^(stages-1) must divide image_size");
    static constexpr bool value = true;
};

namespace presets {
/// 16 px, 3 channels, patch 2, window 4, dim 16, depths [2, 2], heads [2, 4]: a shifted stage (8 px grid,
/// window 4) and a clamped one (4 px grid); decoder stride 4. The float64 fixture's configuration.
inline constexpr SwinConfig swin_tiny_test{16, 3, 2, 4, 16, 2, {2, 2, 0, 0}, {2, 4, 0, 0}, 4};
/// For 32 px images (CIFAR) and their grey form (Fashion-MNIST): stages of 16, 8 and 4 px, stride 8.
inline constexpr SwinConfig swin_d32{32, 3, 2, 4, 48, 3, {2, 2, 6, 0}, {3, 6, 12, 0}, 4};
inline constexpr SwinConfig swin_d32_c1{32, 1, 2, 4, 48, 3, {2, 2, 6, 0}, {3, 6, 12, 0}, 4};
/// The official SimMIM Swin-B at 192 px, window 6 (stage 4 clamped), stride 32.
inline constexpr SwinConfig swin_b_192{192, 3, 4, 6, 128, 4, {2, 2, 18, 2}, {4, 8, 16, 32}, 4};
/// The second fixture's configuration: a stage whose window is clamped to a smaller grid (2 < 4), 1 channel.
inline constexpr SwinConfig swin_clamp_test{16, 1, 2, 4, 8, 3, {2, 2, 2, 0}, {2, 2, 4, 0}, 4};

inline constexpr MaskSpec mask_swin_16px{4, 0.6};

struct NamedSwin {
    std::string_view name;
    SwinConfig config;
    MaskSpec mask;  // the default masking of the preset's recipe
};
inline constexpr std::array<NamedSwin, 5> swin_all{{{"swin-tiny-test", swin_tiny_test, mask_swin_16px},
                                                    {"swin-d32", swin_d32, mask_32px},
                                                    {"swin-d32-c1", swin_d32_c1, mask_32px},
                                                    {"swin-b-192", swin_b_192, mask_224px},
                                                    {"swin-clamp-test", swin_clamp_test, mask_swin_16px}}};

/// The Swin preset called `name`, or nullptr.
constexpr const NamedSwin* find_swin(std::string_view name) {
    for (const auto& p : swin_all)
        if (p.name == name) return &p;
    return nullptr;
}
}  // namespace presets

/// Calls f.template operator()<Config>() for the Swin preset called `name`; returns false if there is none.
template <class F>
bool dispatch_swin_preset(std::string_view name, F&& f) {
    bool found = false;
    auto visit = [&]<std::size_t... I>(std::index_sequence<I...>) {
        ((name == presets::swin_all[I].name ? (f.template operator()<presets::swin_all[I].config>(), found = true) : false), ...);
    };
    visit(std::make_index_sequence<presets::swin_all.size()>{});
    return found;
}

}  // namespace simmim
