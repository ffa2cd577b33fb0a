// simmim/masking/mask_spec.hpp: the parameters of the official random mask-patch policy, as a
// structural type (a template argument where a model is composed, see random_mask_patch<G, M>()).
#pragma once

namespace simmim {

/// Mask patch side in pixels and the fraction of mask patches masked (paper defaults: 32 and 0.6).
struct MaskSpec {
    int patch_size = 32;
    double ratio = 0.6;
    constexpr bool operator==(const MaskSpec&) const = default;
};

}  // namespace simmim
