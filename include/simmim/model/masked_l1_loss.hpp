// simmim/model/masked_l1_loss.hpp: the official loss as a model part (see ops/masked_l1.hpp).
// ReconstructionLoss<T, C> (model/reconstruction_loss.hpp) generalises it (L1/L2, masked/all pixels,
// normalised target, prediction resolution); with its defaults it gives the same bits as this one.
#pragma once

#include <string>

#include "simmim/core/geometry.hpp"
#include "simmim/ops/masked_l1.hpp"
#include "simmim/ops/pixel_loss.hpp"

namespace simmim {

template <class T, EncoderGeometry G>
struct MaskedL1Loss {
    using scalar_type = T;
    static constexpr EncoderGeometry geometry = G;
    static constexpr int Cin = G.in_chans, S = G.image_size, p = G.mask_cell();
    /// What weights files record (model/model_kind.hpp): the official loss.
    static std::string kind() { return "l1,masked,raw,resolution=" + std::to_string(S); }
    /// pred, target: (B, C, S, S); mask: (B, m*m) on the encoder's mask grid, 1 = masked.
    T forward(const T* pred, const T* target, const T* mask, int B) const {
        return ops::masked_l1_forward(pred, target, mask, B, Cin, S, p);
    }
    /// What forward() divides the summed error by: (masked pixels + 1e-5) * C. A loss over a batch split into
    /// parts is the sum of the parts' losses weighted by denominator(part) / denominator(batch).
    double denominator(const T* mask, int B) const { return ops::detail::pixel_loss_denominator<true>(mask, B, Cin, S, p); }
    /// Accumulates dloss * d/dpred into dpred, and d/dtarget into dtarget when not null.
    void backward(T* dpred, T* dtarget, T dloss, const T* pred, const T* target, const T* mask, int B) const {
        ops::masked_l1_backward(dpred, dtarget, dloss, pred, target, mask, B, Cin, S, p);
    }
};

}  // namespace simmim
