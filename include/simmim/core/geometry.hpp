// simmim/core/geometry.hpp: what the rest of a SimMIM model needs to know of its encoder.
//
// An encoder takes an image (B, C, S, S) and a token mask on its *mask grid* (B, m, m) (1 = masked) and
// hands the head a feature map on its *output grid* (B, o*o, D_out), o = S / stride. For a ViT both grids
// are the patch grid (stride = patch size); for Swin the mask grid is the stage-1 patch grid (stride 4)
// and the output grid is that of the last stage (stride 32): Swin-B at 192 px takes a 48x48 mask and
// hands the head a 6x6 map of 1024 channels. Heads are parameterised by the output side, the loss by the
// mask side, and the model sizes the mask and the features separately.
#pragma once

namespace simmim {

/// The geometry of an encoder, a structural type used as a template argument (LinearHead<T, G>, ...).
struct EncoderGeometry {
    int image_size = 0;  // S: input images are (C, S, S)
    int in_chans = 0;    // C
    int mask_grid = 0;   // m: the token mask is (m, m); m divides S
    int out_grid = 0;    // o: the features are (o*o, out_dim) in row-major grid order; o divides S
    int out_dim = 0;     // D_out: channels of the feature map

    constexpr int mask_cell() const { return image_size / mask_grid; }   // pixels per mask-grid cell side
    constexpr int out_stride() const { return image_size / out_grid; }   // pixels per feature position side
    constexpr int mask_tokens() const { return mask_grid * mask_grid; }  // entries of one sample's mask
    constexpr int out_tokens() const { return out_grid * out_grid; }     // feature rows of one sample
    constexpr int image_numel() const { return in_chans * image_size * image_size; }
    constexpr bool operator==(const EncoderGeometry&) const = default;
};

/// Checks a geometry at compile time, with readable messages.
template <EncoderGeometry G>
struct ValidGeometry {
    static_assert(G.image_size > 0 && G.in_chans > 0 && G.mask_grid > 0 && G.out_grid > 0 && G.out_dim > 0,
                  "simmim: every size of an EncoderGeometry must be positive");
    static_assert(G.image_size % G.mask_grid == 0, "simmim: the mask grid must divide the image size");
    static_assert(G.image_size % G.out_grid == 0, "simmim: the output grid must divide the image size");
    static constexpr bool value = true;
};

}  // namespace simmim
