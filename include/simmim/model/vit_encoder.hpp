// simmim/model/vit_encoder.hpp: the ViT encoder of SimMIM in its common (timm) form, composed from the
// shared parts (model/parts/): a patch embedding with cls token and position embedding, a stack of
// pre-norm blocks, a final LayerNorm.
//
// forward:  image (B, C, S, S), mask (B, L) -> features (B, L, D) (final-normed tokens, cls dropped)
//   patches = patchify(image)                       (B, L, C*p*p)
//   t = patches W_pe^T + b_pe                        (B, L, D)    Conv2d(C, D, p, stride p)
//   t = t * (1 - w) + mask_token * w                 w = mask
//   x0 = [cls_token ; t] + pos_embed                 (B, N, D)    N = L + 1
//   x_{i+1} = block_i(x_i)                           pre-norm ViT blocks
//   features = norm(x_depth)[:, 1:]
// backward: dfeatures (B, L, D) -> accumulates every parameter gradient, and dimage if asked.
// encode: the same features without keeping anything for backward (inference, const).
// Geometry: mask grid = output grid = the patch grid g = S / p, stride p, D channels.
#pragma once

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

#include "simmim/core/config.hpp"
#include "simmim/core/geometry.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/model/parts/block_stack.hpp"
#include "simmim/model/parts/layer_norm.hpp"
#include "simmim/model/parts/mlp.hpp"
#include "simmim/model/parts/patch_embedding.hpp"
#include "simmim/model/parts/prenorm_buffers.hpp"
#include "simmim/model/parts/token_trunk.hpp"
#include "simmim/ops/attention_fused.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/tokens.hpp"

namespace simmim {

/// One pre-norm transformer block: x += proj(attn(norm1(x))); x += fc2(gelu(fc1(norm2(x)))).
template <class T, BlockSpec Bk>
class ViTBlock : public PreNormBlockShape<T, Bk> {
public:
    using Base = PreNormBlockShape<T, Bk>;
    using Base::D, Base::N, Base::H, Base::Dh, Base::F, Base::kEps;
    using Cache = PreNormCache<T, N, D, H, F>;
    using Scratch = PreNormScratch<T, N, D, F>;

    /// Registers the block's parameters under `prefix` ("encoder.blocks.{i}."), in the timm order.
    ViTBlock(ParamArena<T>& arena, const std::string& prefix)
        : norm1(arena, prefix + "norm1."),
          qkv_w(arena.template add<Shape<3 * D, D>>(prefix + "attn.qkv.weight", Init::TruncNormal002, true)),
          qkv_b(arena.template add<Shape<3 * D>>(prefix + "attn.qkv.bias", Init::Zeros, false)),
          proj_w(arena.template add<Shape<D, D>>(prefix + "attn.proj.weight", Init::TruncNormal002, true)),
          proj_b(arena.template add<Shape<D>>(prefix + "attn.proj.bias", Init::Zeros, false)),
          norm2(arena, prefix + "norm2."),
          mlp(arena, prefix + "mlp.", Init::TruncNormal002) {}

    /// out (B, N, D) = block(in (B, N, D)); fills cache.
    void forward(T* out, const T* in, int B, Cache& c) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        norm1.forward(c.ln1.data(), c.mean1.data(), c.rstd1.data(), in, M, kEps);
        ops::linear_forward(c.qkv.data(), c.ln1.data(), qkv_w.data(), qkv_b.data(), M, D, 3 * D);
        ops::attention_forward_fused(c.attn.data(), c.lse.data(), c.qkv.data(), B, N, H, Dh);
        ops::linear_forward(c.mid.data(), c.attn.data(), proj_w.data(), proj_b.data(), M, D, D);
        // mid = in + proj(attn); ln2 = norm2(mid)
        ops::residual_layernorm_forward(c.mid.data(), c.ln2.data(), c.mean2.data(), c.rstd2.data(), c.mid.data(), in,
                                        norm2.weight.data(), norm2.bias.data(), M, D, kEps);
        mlp.forward(out, c.ln2.data(), B, c.mlp);
        add_inplace(out, c.mid.data(), M * D);  // out = mid + fc2(gelu(fc1(ln2)))
    }

    /// Given dout (B, N, D), accumulates parameter gradients and writes din (B, N, D) (overwrites).
    void backward(T* din, const T* dout, const T* in, int B, const Cache& c, Scratch& s) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        // MLP branch: d_mid = dout + LN2'(mlp'(dout))
        mlp.backward(s.d_ln.data(), dout, c.ln2.data(), B, c.mlp, s.mlp);
        std::copy_n(dout, M * D, s.d_mid.data());
        norm2.backward(s.d_mid.data(), s.d_ln.data(), c.mid.data(), c.mean2.data(), c.rstd2.data(), M);
        // attention branch: din = d_mid + LN1'(qkv'(attn'(proj'(d_mid))))
        std::fill_n(s.d_attn.data(), M * D, T(0));
        ops::linear_backward(s.d_attn.data(), proj_w.grad(), proj_b.grad(), s.d_mid.data(), c.attn.data(), proj_w.data(), M, D, D);
        std::fill_n(s.d_qkv.data(), M * 3 * D, T(0));
        ops::attention_backward_fused(s.d_qkv.data(), s.d_attn.data(), c.qkv.data(), c.attn.data(), c.lse.data(), B, N, H, Dh);
        std::fill_n(s.d_ln.data(), M * D, T(0));
        ops::linear_backward(s.d_ln.data(), qkv_w.grad(), qkv_b.grad(), s.d_qkv.data(), c.ln1.data(), qkv_w.data(), M, D, 3 * D);
        std::copy_n(s.d_mid.data(), M * D, din);
        norm1.backward(din, s.d_ln.data(), in, c.mean1.data(), c.rstd1.data(), M);
    }

    LayerNormParams<T, D> norm1;
    Param<T, Shape<3 * D, D>> qkv_w;
    Param<T, Shape<3 * D>> qkv_b;
    Param<T, Shape<D, D>> proj_w;
    Param<T, Shape<D>> proj_b;
    LayerNormParams<T, D> norm2;
    Mlp<T, N, D, F> mlp;

private:
    static void add_inplace(T* y, const T* x, std::ptrdiff_t n) {
#pragma omp parallel for schedule(static) if (n >= kernels::kParallelMinWork)
        for (std::ptrdiff_t i = 0; i < n; ++i) y[i] += x[i];
    }
};

namespace detail {

/// What both ViT encoder forms declare alike: scalar type, configuration, geometry (mask grid = output
/// grid = the patch grid, stride p, D channels) and the sizes derived from them.
template <class T, ViTConfig C>
struct ViTEncoderShape {
    static_assert(ValidConfig<C>::value);
    static_assert(std::is_floating_point_v<T>, "simmim: the scalar type must be float or double");
    using scalar_type = T;
    static constexpr ViTConfig config = C;
    static constexpr EncoderGeometry geometry = C.geometry();
    static constexpr int S = C.image_size, Cin = C.in_chans, p = C.patch_size, g = C.grid(), H = C.num_heads;
    static constexpr int L = C.num_patches(), N = C.num_tokens(), D = C.embed_dim, P = C.patch_dim();
    static constexpr int out_dim = D;           // feature width handed to the head
    static constexpr int out_stride = p;        // pixels per feature position
    static constexpr int num_layers = C.depth;  // for layer-wise lr decay
};

}  // namespace detail

/// The ViT encoder of SimMIM (common form). Satisfies the Encoder concept (model/concepts.hpp).
template <class T, ViTConfig C>
class ViTEncoder : public detail::ViTEncoderShape<T, C> {
    using Shape_ = detail::ViTEncoderShape<T, C>;

public:
    using Shape_::S, Shape_::Cin, Shape_::p, Shape_::D, Shape_::N, Shape_::L;
    using Block = ViTBlock<T, C.block()>;
    using Embedding = PatchEmbedding<T, PatchEmbedSpec{S, Cin, p, D, /*cls_token=*/true, /*pos_embed=*/true}>;
    using Trunk = TokenTrunk<T, Embedding, Block>;
    /// The form recorded in weights files (model/model_kind.hpp).
    static std::string kind() { return "vit"; }
    /// Bytes forward() and backward() allocate for a batch of B: the activation memory of a training step.
    static std::size_t activation_bytes(int B) { return Trunk::activation_bytes(C.depth, B); }

    /// Registers the parameters in the timm order: cls_token, pos_embed, patch_embed.proj, blocks, norm, mask_token.
    explicit ViTEncoder(ParamArena<T>& arena) : trunk_(arena, {Init::TruncNormal002, /*mask_token_decay=*/false, /*mask_token_first=*/false}) {
        trunk_.add_blocks(C.depth, [&](int i) { return Block(arena, "encoder.blocks." + std::to_string(i) + "."); });
        trunk_.add_norm(arena);
        trunk_.embedding().add_mask_token(arena);
    }

    /// features (B, L, D) from image (B, C, S, S) and mask (B, L) (1 = masked).
    void forward(T* features, const T* image, const T* mask, int B) {
        forward_tokens(image, mask, B, C.depth);
        trunk_.finish_forward(features, B);
    }
    /// Runs the embedding and the first `blocks` blocks only (no final norm); returns their output
    /// (B, N, D), cls token first, valid until the next forward. Used for linear probing of block k.
    /// backward() needs a full forward().
    const T* forward_tokens(const T* image, const T* mask, int B, int blocks) {
        return trunk_.forward_tokens(image, mask, B, blocks, [&](int, const Block& block, T* out, const T* in, auto& c) { block.forward(out, in, B, c); });
    }
    /// Accumulates parameter gradients from dfeatures (B, L, D); if dimage is not null, accumulates
    /// the gradient with respect to the input image (B, C, S, S) into it.
    void backward(const T* dfeatures, T* dimage) {
        const int B = trunk_.blocks().batch();
        trunk_.backward(dfeatures, dimage, [&](int, const Block& block, T* din, const T* dout, const T* in, const auto& c, auto& s) {
            block.backward(din, dout, in, B, c, s);
        });
    }
    /// Inference: features (B, L, D) of image (B, C, S, S) with mask (B, L) (null: nothing masked), equal
    /// to forward()'s; keeps nothing for backward, holds the activations of a few samples at a time.
    void encode(T* features, const T* image, const T* mask, int B) const {
        trunk_.encode(features, image, mask, B, [](int, const Block& block, T* out, const T* in, int nb, auto& c) { block.forward(out, in, nb, c); });
    }

    const Embedding& embedding() const noexcept { return trunk_.embedding(); }
    const BlockStack<T, Block>& blocks() const noexcept { return trunk_.blocks(); }
    const LayerNormParams<T, D>& norm() const noexcept { return trunk_.norm(); }

private:
    Trunk trunk_;
};

}  // namespace simmim
