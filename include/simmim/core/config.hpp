// simmim/core/config.hpp: compile-time model configuration and the named presets.
#pragma once

#include <array>
#include <string_view>
#include <utility>

#include "simmim/core/geometry.hpp"
#include "simmim/masking/mask_spec.hpp"

namespace simmim {

/// The sizes of one transformer block over a fixed number of tokens (a structural type).
struct BlockSpec {
    int dim = 0;         // D
    int tokens = 0;      // N
    int heads = 0;       // H
    int mlp_hidden = 0;  // F
    constexpr int head_dim() const { return dim / heads; }  // Dh
    constexpr bool operator==(const BlockSpec&) const = default;
};

/// Configuration of a ViT encoder; used as a template argument (a structural type). The masking
/// parameters are not part of it: they belong to the masking policy (MaskSpec, random_mask_patch).
/// A ViTConfig converts to its EncoderGeometry, so LinearHead<T, cfg> means LinearHead<T, cfg.geometry()>.
struct ViTConfig {
    int image_size = 224;      // H = W
    int in_chans = 3;          // C
    int patch_size = 16;       // p: model patch (token) size
    int embed_dim = 768;       // D
    int depth = 12;            // number of transformer blocks
    int num_heads = 12;        // H
    int mlp_ratio = 4;         // MLP hidden = mlp_ratio * D

    constexpr int grid() const { return image_size / patch_size; }                 // h = w
    constexpr int num_patches() const { return grid() * grid(); }                   // L
    constexpr int num_tokens() const { return num_patches() + 1; }                  // N = L + cls
    constexpr int head_dim() const { return embed_dim / num_heads; }                // Dh
    constexpr int mlp_hidden() const { return mlp_ratio * embed_dim; }              // 4D
    constexpr int patch_dim() const { return in_chans * patch_size * patch_size; }  // C*p*p
    constexpr int image_numel() const { return in_chans * image_size * image_size; }
    /// The mask grid and the output grid are both the patch grid; the features are D wide.
    constexpr EncoderGeometry geometry() const { return {image_size, in_chans, grid(), grid(), embed_dim}; }
    constexpr operator EncoderGeometry() const { return geometry(); }
    /// A block over the N = L + 1 tokens (cls first).
    constexpr BlockSpec block() const { return {embed_dim, num_tokens(), num_heads, mlp_hidden()}; }
    constexpr bool operator==(const ViTConfig&) const = default;
};

/// Checks every impossible configuration at compile time, with a readable message.
template <ViTConfig C>
struct ValidConfig {
    static_assert(C.image_size > 0 && C.patch_size > 0 && C.in_chans > 0 && C.embed_dim > 0 && C.depth > 0 &&
                      C.num_heads > 0 && C.mlp_ratio > 0,
                  "simmim: every size in ViTConfig must be positive");
    static_assert(C.image_size % C.patch_size == 0, "simmim: image_size must be a multiple of patch_size");
    static_assert(C.embed_dim % C.num_heads == 0, "simmim: embed_dim must be a multiple of num_heads");
    static constexpr bool value = true;
};

/// The named presets of the example binaries: an encoder configuration and the default masking of its
/// recipe (mask patch 32 at 224 px as the paper; 8 on the 32 px images, a quarter of the side).
namespace presets {
inline constexpr ViTConfig vit_t4_32{32, 3, 4, 192, 12, 3, 4};
inline constexpr ViTConfig vit_t4_32_c1{32, 1, 4, 192, 12, 3, 4};
inline constexpr ViTConfig vit_t16_224{224, 3, 16, 192, 12, 3, 4};
inline constexpr ViTConfig vit_s16_224{224, 3, 16, 384, 12, 6, 4};
inline constexpr ViTConfig vit_b16_224{224, 3, 16, 768, 12, 12, 4};
/// A small grey model for quick experiments (docs/results.md): 1/8 of vit-t4-32-c1's compute.
inline constexpr ViTConfig vit_m4_32_c1{32, 1, 4, 96, 6, 3, 4};
/// The tiny configuration of the PyTorch fixture (tests/fixtures/vit_tiny.safetensors).
inline constexpr ViTConfig vit_tiny_test{16, 3, 4, 32, 2, 2, 4};

inline constexpr MaskSpec mask_32px{8, 0.6};    // the 32 px presets and vit-tiny-test
inline constexpr MaskSpec mask_224px{32, 0.6};  // the paper's default

struct Named {
    std::string_view name;
    ViTConfig config;
    MaskSpec mask;  // the default masking of the preset's recipe
};
inline constexpr std::array<Named, 7> all{{{"vit-t4-32", vit_t4_32, mask_32px},
                                           {"vit-t4-32-c1", vit_t4_32_c1, mask_32px},
                                           {"vit-m4-32-c1", vit_m4_32_c1, mask_32px},
                                           {"vit-t16-224", vit_t16_224, mask_224px},
                                           {"vit-s16-224", vit_s16_224, mask_224px},
                                           {"vit-b16-224", vit_b16_224, mask_224px},
                                           {"vit-tiny-test", vit_tiny_test, mask_32px}}};

template <ViTConfig C>
constexpr bool is_preset() {
    for (const auto& p : all)
        if (p.config == C) return true;
    return false;
}
/// The default masking of the preset whose configuration is C (a compile-time error for any other C).
template <ViTConfig C>
constexpr MaskSpec mask_of() {
    static_assert(is_preset<C>(), "simmim: presets::mask_of<C>(): C is not the configuration of a named preset");
    for (const auto& p : all)
        if (p.config == C) return p.mask;
    return {};
}

/// The preset called `name`, or nullptr.
constexpr const Named* find(std::string_view name) {
    for (const auto& p : all)
        if (p.name == name) return &p;
    return nullptr;
}
}  // namespace presets

}  // namespace simmim

namespace simmim {

/// Calls f.template operator()<Config>() for the preset called `name`; returns false if there is none.
/// Instantiates f for every preset, so a binary that dispatches offers all of them.
template <class F>
bool dispatch_preset(std::string_view name, F&& f) {
    bool found = false;
    auto visit = [&]<std::size_t... I>(std::index_sequence<I...>) {
        ((name == presets::all[I].name ? (f.template operator()<presets::all[I].config>(), found = true) : false), ...);
    };
    visit(std::make_index_sequence<presets::all.size()>{});
    return found;
}

}  // namespace simmim
