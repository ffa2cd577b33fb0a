// simmim/model/vit_official.hpp: the ViT encoder of SimMIM in its official (BEiT-derived) form,
// microsoft/SimMIM models/vision_transformer.py + models/simmim.py VisionTransformerForSimMIM with the
// pretraining configuration (USE_APE False, USE_RPB False, USE_SHARED_RPB True, USE_MEAN_POOLING False,
// QKV_BIAS True, INIT_VALUES 0.1, LayerNorm eps 1e-6).
//
// forward:  image (B, C, S, S), mask (B, L) -> features (B, L, D) (final-normed tokens, cls dropped)
//   t = patches W_pe^T + b_pe                        (B, L, D)    Conv2d(C, D, p, stride p)
//   t = t * (1 - w) + mask_token * w                 w = mask
//   x0 = [cls_token ; t]                             (B, N, D)    N = L + 1, NO absolute position embedding
//   bias = table[relative_position_index]            (H, N, N)    ONE table shared by every block
//   x_{i+1} = block_i(x_i, bias)
//   features = norm(x_depth)[:, 1:]
// block(x, bias), drop path factors s1, s2 (B) (1 when off):
//   qkv = norm1(x) W_qkv^T + [q_bias, 0, v_bias]     (no k bias)
//   a   = proj(softmax(q k^T / sqrt(Dh) + bias) v)
//   x   = x + s1 * gamma_1 * a
//   x   = x + s2 * gamma_2 * fc2(gelu(fc1(norm2(x))))
// backward: dfeatures (B, L, D) -> accumulates every parameter gradient (the table's is the sum over
// blocks and samples), and dimage if asked.
// encode: the same features without keeping anything for backward, drop path off (inference, const).
// Composed from the shared parts (model/parts/) as the common ViT: patch embedding (cls token, no
// position embedding), block stack, final norm.
//
// Parameters (official state-dict names and order): encoder.cls_token [1,1,D], encoder.mask_token
// [1,1,D], encoder.patch_embed.proj.weight [D,C,p,p] / .bias, encoder.rel_pos_bias.
// relative_position_bias_table [(2g-1)^2+3, H], encoder.blocks.{i}.{gamma_1, gamma_2 [D], norm1.*,
// attn.q_bias, attn.v_bias [D], attn.qkv.weight [3D,D], attn.proj.*, norm2.*, mlp.fc1.*, mlp.fc2.*},
// encoder.norm.weight|bias. The relative_position_index buffer is recomputed, never stored.
// Init (ParamArena::initialize): truncated normal std 0.02 cut at +-0.02 (the official _trunc_normal_
// override, a = -std, b = std) for cls_token, mask_token, the patch-embed conv and every Linear
// weight; attn.proj.weight and mlp.fc2.weight of block i (0-based) then divided by sqrt(2 (i + 1));
// zero biases, q_bias, v_bias and table; LayerNorm 1 / 0; gamma 0.1.
// Weight decay, exactly the official pretraining groups (optimizer.py get_pretrain_param_groups with
// SimMIM.no_weight_decay() = {encoder.pos_embed, encoder.cls_token} and no skip keywords for the ViT):
// no decay for 1-D tensors (biases, LayerNorm, gamma, q_bias, v_bias) and cls_token; decay for every
// other tensor, which for this ViT includes encoder.mask_token and the relative position bias table
// (unlike Swin, whose no_weight_decay adds mask_token and whose keywords skip the tables).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
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
#include "simmim/model/simmim_model.hpp"
#include "simmim/model/vit_encoder.hpp"
#include "simmim/ops/attention_bias.hpp"
#include "simmim/ops/drop_path.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/tokens.hpp"

namespace simmim {

/// One block of the official SimMIM ViT (BEiT block with layer scale, q/v bias and an external
/// relative position bias): x += s1 * gamma_1 * attn(norm1(x), bias); x += s2 * gamma_2 * mlp(norm2(x)).
template <class T, BlockSpec Bk>
class OfficialViTBlock : public PreNormBlockShape<T, Bk> {
    using Base = PreNormBlockShape<T, Bk>;

public:
    static constexpr int D = Base::D, N = Base::N, H = Base::H, Dh = Base::Dh, F = Base::F;
    static constexpr T kEps = Base::kEps;

    /// Activations a block caches in forward for its backward: the pre-norm block's, plus the branch
    /// outputs before the layer scale and the drop path factors.
    struct Cache : PreNormCache<T, N, D, H, F> {
        BatchTensor<T, Shape<N, D>> a, m;  // a = proj output, m = fc2 output
        std::vector<T> scale1, scale2;     // (B) drop path factors of the two branches
        template <class Fn>
        void for_each(Fn&& f) {
            PreNormCache<T, N, D, H, F>::for_each(f);
            f(a);
            f(m);
        }
        void resize(std::size_t B) {
            for_each([&](auto& t) { t.resize(B); });
            scale1.assign(B, T(1));
            scale2.assign(B, T(1));
        }
    };
    /// Gradient scratch shared by all blocks (the backward of one block at a time).
    struct Scratch : PreNormScratch<T, N, D, F> {
        BatchTensor<T, Shape<N, D>> d_branch;
        AlignedVector<T> d_qkv_bias = AlignedVector<T>(3 * D);  // (3D) column sums of d_qkv
        template <class Fn>
        void for_each(Fn&& f) {
            PreNormScratch<T, N, D, F>::for_each(f);
            f(d_branch);
        }
        void resize(std::size_t B) {
            for_each([&](auto& t) { t.resize(B); });
        }
    };

    /// Registers the block's parameters under `prefix` ("encoder.blocks.{i}."); layer_id = i + 1 sets
    /// the 1 / sqrt(2 layer_id) scale of attn.proj.weight and mlp.fc2.weight (fix_init_weight).
    OfficialViTBlock(ParamArena<T>& arena, const std::string& prefix, int layer_id)
        : gamma_1(arena.template add<Shape<D>>(prefix + "gamma_1", Init::Constant, false, 0.1)),
          gamma_2(arena.template add<Shape<D>>(prefix + "gamma_2", Init::Constant, false, 0.1)),
          norm1(arena, prefix + "norm1."),
          q_bias(arena.template add<Shape<D>>(prefix + "attn.q_bias", Init::Zeros, false)),
          v_bias(arena.template add<Shape<D>>(prefix + "attn.v_bias", Init::Zeros, false)),
          qkv_w(arena.template add<Shape<3 * D, D>>(prefix + "attn.qkv.weight", Init::TruncNormalStd, true)),
          proj_w(arena.template add<Shape<D, D>>(prefix + "attn.proj.weight", Init::TruncNormalStd, true, 0.0,
                                                 1.0 / std::sqrt(2.0 * checked_layer_id(layer_id)))),
          proj_b(arena.template add<Shape<D>>(prefix + "attn.proj.bias", Init::Zeros, false)),
          norm2(arena, prefix + "norm2."),
          mlp(arena, prefix + "mlp.", Init::TruncNormalStd, 1.0 / std::sqrt(2.0 * layer_id)) {}

    /// out (B, N, D) = block(in (B, N, D)) with the shared attention bias (H, N, N); fills cache.
    /// The drop path factors are read from c.scale1 / c.scale2 (B), set by the caller.
    void forward(T* out, const T* in, const T* bias, int B, Cache& c) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        norm1.forward(c.ln1.data(), c.mean1.data(), c.rstd1.data(), in, M, kEps);
        ops::linear_forward(c.qkv.data(), c.ln1.data(), qkv_w.data(), static_cast<const T*>(nullptr), M, D, 3 * D);
        add_qv_bias(c.qkv.data(), M);
        ops::attention_bias_forward(c.attn.data(), c.lse.data(), c.qkv.data(), bias, B, N, H, Dh);
        ops::linear_forward(c.a.data(), c.attn.data(), proj_w.data(), proj_b.data(), M, D, D);
        ops::layer_scale_residual_forward(c.mid.data(), in, c.a.data(), gamma_1.data(), c.scale1.data(), B, N, D);
        norm2.forward(c.ln2.data(), c.mean2.data(), c.rstd2.data(), c.mid.data(), M, kEps);
        mlp.forward(c.m.data(), c.ln2.data(), B, c.mlp);
        ops::layer_scale_residual_forward(out, c.mid.data(), c.m.data(), gamma_2.data(), c.scale2.data(), B, N, D);
    }

    /// Given dout (B, N, D), accumulates parameter gradients and the attention-bias gradient into
    /// dbias (H, N, N) (+=), and writes din (B, N, D) (overwrites).
    void backward(T* din, T* dbias, const T* dout, const T* in, const T* bias, int B, const Cache& c, Scratch& s) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        // MLP branch: d_mid = dout + LN2'(mlp'(s2 * gamma_2 * dout))
        ops::layer_scale_residual_backward(s.d_branch.data(), gamma_2.grad(), dout, c.m.data(), gamma_2.data(), c.scale2.data(), B, N, D);
        mlp.backward(s.d_ln.data(), s.d_branch.data(), c.ln2.data(), B, c.mlp, s.mlp);
        std::copy_n(dout, M * D, s.d_mid.data());
        norm2.backward(s.d_mid.data(), s.d_ln.data(), c.mid.data(), c.mean2.data(), c.rstd2.data(), M);
        // attention branch: din = d_mid + LN1'(qkv'(attn'(proj'(s1 * gamma_1 * d_mid))))
        ops::layer_scale_residual_backward(s.d_branch.data(), gamma_1.grad(), s.d_mid.data(), c.a.data(), gamma_1.data(),
                                           c.scale1.data(), B, N, D);
        std::fill_n(s.d_attn.data(), M * D, T(0));
        ops::linear_backward(s.d_attn.data(), proj_w.grad(), proj_b.grad(), s.d_branch.data(), c.attn.data(), proj_w.data(), M, D, D);
        std::fill_n(s.d_qkv.data(), M * 3 * D, T(0));
        ops::attention_bias_backward(s.d_qkv.data(), dbias, s.d_attn.data(), c.qkv.data(), c.attn.data(), c.lse.data(), bias, B, N, H, Dh);
        std::fill(s.d_qkv_bias.begin(), s.d_qkv_bias.end(), T(0));
        std::fill_n(s.d_ln.data(), M * D, T(0));
        ops::linear_backward(s.d_ln.data(), qkv_w.grad(), s.d_qkv_bias.data(), s.d_qkv.data(), c.ln1.data(), qkv_w.data(), M, D, 3 * D);
        T* dq = q_bias.grad();
        T* dv = v_bias.grad();
        for (int d = 0; d < D; ++d) {
            dq[d] += s.d_qkv_bias[d];
            dv[d] += s.d_qkv_bias[2 * D + d];
        }
        std::copy_n(s.d_mid.data(), M * D, din);
        norm1.backward(din, s.d_ln.data(), in, c.mean1.data(), c.rstd1.data(), M);
    }

    Param<T, Shape<D>> gamma_1, gamma_2;
    LayerNormParams<T, D> norm1;
    Param<T, Shape<D>> q_bias, v_bias;
    Param<T, Shape<3 * D, D>> qkv_w;
    Param<T, Shape<D, D>> proj_w;
    Param<T, Shape<D>> proj_b;
    LayerNormParams<T, D> norm2;
    Mlp<T, N, D, F> mlp;

private:
    static int checked_layer_id(int layer_id) {
        if (layer_id < 1) throw std::invalid_argument("OfficialViTBlock: layer_id is 1-based, found " + std::to_string(layer_id));
        return layer_id;
    }
    /// qkv (M, 3D) += [q_bias, 0, v_bias] per row (torch.cat((q_bias, zeros, v_bias)) in F.linear).
    void add_qv_bias(T* qkv, std::ptrdiff_t M) const {
        const T* qb = q_bias.data();
        const T* vb = v_bias.data();
#pragma omp parallel for schedule(static) if (M * 2 * D >= kernels::kParallelMinWork)
        for (std::ptrdiff_t r = 0; r < M; ++r) {
            T* row = qkv + r * 3 * D;
            for (int d = 0; d < D; ++d) {
                row[d] += qb[d];
                row[2 * D + d] += vb[d];
            }
        }
    }
};

/// The ViT encoder of SimMIM in the official (BEiT-derived) form. Satisfies the Encoder concept
/// (model/concepts.hpp) with the same interface as ViTEncoder, plus stochastic depth (set_drop_path).
template <class T, ViTConfig C>
class OfficialViTEncoder : public detail::ViTEncoderShape<T, C> {
    using Shape_ = detail::ViTEncoderShape<T, C>;

public:
    using Shape_::S, Shape_::Cin, Shape_::p, Shape_::g, Shape_::D, Shape_::N, Shape_::L, Shape_::H;
    static constexpr int R = ops::relative_position_table_rows(g);  // rows of the relative position bias table
    using Block = OfficialViTBlock<T, C.block()>;
    using Embedding = PatchEmbedding<T, PatchEmbedSpec{S, Cin, p, D, /*cls_token=*/true, /*pos_embed=*/false}>;
    using Trunk = TokenTrunk<T, Embedding, Block>;
    /// The form recorded in weights files (model/model_kind.hpp).
    static std::string kind() { return "vit-official"; }
    /// Bytes forward() and backward() allocate for a batch of B (the (H, N, N) bias and its gradient are
    /// allocated with the encoder).
    static std::size_t activation_bytes(int B) { return Trunk::activation_bytes(C.depth, B); }

    /// Registers the parameters in the official order: cls_token, mask_token, patch_embed.proj, the
    /// shared relative position bias table, blocks, norm.
    explicit OfficialViTEncoder(ParamArena<T>& arena)
        : trunk_(arena, {Init::TruncNormalStd, /*mask_token_decay=*/true, /*mask_token_first=*/true}),
          rel_pos_table_(arena.template add<Shape<R, H>>("encoder.rel_pos_bias.relative_position_bias_table", Init::Zeros, true)),
          index_(ops::relative_position_index(g)) {
        trunk_.add_blocks(C.depth, [&](int i) { return Block(arena, "encoder.blocks." + std::to_string(i) + ".", i + 1); });
        trunk_.add_norm(arena);
    }

    /// Stochastic depth for the following forward passes: block i drops each sample's attention and
    /// MLP branches independently with rate r_i = linspace(0, rate, depth)[i] (BEiT's rule; block 0
    /// never drops), kept branches scaled by 1 / (1 - r_i). The draws are a pure function of
    /// (seed, step, block, branch, sample) (ops::drop_path_scale), so a resumed run is bit-identical;
    /// backward() uses the factors of the last forward. rate 0 (the default) disables it exactly:
    /// call set_drop_path(0, 0, 0) for evaluation, linear probing or reconstruction (encode() never
    /// drops). The official pretraining uses rate 0.1. Throws std::invalid_argument unless 0 <= rate < 1.
    /// `first_sample`: the index within the whole batch of this process's first sample, for a data-parallel
    /// run (dist/mpi.hpp) in which each process holds a slice of the batch: sample b draws as sample
    /// first_sample + b, so a sample's draw does not depend on which process holds it.
    void set_drop_path(double rate, std::uint64_t seed, std::int64_t step, int first_sample = 0) {
        if (!(rate >= 0.0 && rate < 1.0))
            throw std::invalid_argument("OfficialViTEncoder::set_drop_path: rate must lie in [0, 1), found " + std::to_string(rate));
        drop_rate_ = rate;
        drop_seed_ = seed;
        drop_step_ = step;
        drop_first_sample_ = first_sample;
    }
    double drop_path_rate() const noexcept { return drop_rate_; }

    /// features (B, L, D) from image (B, C, S, S) and mask (B, L) (1 = masked).
    void forward(T* features, const T* image, const T* mask, int B) {
        forward_tokens(image, mask, B, C.depth);
        trunk_.finish_forward(features, B);
    }
    /// Runs the embedding and the first `blocks` blocks only (no final norm); returns their output
    /// (B, N, D), cls token first, valid until the next forward. Used for linear probing of block k
    /// (with drop path off). backward() needs a full forward().
    const T* forward_tokens(const T* image, const T* mask, int B, int blocks) {
        ops::relative_position_bias_forward(bias_.data(), rel_pos_table_.data(), index_.data(), N, H);
        return trunk_.forward_tokens(image, mask, B, blocks, [&](int i, const Block& block, T* out, const T* in, auto& c) {
            draw_drop_path(i, B, c);
            block.forward(out, in, bias_.data(), B, c);
        });
    }
    /// Accumulates parameter gradients from dfeatures (B, L, D); if dimage is not null, accumulates
    /// the gradient with respect to the input image (B, C, S, S) into it.
    void backward(const T* dfeatures, T* dimage) {
        const int B = trunk_.blocks().batch();
        std::fill(dbias_.begin(), dbias_.end(), T(0));
        trunk_.backward(dfeatures, dimage, [&](int, const Block& block, T* din, const T* dout, const T* in, const auto& c, auto& s) {
            block.backward(din, dbias_.data(), dout, in, bias_.data(), B, c, s);
        });
        // the shared table: sum over blocks (in dbias_) scattered back through the index
        ops::relative_position_bias_backward(rel_pos_table_.grad(), dbias_.data(), index_.data(), N, H);
    }
    /// Inference: features (B, L, D) of image (B, C, S, S) with mask (B, L) (null: nothing masked), equal
    /// to forward()'s with drop path off; keeps nothing for backward, holds a few samples' activations.
    void encode(T* features, const T* image, const T* mask, int B) const {
        AlignedVector<T> bias(static_cast<std::size_t>(H) * N * N);  // (H, N, N)
        ops::relative_position_bias_forward(bias.data(), rel_pos_table_.data(), index_.data(), N, H);
        trunk_.encode(features, image, mask, B, [&](int, const Block& block, T* out, const T* in, int nb, auto& c) {
            block.forward(out, in, bias.data(), nb, c);  // c.scale1 / c.scale2 stay 1: no drop path
        });
    }

    /// Drop path factors (B) of block `block`'s branch `branch` (0 attention, 1 MLP) in the last
    /// forward: 0 dropped, 1 / (1 - r_i) kept, 1 with drop path off.
    const std::vector<T>& drop_path_factors(int block, int branch) const {
        if (block < 0 || block >= C.depth || branch < 0 || branch > 1 || trunk_.blocks().empty_caches())
            throw std::invalid_argument("OfficialViTEncoder::drop_path_factors: needs a forward, block in [0, depth), branch 0 or 1");
        return branch == 0 ? trunk_.blocks().cache(block).scale1 : trunk_.blocks().cache(block).scale2;
    }
    /// The relative position bias (H, N, N) of the last forward, shared by every block.
    const AlignedVector<T>& attention_bias() const noexcept { return bias_; }
    /// BEiT's relative_position_index (N, N) for this grid (ops::relative_position_index).
    const std::vector<std::int32_t>& relative_position_index() const noexcept { return index_; }

    const Embedding& embedding() const noexcept { return trunk_.embedding(); }
    /// The shared relative position bias table ((2g-1)^2 + 3, H).
    const Param<T, Shape<R, H>>& relative_position_bias_table() const noexcept { return rel_pos_table_; }
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

    // parameters, declared in their registration order (the trunk adds its blocks and norm after the table)
    Trunk trunk_;
    Param<T, Shape<R, H>> rel_pos_table_;
    std::vector<std::int32_t> index_;  // (N, N) relative_position_index
    double drop_rate_ = 0.0;
    std::uint64_t drop_seed_ = 0;
    std::int64_t drop_step_ = 0;
    int drop_first_sample_ = 0;
    AlignedVector<T> bias_ = AlignedVector<T>(static_cast<std::size_t>(H) * N * N);   // (H, N, N)
    AlignedVector<T> dbias_ = AlignedVector<T>(static_cast<std::size_t>(H) * N * N);  // (H, N, N)
};

/// SimMIM with the official (BEiT-derived) ViT encoder, the linear head, masked L1 and the official
/// random masking.
template <class T, ViTConfig C>
using OfficialViTSimMIM = SimMIM<OfficialViTEncoder<T, C>, LinearHead<T, C>, MaskedL1Loss<T, C>, RandomMaskPatch>;

}  // namespace simmim
