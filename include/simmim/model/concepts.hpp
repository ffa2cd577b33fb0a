// simmim/model/concepts.hpp: what a SimMIM model needs of its encoder, head and loss.
//
// The op contract, for every part: forward(...) computes outputs from inputs and caches what its
// backward needs; backward(...) *accumulates* (+=) into parameter gradients held by the ParamArena.
// Activation gradients handed back to the caller are overwritten unless a comment says otherwise.
#pragma once

#include <concepts>

#include "simmim/core/geometry.hpp"
#include "simmim/core/tensor.hpp"

namespace simmim {

/// Maps an image (B, C, S, S) and a token mask on its mask grid (B, m*m) to a feature map on its output
/// grid (B, o*o, D_out), as its geometry (core/geometry.hpp) says, registering its parameters in the arena
/// passed to its constructor. encode() is the inference path: the same features as forward(), nothing
/// kept for backward, no stochastic depth, on a const encoder; a null mask means nothing is masked.
template <class E>
concept Encoder = requires(E& e, const E& ce, typename E::scalar_type* out, const typename E::scalar_type* in, int batch) {
    typename E::scalar_type;
    { E::geometry } -> std::convertible_to<EncoderGeometry>;
    { E::num_layers } -> std::convertible_to<int>;
    requires std::constructible_from<E, ParamArena<typename E::scalar_type>&>;
    e.forward(out, in, in, batch);     // (features, image, mask, B)
    e.backward(in, out);               // (dfeatures, dimage or null)
    ce.encode(out, in, in, batch);     // (features, image, mask or null, B)
};

/// Maps (B, o*o, D_out) features to a (B, C, R, R) prediction: R = Hd::out_size when the head declares it
/// (a lower prediction resolution, model/linear_head.hpp), else the image size S.
template <class Hd>
concept Head = requires(Hd& h, typename Hd::scalar_type* out, const typename Hd::scalar_type* in, int batch) {
    typename Hd::scalar_type;
    requires std::constructible_from<Hd, ParamArena<typename Hd::scalar_type>&>;
    h.forward(out, in, batch);         // (pred, features, B)
    h.backward(out, in);               // (dfeatures, dpred)
};

/// A scalar loss of (pred, target, token mask) with its gradient; pred is (B, C, R, R) with R = Ls::resolution
/// when the loss declares it (model/reconstruction_loss.hpp), else S; target is the input image (B, C, S, S);
/// the mask is on the encoder's mask grid (B, m*m).
template <class Ls>
concept Loss = requires(const Ls& l, typename Ls::scalar_type* out, const typename Ls::scalar_type* in, int batch,
                        typename Ls::scalar_type scale) {
    typename Ls::scalar_type;
    { l.forward(in, in, in, batch) } -> std::convertible_to<typename Ls::scalar_type>;
    l.backward(out, out, scale, in, in, in, batch);
};

}  // namespace simmim
