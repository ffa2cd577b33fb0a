// simmim/model/linear_head.hpp: the official SimMIM head, Conv2d(D, r*r*C, 1) then PixelShuffle(r).
//
// G is the encoder's geometry (a ViTConfig converts to it): the head reads (B, o*o, D) features on the
// output grid o = S / stride. R is the prediction resolution (default: the image size S, the official head
// with r = stride): the head predicts a (B, C, R, R) image, r = R / o pixels per feature position side
// (paper, "prediction resolution": 12x12 ... 192x192 all work, 6x6 is worse). Pair it with a loss of the
// same resolution (ReconstructionLoss<T, G, {.resolution = R}>; SimMIM checks they agree). The decoder
// predicts C channels, the input's (the official code always predicts 3; HF sizes it by the input).
// On feature rows a 1x1 conv is a Linear (B*L, D) -> (B*L, r*r*C); PixelShuffle is ops::unpatchify.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>

#include "simmim/core/geometry.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/patch.hpp"

namespace simmim {

template <class T, EncoderGeometry G, int R = G.image_size>
class LinearHead {
public:
    using scalar_type = T;
    static constexpr EncoderGeometry geometry = G;
    static constexpr int D = G.out_dim, L = G.out_tokens(), p = G.out_stride(), Cin = G.in_chans, S = G.image_size;
    static constexpr int g = G.out_grid;
    static_assert(ValidGeometry<G>::value);
    static_assert(R > 0 && R % g == 0 && S % R == 0,
                  "simmim: the head resolution R must be a positive multiple of the encoder's output grid (image_size / output "
                  "stride) that divides image_size");
    /// The prediction is (B, C, out_size, out_size); r pixels per token side; P = r*r*C outputs per token.
    static constexpr int out_size = R, r = R / g, P = r * r * Cin;

    /// What weights files record (model/model_kind.hpp).
    static std::string kind() { return "linear(resolution=" + std::to_string(R) + ")"; }

    /// Bytes forward() allocates for a batch of B (the (B, L, r*r*C) rows, reused by backward).
    static std::size_t activation_bytes(int B) { return static_cast<std::size_t>(B) * decltype(rows_)::sample_bytes; }

    explicit LinearHead(ParamArena<T>& arena)
        : weight(arena.template add<Shape<P, D, 1, 1>>("decoder.0.weight", Init::TruncNormal002, true)),
          bias(arena.template add<Shape<P>>("decoder.0.bias", Init::Zeros, false)) {}

    /// pred (B, C, R, R) from features (B, L, D), L = o*o.
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
