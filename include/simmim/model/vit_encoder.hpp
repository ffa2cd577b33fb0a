// simmim/model/vit_encoder.hpp: the ViT encoder of SimMIM in its common (timm) form, composed from the
// shared parts (model/parts/): a patch embedding with cls token and position embedding, a stack of
// pre-norm blocks, a final LayerNorm.
//
// forward:  image (B, C, S, S), mask (B, L) -> features (B, L, D) (final-normed tokens, cls dropped)
//   patches = patchify(image)                       (B, L, C*p*p)
//   t = patches W_pe^T + b_pe                        (B, L, D)    Conv2d(C, D, p, stride p)
//   t = t * (1 - w) + mask_token * w                 w = mask
//   x0 = [cls_token ; t] + pos_embed                 (B, N, D)    N = L + 1
//   x_{i+1} = block_i(x_i)                           pre-norm ViT blocks, optional drop path (s1, s2 per sample)
//   features = norm(x_depth)[:, 1:]
// block(x), drop path factors s1, s2 (B) (exactly 1 when off, as timm's DropPath in training mode):
//   mid = x + s1 * proj(attn(norm1(x)));  out = mid + s2 * fc2(gelu(fc1(norm2(mid))))
// backward: dfeatures (B, L, D) -> accumulates every parameter gradient, and dimage if asked.
// encode: the same features without keeping anything for backward, drop path off (inference, const).
// Stochastic depth (set_drop_path) is off by default, so pretraining and every fixture are unchanged; the
// fine-tuning recipe (examples/simmim_finetune.cpp) turns it on, as timm's drop_path_rate.
// Geometry: mask grid = output grid = the patch grid g = S / p, stride p, D channels.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

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
#include "simmim/ops/drop_path.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/tokens.hpp"

namespace simmim {

/// One pre-norm transformer block: x += s1 * proj(attn(norm1(x))); x += s2 * fc2(gelu(fc1(norm2(x)))), with
/// s1, s2 the per-sample drop path factors held in the cache (1 unless the encoder draws them).
template <class T, BlockSpec Bk>
class ViTBlock : public PreNormBlockShape<T, Bk> {
public:
    using Base = PreNormBlockShape<T, Bk>;
    static constexpr int D = Base::D, N = Base::N, H = Base::H, Dh = Base::Dh, F = Base::F;
    static constexpr T kEps = Base::kEps;
    /// The pre-norm block's activations plus the drop path factors of the two branches (B), 1 after resize().
    struct Cache : PreNormCache<T, N, D, H, F> {
        std::vector<T> scale1, scale2;
        void resize(std::size_t B) {
            PreNormCache<T, N, D, H, F>::resize(B);
            scale1.assign(B, T(1));
            scale2.assign(B, T(1));
        }
    };
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
        if (dropping(c.scale1, B)) scale_samples(c.mid.data(), c.mid.data(), c.scale1.data(), B);  // s1 * proj(attn)
        // mid = in + s1 proj(attn); ln2 = norm2(mid)
        ops::residual_layernorm_forward(c.mid.data(), c.ln2.data(), c.mean2.data(), c.rstd2.data(), c.mid.data(), in,
                                        norm2.weight.data(), norm2.bias.data(), M, D, kEps);
        mlp.forward(out, c.ln2.data(), B, c.mlp);
        if (dropping(c.scale2, B)) scale_samples(out, out, c.scale2.data(), B);  // s2 * mlp(ln2)
        add_inplace(out, c.mid.data(), M * D);  // out = mid + s2 fc2(gelu(fc1(ln2)))
    }

    /// Given dout (B, N, D), accumulates parameter gradients and writes din (B, N, D) (overwrites).
    void backward(T* din, const T* dout, const T* in, int B, const Cache& c, Scratch& s) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        // MLP branch: d_mid = dout + LN2'(mlp'(s2 dout)); s2 dout goes through d_mid, free until the copy below
        const T* d_branch = dout;
        if (dropping(c.scale2, B)) {
            scale_samples(s.d_mid.data(), dout, c.scale2.data(), B);
            d_branch = s.d_mid.data();
        }
        mlp.backward(s.d_ln.data(), d_branch, c.ln2.data(), B, c.mlp, s.mlp);
        std::copy_n(dout, M * D, s.d_mid.data());
        norm2.backward(s.d_mid.data(), s.d_ln.data(), c.mid.data(), c.mean2.data(), c.rstd2.data(), M);
        // attention branch: din = d_mid + LN1'(qkv'(attn'(proj'(s1 d_mid)))); s1 d_mid goes through d_ln, free
        // from here until the qkv backward
        d_branch = s.d_mid.data();
        if (dropping(c.scale1, B)) {
            scale_samples(s.d_ln.data(), s.d_mid.data(), c.scale1.data(), B);
            d_branch = s.d_ln.data();
        }
        std::fill_n(s.d_attn.data(), M * D, T(0));
        ops::linear_backward(s.d_attn.data(), proj_w.grad(), proj_b.grad(), d_branch, c.attn.data(), proj_w.data(), M, D, D);
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
    /// Whether any of the B drop path factors differs from 1 (otherwise the branches are left untouched, so
    /// drop path off is the plain block bit for bit).
    static bool dropping(const std::vector<T>& scale, int B) {
        return std::any_of(scale.begin(), scale.begin() + B, [](T s) { return s != T(1); });
    }
    /// y (B, N, D) = scale[b] * x (B, N, D); y may alias x.
    static void scale_samples(T* y, const T* x, const T* scale, int B) {
        const std::ptrdiff_t rows = static_cast<std::ptrdiff_t>(B) * N;
#pragma omp parallel for schedule(static) if (rows * D >= kernels::kParallelMinWork)
        for (std::ptrdiff_t r = 0; r < rows; ++r) {
            const T s = scale[r / N];
            for (std::ptrdiff_t d = 0; d < D; ++d) y[r * D + d] = s * x[r * D + d];
        }
    }
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

    /// Stochastic depth for the following forward passes, as OfficialViTEncoder::set_drop_path (timm's
    /// drop_path_rate with the linear rule): block i drops each sample's attention and MLP branches
    /// independently with rate r_i = linspace(0, rate, depth)[i] (block 0 never drops) and scales kept
    /// ones by 1 / (1 - r_i); the draws are ops::drop_path_scale(r_i, seed, step, i, branch, first_sample + b),
    /// a pure function of their arguments, so a resumed run draws the same; backward() uses the factors of
    /// the last forward. rate 0 (the default) is the plain encoder bit for bit: call set_drop_path(0, 0, 0)
    /// for evaluation and linear probing (encode() never drops). Throws std::invalid_argument unless
    /// 0 <= rate < 1.
    void set_drop_path(double rate, std::uint64_t seed, std::int64_t step, int first_sample = 0) {
        if (!(rate >= 0.0 && rate < 1.0))
            throw std::invalid_argument("ViTEncoder::set_drop_path: rate must lie in [0, 1), found " + std::to_string(rate));
        drop_rate_ = rate;
        drop_seed_ = seed;
        drop_step_ = step;
        drop_first_sample_ = first_sample;
    }
    double drop_path_rate() const noexcept { return drop_rate_; }
    /// Drop path factors (B) of block `block`'s branch `branch` (0 attention, 1 MLP) in the last forward:
    /// 0 dropped, 1 / (1 - r_i) kept, 1 with drop path off.
    const std::vector<T>& drop_path_factors(int block, int branch) const {
        if (block < 0 || block >= C.depth || branch < 0 || branch > 1 || trunk_.blocks().empty_caches())
            throw std::invalid_argument("ViTEncoder::drop_path_factors: needs a forward, block in [0, depth), branch 0 or 1");
        return branch == 0 ? trunk_.blocks().cache(block).scale1 : trunk_.blocks().cache(block).scale2;
    }

    /// features (B, L, D) from image (B, C, S, S) and mask (B, L) (1 = masked).
    void forward(T* features, const T* image, const T* mask, int B) {
        forward_tokens(image, mask, B, C.depth);
        trunk_.finish_forward(features, B);
    }
    /// Runs the embedding and the first `blocks` blocks only (no final norm); returns their output
    /// (B, N, D), cls token first, valid until the next forward. Used for linear probing of block k
    /// (with drop path off). backward() needs a full forward().
    const T* forward_tokens(const T* image, const T* mask, int B, int blocks) {
        return trunk_.forward_tokens(image, mask, B, blocks, [&](int i, const Block& block, T* out, const T* in, auto& c) {
            draw_drop_path(i, B, c);
            block.forward(out, in, B, c);
        });
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
    void draw_drop_path(int block, int B, typename Block::Cache& c) const {
        const double r = ops::drop_path_block_rate(drop_rate_, block, C.depth);
        for (int b = 0; b < B; ++b) {
            c.scale1[b] = T(ops::drop_path_scale(r, drop_seed_, drop_step_, block, 0, drop_first_sample_ + b));
            c.scale2[b] = T(ops::drop_path_scale(r, drop_seed_, drop_step_, block, 1, drop_first_sample_ + b));
        }
    }

    Trunk trunk_;
    double drop_rate_ = 0.0;
    std::uint64_t drop_seed_ = 0;
    std::int64_t drop_step_ = 0;
    int drop_first_sample_ = 0;
};

}  // namespace simmim
