// simmim/model/simmim_model.hpp: a SimMIM model composed from an encoder, a head, a loss and a
// masking policy; it owns the parameter arena all parts register into.
//
// The encoder owns the geometry (Enc::geometry, core/geometry.hpp): the mask is (B, m*m) on its mask
// grid, the features (B, o*o, D_out) on its output grid, and the head and the loss must be built for that
// geometry (static_asserts say so). The head predicts a (B, C, R, R) image, R = pred_size (Head::out_size,
// the image size for heads without one); the loss must work at the same resolution (Loss::resolution,
// likewise). The ablations of the paper are types:
//   SimMIM<ViTEncoder<T, C>, MLPHead<T, C, 512, 8>, ReconstructionLoss<T, C, {.norm = LossNorm::L2, .resolution = 8}>, RandomMaskPatch>
// (a ViTConfig C converts to its geometry where a head or loss expects one).
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/core/geometry.hpp"
#include "simmim/core/random.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/masking/masking.hpp"
#include "simmim/model/concepts.hpp"
#include "simmim/model/linear_head.hpp"
#include "simmim/model/masked_l1_loss.hpp"
#include "simmim/model/mlp_head.hpp"
#include "simmim/model/model_kind.hpp"
#include "simmim/model/reconstruction_loss.hpp"
#include "simmim/model/vit_encoder.hpp"

namespace simmim {

namespace detail {
/// Hd::out_size when the head declares one (the side of its prediction), else the image size S.
template <class Hd, int S>
constexpr int head_out_size() {
    if constexpr (requires { Hd::out_size; }) return Hd::out_size;
    else return S;
}
/// Ls::resolution when the loss declares one (the side of the prediction it expects), else S.
template <class Ls, int S>
constexpr int loss_resolution() {
    if constexpr (requires { Ls::resolution; }) return Ls::resolution;
    else return S;
}
/// The geometry a head or loss was built for, when it declares one.
template <class Part>
constexpr bool built_for(const EncoderGeometry& g) {
    if constexpr (requires { Part::geometry; }) return Part::geometry == g;
    else return true;
}
}  // namespace detail

template <Encoder Enc, Head Hd, Loss Ls, MaskingPolicy Mask>
class SimMIM {
public:
    using scalar_type = typename Enc::scalar_type;
    using T = scalar_type;
    using encoder_type = Enc;
    using head_type = Hd;
    using loss_type = Ls;
    using masking_type = Mask;
    static_assert(std::is_same_v<T, typename Hd::scalar_type> && std::is_same_v<T, typename Ls::scalar_type>,
                  "simmim: encoder, head and loss must use the same scalar type");
    static constexpr EncoderGeometry geometry = Enc::geometry;
    static_assert(detail::built_for<Hd>(geometry), "simmim: the head was built for another encoder geometry (Head::geometry)");
    static_assert(detail::built_for<Ls>(geometry), "simmim: the loss was built for another encoder geometry (Loss::geometry)");
    static constexpr int S = geometry.image_size, Cin = geometry.in_chans;
    /// Mask entries per sample (the mask grid m*m) and feature rows per sample (the output grid o*o) of width D.
    static constexpr int mask_tokens = geometry.mask_tokens(), L = geometry.out_tokens(), D = geometry.out_dim;
    static constexpr int mask_grid = geometry.mask_grid;
    static constexpr std::size_t image_numel = static_cast<std::size_t>(geometry.image_numel());
    /// Side of the prediction: pred() is (B, C, pred_size, pred_size); the image size unless the head and
    /// loss work at a lower prediction resolution.
    static constexpr int pred_size = detail::head_out_size<Hd, S>();
    static constexpr std::size_t pred_numel = static_cast<std::size_t>(Cin) * pred_size * pred_size;
    static_assert(pred_size == detail::loss_resolution<Ls, S>(),
                  "simmim: the head's prediction size (Head::out_size) and the loss's resolution (Loss::resolution) "
                  "must agree");

    /// Builds the parts and initialises the parameters from `seed` (see init()).
    explicit SimMIM(Mask masking, std::uint64_t seed = 0)
        : encoder_(arena_), head_(arena_), masking_(std::move(masking)) {
        if (masking_.token_grid() != mask_grid)
            throw std::invalid_argument("SimMIM: the masking policy's token grid " + std::to_string(masking_.token_grid()) +
                                        " is not the encoder's mask grid " + std::to_string(mask_grid));
        arena_.allocate();
        init(seed);
    }
    SimMIM(const SimMIM&) = delete;
    SimMIM& operator=(const SimMIM&) = delete;

    /// Initialises every parameter as it registered itself (ParamArena::initialize): for the common
    /// ViT, truncated normal (std 0.02, cut at +-2) weights and tokens, zero biases, LayerNorm 1 / 0.
    /// Reproducible from `seed` and independent of the thread count.
    void init(std::uint64_t seed) { arena_.initialize(seed); }

    /// Loss of a batch: images (B, C, S, S) normalised, mask (B, m, m) on the encoder's mask grid, 1 = masked.
    /// Keeps what backward() needs; pred() holds the head output (B, C, pred_size, pred_size).
    T forward(const T* images, const T* mask, int B) {
        if (B <= 0) throw std::invalid_argument("SimMIM::forward: batch must be positive");
        batch_ = B;
        images_ = images;
        mask_.assign(mask, mask + static_cast<std::ptrdiff_t>(B) * mask_tokens);
        features_.resize(static_cast<std::size_t>(B) * L * D);
        pred_.resize(static_cast<std::size_t>(B) * pred_numel);
        encoder_.forward(features_.data(), images, mask_.data(), B);
        head_.forward(pred_.data(), features_.data(), B);
        loss_ = loss_fn_.forward(pred_.data(), images, mask_.data(), B);
        return loss_;
    }

    /// Accumulates dloss * d loss / d parameter into the arena's gradients (call zero_grad() first for a fresh
    /// step). If dimages is not null, accumulates dloss * d loss / d images into it (B, C, S, S): through the
    /// encoder and, when the loss has a gradient for its target (ReconstructionLoss::target_gradient:
    /// raw pixels, not the normalised target, which is a constant), directly through the target. A data-
    /// parallel run passes dloss = loss_denominator(its samples) / loss_denominator(the whole batch), so that
    /// the gradients summed over the processes are those of the whole batch.
    void backward(T* dimages = nullptr, T dloss = T(1)) {
        const std::size_t B = static_cast<std::size_t>(batch_);
        dpred_.assign(B * pred_numel, T(0));
        loss_fn_.backward(dpred_.data(), dimages, dloss, pred_.data(), images_, mask_.data(), batch_);
        dfeatures_.resize(B * L * D);
        head_.backward(dfeatures_.data(), dpred_.data());
        encoder_.backward(dfeatures_.data(), dimages);
    }

    /// What the loss divides the summed error of a batch of B with `mask` (B, m*m) by (Loss::denominator: the
    /// masked pixels, or all of them), or B for a loss that does not say.
    double loss_denominator(const T* mask, int B) const {
        if constexpr (requires { loss_fn_.denominator(mask, B); }) return loss_fn_.denominator(mask, B);
        else return double(B);
    }

    /// Bytes of activations a training step (forward + backward(dimages)) allocates for a batch of B:
    /// the encoder's, the head's, the loss's (parts that do not say count as 0) and the model's own mask,
    /// features, prediction and their gradients. Printed by simmim_pretrain and bench_train_step;
    /// tests/test_encoder_parts.cpp checks it against what a step really allocates.
    static std::size_t activation_bytes(int B) {
        std::size_t n = static_cast<std::size_t>(B) * sizeof(T) *
                        (static_cast<std::size_t>(mask_tokens) + 2 * static_cast<std::size_t>(L) * D + 2 * pred_numel);
        if constexpr (requires { Enc::activation_bytes(B); }) n += Enc::activation_bytes(B);
        if constexpr (requires { Hd::activation_bytes(B); }) n += Hd::activation_bytes(B);
        if constexpr (requires { Ls::activation_bytes(B); }) n += Ls::activation_bytes(B);
        return n;
    }

    /// What this model is, as recorded in weights files and checkpoints (model/model_kind.hpp): encoder
    /// form and configuration, geometry, head and loss.
    std::map<std::string, std::string> metadata() const { return model_kind<Enc>(head_, loss_fn_); }

    /// The encoder's constant buffers (ModelBuffer; empty for an encoder without any).
    std::vector<ModelBuffer> buffers() const {
        if constexpr (requires { encoder_.buffers(); }) return encoder_.buffers();
        else return {};
    }

    /// Draw a batch of masks with the model's masking policy: mask (B, m, m).
    void draw_mask(std::uint64_t seed, std::int64_t step, int B, T* mask) const { masking_.generate(seed, step, B, mask); }

    void zero_grad() { arena_.zero_grad(); }
    ParamArena<T>& params() noexcept { return arena_; }
    const ParamArena<T>& params() const noexcept { return arena_; }
    const AlignedVector<T>& pred() const noexcept { return pred_; }    // (B, C, pred_size, pred_size)
    const AlignedVector<T>& mask() const noexcept { return mask_; }    // (B, m, m)
    T loss() const noexcept { return loss_; }
    Enc& encoder() noexcept { return encoder_; }
    const Enc& encoder() const noexcept { return encoder_; }
    Hd& head() noexcept { return head_; }
    const Ls& loss_function() const noexcept { return loss_fn_; }
    Ls& loss_function() noexcept { return loss_fn_; }  // e.g. to configure a run-time loss
    const Mask& masking() const noexcept { return masking_; }

private:
    ParamArena<T> arena_;  // declared first: parts register into it while constructed
    Enc encoder_;
    Hd head_;
    Ls loss_fn_;
    Mask masking_;
    int batch_ = 0;
    const T* images_ = nullptr;
    AlignedVector<T> mask_, features_, pred_, dpred_, dfeatures_;
    T loss_ = 0;
};

/// The ViT SimMIM model of the core: common-form ViT, linear head, masked L1, official random masking.
template <class T, ViTConfig C>
using ViTSimMIM = SimMIM<ViTEncoder<T, C>, LinearHead<T, C>, MaskedL1Loss<T, C>, RandomMaskPatch>;


}  // namespace simmim
