// simmim/model/reconstruction_loss.hpp: the SimMIM loss with the paper's ablations as a type,
// ReconstructionLoss<T, EncoderGeometry, LossSpec> (a ViTConfig converts to its geometry). The token mask
// is on the encoder's mask grid m (the patch grid of a ViT, the stage-1 patch grid of Swin).
//
// LossSpec chooses (defaults = the official loss, ops/masked_l1.hpp, bit for bit):
//   norm        L1 (official) or L2 (F.mse_loss, no 1/2): paper finding 2, "L1, smooth-L1 and L2 are close"
//   region      Masked (official: only masked pixels) or All (every pixel): finding 4, masked-only is better
//   target      Raw (the normalised input image itself, official) or Normalized: the SwinV2 per-pixel
//               target (x - mean) / sqrt(var + 1e-6) over a norm_window x norm_window window (47 by default,
//               unbiased variance, padded pixels not counted), as norm_targets in the official code
//   resolution  R, the prediction resolution (finding 6): 0 means the image size S. The head predicts a
//               (B, C, R, R) image; the mask is repeated r = R / m times per side (m the mask grid); the target is the
//               image downsampled to R x R by area averaging (F.avg_pool2d with kernel S / R) and the token
//               mask is repeated r times per side. The paper only says the original image is downsampled
//               to the lower resolution; area averaging is the filter we chose (each target pixel is the
//               mean of the image pixels it stands for).
// Order: downsample first, then normalise. Normalisation of the loss: masked, sum(e * mask_px) /
// (sum(mask_px) + 1e-5) / C; all, the mean over all B * C * R * R values.
//
// Gradient with respect to the target: backward() adds d loss / d image into dimage when
// target_gradient is true (Raw targets: -d loss / d pred, through the adjoint of the area averaging
// when R < S). For the Normalized target, target_gradient is false: the target is a constant (no gradient
// flows through the mean / variance; the official code computes it from the input, which does not
// require grad) and dimage is never touched.
#pragma once

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "simmim/core/geometry.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/ops/masked_l1.hpp"
#include "simmim/ops/pixel_loss.hpp"
#include "simmim/ops/pixel_targets.hpp"

namespace simmim {

enum class LossNorm { L1, L2 };
enum class LossRegion { Masked, All };
enum class LossTarget { Raw, Normalized };

/// The loss options, a structural type used as a template argument: ReconstructionLoss<T, C, {.norm = LossNorm::L2}>.
struct LossSpec {
    LossNorm norm = LossNorm::L1;
    LossRegion region = LossRegion::Masked;
    LossTarget target = LossTarget::Raw;
    int resolution = 0;    // R, the prediction resolution; 0 = the image size
    int norm_window = 47;  // side of the Normalized target's window (odd); unused for Raw
};

template <class T, EncoderGeometry G, LossSpec Spec = LossSpec{}>
class ReconstructionLoss {
public:
    using scalar_type = T;
    static constexpr LossSpec spec = Spec;
    static constexpr EncoderGeometry geometry = G;
    static constexpr int S = G.image_size, Cin = G.in_chans, g = G.mask_grid;
    /// R: the prediction (and target) resolution; r = R / g pixels per mask-grid cell side; k = S / R image pixels per target pixel side.
    static constexpr int resolution = Spec.resolution == 0 ? S : Spec.resolution;
    static constexpr int R = resolution, r = R / g, k = S / R;
    static constexpr bool normalized = Spec.target == LossTarget::Normalized;
    static constexpr bool masked_only = Spec.region == LossRegion::Masked;
    static constexpr bool squared = Spec.norm == LossNorm::L2;
    /// True when backward() adds d loss / d image (Raw targets); false for the Normalized target, a constant.
    static constexpr bool target_gradient = !normalized;
    /// True when the target differs from the image (downsampled and / or normalised) and forward() keeps it.
    static constexpr bool derived_target = normalized || R != S;

    static_assert(ValidGeometry<G>::value);
    static_assert(R > 0 && R % g == 0 && S % R == 0,
                  "simmim: the loss resolution must be a positive multiple of the encoder's mask grid "
                  "that divides image_size");
    static_assert(!normalized || (Spec.norm_window >= 3 && Spec.norm_window % 2 == 1),
                  "simmim: the normalised target's window (LossSpec::norm_window) must be odd and at least 3");
    static_assert(!normalized || R >= 2, "simmim: the normalised target needs a resolution of at least 2");

    /// Bytes forward() and backward() allocate for a batch of B: the derived target (B, C, R, R) when the
    /// target is not the image itself, and d target when R < S (backward with d image).
    static std::size_t activation_bytes(int B) {
        const std::size_t plane = static_cast<std::size_t>(B) * Cin * R * R * sizeof(T);
        return (derived_target ? plane : 0) + (target_gradient && R != S ? plane : 0);
    }

    /// What weights files record (model/model_kind.hpp), e.g. "l2,all,norm(window=47),resolution=8".
    static std::string kind() {
        return std::string(squared ? "l2" : "l1") + (masked_only ? ",masked" : ",all") +
               (normalized ? ",norm(window=" + std::to_string(Spec.norm_window) + ")" : std::string(",raw")) +
               ",resolution=" + std::to_string(R);
    }

    /// Returns the loss. pred (B, C, R, R); image (B, C, S, S), the model input; mask (B, g, g) on the mask grid, 1 = masked.
    /// Keeps the derived target (B, C, R, R) for backward() and target().
    T forward(const T* pred, const T* image, const T* mask, int B) const {
        if (B < 1) throw std::invalid_argument("ReconstructionLoss::forward: expected a batch B >= 1, found " + std::to_string(B));
        const T* tgt = image;
        if constexpr (derived_target) {
            make_target(target_.data_for(B), image, B);
            target_batch_ = B;
            tgt = target_.values.data();
        }
        if constexpr (!squared && masked_only) return ops::masked_l1_forward(pred, tgt, mask, B, Cin, R, r);
        else return ops::pixel_loss_forward<squared, masked_only>(pred, tgt, mask, B, Cin, R, r);
    }

    /// What forward() divides the summed error by: (masked pixels + 1e-5) * C, or B * C * R * R for all pixels. A
    /// loss over a batch split into parts is the sum of the parts' losses weighted by denominator(part) /
    /// denominator(batch) (dist/mpi.hpp).
    double denominator(const T* mask, int B) const { return ops::detail::pixel_loss_denominator<masked_only>(mask, B, Cin, R, r); }

    /// Accumulates dloss * d loss / d pred into dpred (B, C, R, R) and, if target_gradient and dimage is not
    /// null, dloss * d loss / d image into dimage (B, C, S, S). Uses the target of the last forward(), which
    /// must have been called with the same image and B (the op contract: forward caches, backward uses).
    void backward(T* dpred, T* dimage, T dloss, const T* pred, const T* image, const T* mask, int B) const {
        const T* tgt = image;
        if constexpr (derived_target) {
            if (target_batch_ != B)
                throw std::logic_error("ReconstructionLoss::backward: expected a forward() with batch " + std::to_string(B) +
                                       " first, found " + (target_batch_ < 0 ? std::string("none") : "batch " + std::to_string(target_batch_)));
            tgt = target_.values.data();
        }
        T* dtarget = nullptr;  // d loss / d target (B, C, R, R), or null when not wanted
        if constexpr (target_gradient) {
            if (dimage) {
                if constexpr (R == S) dtarget = dimage;
                else dtarget = dtarget_.zeroed(B);
            }
        }
        if constexpr (!squared && masked_only) ops::masked_l1_backward(dpred, dtarget, dloss, pred, tgt, mask, B, Cin, R, r);
        else ops::pixel_loss_backward<squared, masked_only>(dpred, dtarget, dloss, pred, tgt, mask, B, Cin, R, r);
        if constexpr (target_gradient && R != S) {
            if (dimage) ops::area_downsample_backward(dimage, dtarget, B, Cin, S, R);
        }
    }

    /// target (B, C, R, R) of image (B, C, S, S): area-averaged to R x R, then normalised if Normalized.
    static void make_target(T* target, const T* image, int B) {
        const T* src = image;
        if constexpr (R != S) {
            ops::area_downsample_forward(target, image, B, Cin, S, R);
            src = target;
        }
        if constexpr (normalized) ops::normalize_target(target, src, B, Cin, R, Spec.norm_window);
        else if constexpr (R == S) std::copy(image, image + static_cast<std::ptrdiff_t>(B) * Cin * S * S, target);
    }

private:
    struct Buffer {  // scratch that keeps its storage across steps
        AlignedVector<T> values;
        T* data_for(int B) {
            values.resize(static_cast<std::size_t>(B) * Cin * R * R);
            return values.data();
        }
        T* zeroed(int B) {
            values.assign(static_cast<std::size_t>(B) * Cin * R * R, T(0));
            return values.data();
        }
    };
    // Written by the const forward()/backward() as the Loss concept requires: one loss object must not
    // be used by two threads at once (a model owns its own).
    mutable Buffer target_;   // (B, C, R, R) the last forward's target, when derived_target
    mutable Buffer dtarget_;  // (B, C, R, R) d loss / d target, when R < S
    mutable int target_batch_ = -1;
};

}  // namespace simmim
