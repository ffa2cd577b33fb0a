// simmim/core/config.hpp: compile-time model configuration and the named presets.
#pragma once

#include <array>
#include <string_view>
#include <utility>

namespace simmim {

/// Configuration of a ViT SimMIM model; used as a template argument (a structural type).
struct ViTConfig {
    int image_size = 224;      // H = W
    int in_chans = 3;          // C
    int patch_size = 16;       // p: model patch (token) size
    int embed_dim = 768;       // D
    int depth = 12;            // number of transformer blocks
    int num_heads = 12;        // H
    int mlp_ratio = 4;         // MLP hidden = mlp_ratio * D
    int mask_patch_size = 32;  // side of a masked square, in pixels
    double mask_ratio = 0.6;   // fraction of mask patches masked

    constexpr int grid() const { return image_size / patch_size; }                 // h = w
    constexpr int num_patches() const { return grid() * grid(); }                   // L
    constexpr int num_tokens() const { return num_patches() + 1; }                  // N = L + cls
    constexpr int head_dim() const { return embed_dim / num_heads; }                // Dh
    constexpr int mlp_hidden() const { return mlp_ratio * embed_dim; }              // 4D
    constexpr int patch_dim() const { return in_chans * patch_size * patch_size; }  // C*p*p
    constexpr int image_numel() const { return in_chans * image_size * image_size; }
};

/// Checks every impossible configuration at compile time, with a readable message.
template <ViTConfig C>
struct ValidConfig {
    static_assert(C.image_size > 0 && C.patch_size > 0 && C.in_chans > 0 && C.embed_dim > 0 && C.depth > 0 &&
                      C.num_heads > 0 && C.mlp_ratio > 0 && C.mask_patch_size > 0,
                  "simmim: every size in ViTConfig must be positive");
    static_assert(C.image_size % C.patch_size == 0, "simmim: image_size must be a multiple of patch_size");
    static_assert(C.mask_patch_size % C.patch_size == 0, "simmim: mask_patch_size must be a multiple of patch_size");
    static_assert(C.image_size % C.mask_patch_size == 0, "simmim: image_size must be a multiple of mask_patch_size");
    static_assert(C.embed_dim % C.num_heads == 0, "simmim: embed_dim must be a multiple of num_heads");
    static_assert(C.mask_ratio > 0.0 && C.mask_ratio < 1.0, "simmim: mask_ratio must lie in (0, 1)");
    static constexpr bool value = true;
};

/// The named presets of the example binaries.
namespace presets {
inline constexpr ViTConfig vit_t4_32{32, 3, 4, 192, 12, 3, 4, 8, 0.6};
inline constexpr ViTConfig vit_t4_32_c1{32, 1, 4, 192, 12, 3, 4, 8, 0.6};
inline constexpr ViTConfig vit_t16_224{224, 3, 16, 192, 12, 3, 4, 32, 0.6};
inline constexpr ViTConfig vit_s16_224{224, 3, 16, 384, 12, 6, 4, 32, 0.6};
inline constexpr ViTConfig vit_b16_224{224, 3, 16, 768, 12, 12, 4, 32, 0.6};
/// A small grey model for quick experiments (docs/results.md): 1/8 of vit-t4-32-c1's compute.
inline constexpr ViTConfig vit_m4_32_c1{32, 1, 4, 96, 6, 3, 4, 8, 0.6};
/// The tiny configuration of the PyTorch fixture (tests/fixtures/vit_tiny.safetensors).
inline constexpr ViTConfig vit_tiny_test{16, 3, 4, 32, 2, 2, 4, 8, 0.6};

struct Named {
    std::string_view name;
    ViTConfig config;
};
inline constexpr std::array<Named, 7> all{{{"vit-t4-32", vit_t4_32},
                                           {"vit-t4-32-c1", vit_t4_32_c1},
                                           {"vit-m4-32-c1", vit_m4_32_c1},
                                           {"vit-t16-224", vit_t16_224},
                                           {"vit-s16-224", vit_s16_224},
                                           {"vit-b16-224", vit_b16_224},
                                           {"vit-tiny-test", vit_tiny_test}}};
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
