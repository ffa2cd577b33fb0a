// simmim/model/mlp_head.hpp: the 2-layer MLP head of the paper's head ablation (finding 3: no better than
// the linear head after fine-tuning, and dearer):
//   nn.Sequential(Conv2d(D, Hidden, 1), GELU(), Conv2d(Hidden, r*r*C, 1), PixelShuffle(r))
// so its parameters are decoder.0.weight [Hidden, D, 1, 1], decoder.0.bias [Hidden],
// decoder.2.weight [r*r*C, Hidden, 1, 1], decoder.2.bias [r*r*C] (the GELU, exact erf, is index 1).
// Hidden defaults to D. G is the encoder's geometry and R the prediction resolution as for LinearHead
// (default the image size S; r = R / o pixels per feature position side, o the output grid). Initialised like the linear head: truncated normal (std 0.02)
// weights, zero biases. On token rows each 1x1 conv is a Linear and PixelShuffle is ops::unpatchify.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>

#include "simmim/core/geometry.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/gelu.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/patch.hpp"

namespace simmim {

template <class T, EncoderGeometry G, int Hidden = G.out_dim, int R = G.image_size>
class MLPHead {
public:
    using scalar_type = T;
    static constexpr EncoderGeometry geometry = G;
    static constexpr int D = G.out_dim, L = G.out_tokens(), Cin = G.in_chans, S = G.image_size, H = Hidden;
    static constexpr int g = G.out_grid;
    static_assert(ValidGeometry<G>::value);
    static_assert(Hidden > 0, "simmim: the MLP head's hidden width must be positive");
    static_assert(R > 0 && R % g == 0 && S % R == 0,
                  "simmim: the head resolution R must be a positive multiple of the encoder's output grid (image_size / output "
                  "stride) that divides image_size");
    /// The prediction is (B, C, out_size, out_size); r pixels per token side; P = r*r*C outputs per token.
    static constexpr int out_size = R, r = R / g, P = r * r * Cin;

    /// What weights files record (model/model_kind.hpp).
    static std::string kind() { return "mlp(hidden=" + std::to_string(H) + ",resolution=" + std::to_string(R) + ")"; }

    /// Bytes forward() and backward() allocate for a batch of B: hidden pre-activation and activation, the
    /// rows, and the two (B, L, Hidden) gradients of backward.
    static std::size_t activation_bytes(int B) {
        return static_cast<std::size_t>(B) * (4 * decltype(hidden_)::sample_bytes + decltype(rows_)::sample_bytes);
    }

    explicit MLPHead(ParamArena<T>& arena)
        : weight1(arena.template add<Shape<H, D, 1, 1>>("decoder.0.weight", Init::TruncNormal002, true)),
          bias1(arena.template add<Shape<H>>("decoder.0.bias", Init::Zeros, false)),
          weight2(arena.template add<Shape<P, H, 1, 1>>("decoder.2.weight", Init::TruncNormal002, true)),
          bias2(arena.template add<Shape<P>>("decoder.2.bias", Init::Zeros, false)) {}

    /// pred (B, C, R, R) from features (B, L, D).
    void forward(T* pred, const T* features, int B) {
        features_ = features;
        batch_ = B;
        hidden_pre_.resize(B);
        hidden_.resize(B);
        rows_.resize(B);
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * L;
        // hidden_pre = features W1^T + b1 (kept for the GELU backward); hidden = gelu(hidden_pre)
        ops::linear_forward(hidden_pre_.data(), features, weight1.data(), static_cast<const T*>(nullptr), M, D, H);
        ops::bias_gelu_forward(hidden_.data(), hidden_pre_.data(), hidden_pre_.data(), bias1.data(), M, H);
        ops::linear_forward(rows_.data(), hidden_.data(), weight2.data(), bias2.data(), M, H, P);
        ops::unpatchify(pred, rows_.data(), B, Cin, R, r);
    }
    /// Accumulates parameter gradients; writes dfeatures (B, L, D) (overwrites).
    void backward(T* dfeatures, const T* dpred) {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(batch_) * L;
        ops::patchify(rows_.data(), dpred, batch_, Cin, R, r);  // rows_ now holds d rows (B, L, P)
        d_hidden_.assign(static_cast<std::size_t>(M) * H, T(0));
        ops::linear_backward(d_hidden_.data(), weight2.grad(), bias2.grad(), rows_.data(), hidden_.data(), weight2.data(), M, H, P);
        d_hidden_pre_.assign(static_cast<std::size_t>(M) * H, T(0));
        ops::gelu_backward(d_hidden_pre_.data(), d_hidden_.data(), hidden_pre_.data(), M * H);
        std::fill_n(dfeatures, M * D, T(0));
        ops::linear_backward(dfeatures, weight1.grad(), bias1.grad(), d_hidden_pre_.data(), features_, weight1.data(), M, D, H);
    }

    Param<T, Shape<H, D, 1, 1>> weight1;  // decoder.0
    Param<T, Shape<H>> bias1;
    Param<T, Shape<P, H, 1, 1>> weight2;  // decoder.2
    Param<T, Shape<P>> bias2;

private:
    const T* features_ = nullptr;  // (B, L, D), owned by the model, alive until backward
    int batch_ = 0;
    BatchTensor<T, Shape<L, H>> hidden_pre_, hidden_;  // (B, L, Hidden) before and after the GELU
    BatchTensor<T, Shape<L, P>> rows_;                 // (B, L, r*r*C)
    AlignedVector<T> d_hidden_, d_hidden_pre_;         // (B, L, Hidden) backward scratch
};

}  // namespace simmim
