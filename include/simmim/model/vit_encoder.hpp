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
#include "simmim/ops/attention_fused.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/tokens.hpp"

namespace simmim {

/// One pre-norm transformer block: x += proj(attn(norm1(x))); x += fc2(gelu(fc1(norm2(x)))).
template <class T, BlockSpec Bk>
class ViTBlock {
    static_assert(Bk.dim > 0 && Bk.tokens > 0 && Bk.heads > 0 && Bk.mlp_hidden > 0, "simmim: block sizes must be positive");
    static_assert(Bk.dim % Bk.heads == 0, "simmim: embed_dim must be a multiple of num_heads");

public:
    static constexpr int D = Bk.dim, N = Bk.tokens, H = Bk.heads, Dh = Bk.head_dim(), F = Bk.mlp_hidden;
    static constexpr T kEps = T(1e-6);
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

/// The inference path shared by the ViT encoders: patch embedding, blocks, final norm, cls dropped, in
/// chunks of samples so that only one chunk's activations of one block are alive at a time.
/// block_call(i, out, in, samples, cache) runs block i.
template <class Block, class T, class Embedding, class BlockCall>
void vit_encode(T* features, const T* image, const T* mask, int B, int depth, const Embedding& embed,
                const LayerNormParams<T, Block::D>& norm, BlockCall&& block_call) {
    constexpr int N = Block::N, D = Block::D, L = Embedding::L;
    constexpr std::size_t image_numel = static_cast<std::size_t>(Embedding::Cin) * Embedding::S * Embedding::S;
    if (B <= 0) throw std::invalid_argument("encode: batch must be positive, found " + std::to_string(B));
    typename Embedding::Cache embed_cache;
    BatchTensor<T, Shape<N, D>> x[2];
    typename Block::Cache cache;
    NormCache<T, N, D> final_norm;
    const std::size_t per_sample = sizeof(T) * (static_cast<std::size_t>(Embedding::P + D) * L +
                                                static_cast<std::size_t>(20) * N * D);  // about 15 N D in a block
    for_each_chunk(B, inference_chunk(per_sample), [&](int b0, int nb) {
        const auto n = static_cast<std::size_t>(nb);
        if (x[0].batch() != n) {
            embed_cache.resize(n);
            for (auto& t : x) t.resize(n);
            cache.resize(n);
            final_norm.resize(n);
        }
        embed.forward(x[0].data(), image + b0 * image_numel, mask ? mask + static_cast<std::ptrdiff_t>(b0) * L : nullptr, nb,
                      embed_cache);
        T* in = x[0].data();
        T* out = x[1].data();
        for (int i = 0; i < depth; ++i) {
            block_call(i, out, static_cast<const T*>(in), nb, cache);
            std::swap(in, out);
        }
        norm.forward(final_norm.out.data(), final_norm.mean.data(), final_norm.rstd.data(), in, static_cast<std::ptrdiff_t>(nb) * N,
                     Block::kEps);
        ops::drop_leading_tokens(features + static_cast<std::ptrdiff_t>(b0) * L * D, final_norm.out.data(), nb, N, N - L, D);
    });
}

}  // namespace detail

/// The ViT encoder of SimMIM (common form). Satisfies the Encoder concept (model/concepts.hpp).
template <class T, ViTConfig C>
class ViTEncoder {
    static_assert(ValidConfig<C>::value);
    static_assert(std::is_floating_point_v<T>, "simmim: the scalar type must be float or double");

public:
    using scalar_type = T;
    static constexpr ViTConfig config = C;
    static constexpr EncoderGeometry geometry = C.geometry();
    static constexpr int S = C.image_size, Cin = C.in_chans, p = C.patch_size, g = C.grid();
    static constexpr int L = C.num_patches(), N = C.num_tokens(), D = C.embed_dim, P = C.patch_dim();
    static constexpr int out_dim = D;           // feature width handed to the head
    static constexpr int out_stride = p;        // pixels per feature position
    static constexpr int num_layers = C.depth;  // for layer-wise lr decay
    using Block = ViTBlock<T, C.block()>;
    using Embedding = PatchEmbedding<T, PatchEmbedSpec{S, Cin, p, D, /*cls_token=*/true, /*pos_embed=*/true}>;
    /// The form recorded in weights files (model/model_kind.hpp).
    static std::string kind() { return "vit"; }

    /// Bytes forward() and backward() allocate for a batch of B (the stack, the embedding's cache and
    /// scratch, the final norm): the activation memory of a training step, printed by simmim_pretrain.
    static std::size_t activation_bytes(int B) {
        return BlockStack<T, Block>::activation_bytes(C.depth, B) + Embedding::activation_bytes(B) +
               static_cast<std::size_t>(B) * bytes_per_sample<NormCache<T, N, D>>();
    }

    /// Registers the parameters in the timm order: cls_token, pos_embed, patch_embed.proj, blocks, norm, mask_token.
    explicit ViTEncoder(ParamArena<T>& arena)
        : embed_(arena, {Init::TruncNormal002, /*mask_token_decay=*/false, /*mask_token_first=*/false}),
          stack_(C.depth, [&](int i) { return Block(arena, "encoder.blocks." + std::to_string(i) + "."); }),
          norm_(arena, "encoder.norm.") {
        embed_.add_mask_token(arena);
    }

    /// features (B, L, D) from image (B, C, S, S) and mask (B, L) (1 = masked).
    void forward(T* features, const T* image, const T* mask, int B) {
        forward_tokens(image, mask, B, C.depth);
        norm_.forward(final_.out.data(), final_.mean.data(), final_.rstd.data(), stack_.output(C.depth),
                      static_cast<std::ptrdiff_t>(B) * N, Block::kEps);
        ops::drop_leading_tokens(features, final_.out.data(), B, N, 1, D);
    }

    /// Runs the embedding and the first `blocks` blocks only (no final norm); returns their output
    /// (B, N, D), cls token first, valid until the next forward. Used for linear probing of block k.
    /// backward() needs a full forward().
    const T* forward_tokens(const T* image, const T* mask, int B, int blocks) {
        if (blocks < 0 || blocks > C.depth) throw std::invalid_argument("ViTEncoder: block index out of range");
        if (B <= 0) throw std::invalid_argument("ViTEncoder: batch must be positive, found " + std::to_string(B));
        resize(B);
        embed_.forward(stack_.input(), image, mask, B, embed_cache_);
        stack_.forward(blocks, [&](int, const Block& block, T* out, const T* in, typename Block::Cache& c) { block.forward(out, in, B, c); });
        return stack_.output(blocks);
    }

    /// Accumulates parameter gradients from dfeatures (B, L, D); if dimage is not null, accumulates
    /// the gradient with respect to the input image (B, C, S, S) into it.
    void backward(const T* dfeatures, T* dimage) {
        const int B = stack_.batch();
        const std::ptrdiff_t BN = static_cast<std::ptrdiff_t>(B) * N;
        ops::drop_leading_tokens_backward(stack_.spare(), dfeatures, B, N, 1, D);  // zero for the dropped cls rows
        std::fill_n(stack_.grad_out(), BN * D, T(0));
        norm_.backward(stack_.grad_out(), stack_.spare(), stack_.output(C.depth), final_.mean.data(), final_.rstd.data(), BN);
        const T* dx0 = stack_.backward([&](int, const Block& block, T* din, const T* dout, const T* in, const typename Block::Cache& c,
                                           typename Block::Scratch& s) { block.backward(din, dout, in, B, c, s); });
        embed_.backward(dx0, dimage, B, embed_cache_, embed_scratch_);
    }

    /// Inference: features (B, L, D) of image (B, C, S, S) with mask (B, L) (null: nothing masked), equal
    /// to forward()'s; keeps nothing for backward, holds the activations of a few samples at a time.
    void encode(T* features, const T* image, const T* mask, int B) const {
        detail::vit_encode<Block>(features, image, mask, B, C.depth, embed_, norm_,
                           [&](int i, T* out, const T* in, int nb, typename Block::Cache& c) { stack_[i].forward(out, in, nb, c); });
    }

    const Embedding& embedding() const noexcept { return embed_; }
    const BlockStack<T, Block>& blocks() const noexcept { return stack_; }
    const LayerNormParams<T, D>& norm() const noexcept { return norm_; }

private:
    void resize(int B) {
        if (B == stack_.batch()) return;
        stack_.resize(B);
        embed_cache_.resize(static_cast<std::size_t>(B));
        embed_scratch_.resize(static_cast<std::size_t>(B));
        final_.resize(static_cast<std::size_t>(B));
    }

    Embedding embed_;
    BlockStack<T, Block> stack_;
    LayerNormParams<T, D> norm_;
    typename Embedding::Cache embed_cache_;
    typename Embedding::Scratch embed_scratch_;
    NormCache<T, N, D> final_;  // final norm output (B, N, D) and its statistics
};

}  // namespace simmim
