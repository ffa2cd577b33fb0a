// simmim/model/linear_head.hpp: the official SimMIM head, Conv2d(D, r*r*C, 1) then PixelShuffle(r).
//
// R is the prediction resolution (default: the image size S, the official head with r = p): the head
// predicts a (B, C, R, R) image, r = R / g pixels per token side, g = S / p the token grid (paper,
// "prediction resolution": 12x12 ... 192x192 all work, 6x6 is worse). Pair it with a loss of the same
// resolution (ReconstructionLoss<T, C, {.resolution = R}>; SimMIM checks they agree).
// On token rows a 1x1 conv is a Linear (B*L, D) -> (B*L, r*r*C); PixelShuffle is ops::unpatchify.
#pragma once

#include <algorithm>
#include <cstddef>

#include "simmim/core/config.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/patch.hpp"

namespace simmim {

template <class T, ViTConfig C, int R = C.image_size>
class LinearHead {
public:
    using scalar_type = T;
    static constexpr int D = C.embed_dim, L = C.num_patches(), p = C.patch_size, Cin = C.in_chans, S = C.image_size;
    static constexpr int g = C.grid();
    static_assert(ValidConfig<C>::value);
    static_assert(R > 0 && R % g == 0 && S % R == 0,
                  "simmim: the head resolution R must be a positive multiple of the token grid (image_size / patch_size) "
                  "that divides image_size");
    /// The prediction is (B, C, out_size, out_size); r pixels per token side; P = r*r*C outputs per token.
    static constexpr int out_size = R, r = R / g, P = r * r * Cin;

    explicit LinearHead(ParamArena<T>& arena)
        : weight(arena.template add<Shape<P, D, 1, 1>>("decoder.0.weight", Init::TruncNormal002, true)),
          bias(arena.template add<Shape<P>>("decoder.0.bias", Init::Zeros, false)) {}

    /// pred (B, C, R, R) from features (B, L, D).
    void forward(T* pred, const T* features, int B) {
        features_ = features;
        batch_ = B;
        rows_.resize(B);
        ops::linear_forward(rows_.data(), features, weight.data(), bias.data(), static_cast<std::ptrdiff_t>(B) * L, D, P);
        ops::unpatchify(pred, rows_.data(), B, Cin, R, r);
    }
    /// Accumulates parameter gradients; writes dfeatures (B, L, D) (overwrites).
    void backward(T* dfeatures, const T* dpred) {
        ops::patchify(rows_.data(), dpred, batch_, Cin, R, r);  // rows_ now holds d rows
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(batch_) * L;
        std::fill_n(dfeatures, M * D, T(0));
        ops::linear_backward(dfeatures, weight.grad(), bias.grad(), rows_.data(), features_, weight.data(), M, D, P);
    }

    Param<T, Shape<P, D, 1, 1>> weight;
    Param<T, Shape<P>> bias;

private:
    const T* features_ = nullptr;  // (B, L, D), owned by the model, alive until backward
    int batch_ = 0;
    BatchTensor<T, Shape<L, P>> rows_;  // (B, L, r*r*C)
};

}  // namespace simmim
