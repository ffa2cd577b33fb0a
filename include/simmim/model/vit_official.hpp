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
#include "simmim/core/tensor.hpp"
#include "simmim/model/simmim_model.hpp"
#include "simmim/ops/attention_bias.hpp"
#include "simmim/ops/drop_path.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/gelu.hpp"
#include "simmim/ops/layernorm.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/patch.hpp"

namespace simmim {

/// One block of the official SimMIM ViT (BEiT block with layer scale, q/v bias and an external
/// relative position bias): x += s1 * gamma_1 * attn(norm1(x), bias); x += s2 * gamma_2 * mlp(norm2(x)).
template <class T, ViTConfig C>
class OfficialViTBlock {
public:
    static constexpr int D = C.embed_dim, N = C.num_tokens(), H = C.num_heads, Dh = C.head_dim(), F = C.mlp_hidden();
    static constexpr T kEps = T(1e-6);  // norm_layer = partial(nn.LayerNorm, eps=1e-6)

    /// Activations a block caches in forward for its backward.
    struct Cache {
        BatchTensor<T, Shape<N, D>> ln1, attn, a, mid, ln2, m;  // a = proj output, m = fc2 output
        BatchTensor<T, Shape<N>> mean1, rstd1, mean2, rstd2;
        BatchTensor<T, Shape<N, 3 * D>> qkv;
        BatchTensor<T, Shape<H, N>> lse;  // row log-sum-exp of the biased attention scores
        BatchTensor<T, Shape<N, F>> fc1, act;
        std::vector<T> scale1, scale2;    // (B) drop path factors of the two branches
        void resize(std::size_t B) {
            for (auto* t : {&ln1, &attn, &a, &mid, &ln2, &m}) t->resize(B);
            for (auto* t : {&mean1, &rstd1, &mean2, &rstd2}) t->resize(B);
            qkv.resize(B);
            lse.resize(B);
            fc1.resize(B);
            act.resize(B);
            scale1.assign(B, T(1));
            scale2.assign(B, T(1));
        }
    };
    /// Gradient scratch shared by all blocks (the backward of one block at a time).
    struct Scratch {
        BatchTensor<T, Shape<N, D>> d_ln, d_attn, d_branch, d_mid;
        BatchTensor<T, Shape<N, 3 * D>> d_qkv;
        BatchTensor<T, Shape<N, F>> d_fc1, d_act;
        AlignedVector<T> d_qkv_bias = AlignedVector<T>(3 * D);  // (3D) column sums of d_qkv
        void resize(std::size_t B) {
            for (auto* t : {&d_ln, &d_attn, &d_branch, &d_mid}) t->resize(B);
            d_qkv.resize(B);
            d_fc1.resize(B);
            d_act.resize(B);
        }
    };

    /// Registers the block's parameters under `prefix` ("encoder.blocks.{i}."); layer_id = i + 1 sets
    /// the 1 / sqrt(2 layer_id) scale of attn.proj.weight and mlp.fc2.weight (fix_init_weight).
    OfficialViTBlock(ParamArena<T>& arena, const std::string& prefix, int layer_id)
        : gamma_1(arena.template add<Shape<D>>(prefix + "gamma_1", Init::Constant, false, 0.1)),
          gamma_2(arena.template add<Shape<D>>(prefix + "gamma_2", Init::Constant, false, 0.1)),
          norm1_w(arena.template add<Shape<D>>(prefix + "norm1.weight", Init::Ones, false)),
          norm1_b(arena.template add<Shape<D>>(prefix + "norm1.bias", Init::Zeros, false)),
          q_bias(arena.template add<Shape<D>>(prefix + "attn.q_bias", Init::Zeros, false)),
          v_bias(arena.template add<Shape<D>>(prefix + "attn.v_bias", Init::Zeros, false)),
          qkv_w(arena.template add<Shape<3 * D, D>>(prefix + "attn.qkv.weight", Init::TruncNormalStd, true)),
          proj_w(arena.template add<Shape<D, D>>(prefix + "attn.proj.weight", Init::TruncNormalStd, true, 0.0,
                                                 1.0 / std::sqrt(2.0 * layer_id))),
          proj_b(arena.template add<Shape<D>>(prefix + "attn.proj.bias", Init::Zeros, false)),
          norm2_w(arena.template add<Shape<D>>(prefix + "norm2.weight", Init::Ones, false)),
          norm2_b(arena.template add<Shape<D>>(prefix + "norm2.bias", Init::Zeros, false)),
          fc1_w(arena.template add<Shape<F, D>>(prefix + "mlp.fc1.weight", Init::TruncNormalStd, true)),
          fc1_b(arena.template add<Shape<F>>(prefix + "mlp.fc1.bias", Init::Zeros, false)),
          fc2_w(arena.template add<Shape<D, F>>(prefix + "mlp.fc2.weight", Init::TruncNormalStd, true, 0.0,
                                                1.0 / std::sqrt(2.0 * layer_id))),
          fc2_b(arena.template add<Shape<D>>(prefix + "mlp.fc2.bias", Init::Zeros, false)) {
        if (layer_id < 1) throw std::invalid_argument("OfficialViTBlock: layer_id is 1-based, found " + std::to_string(layer_id));
    }

    /// out (B, N, D) = block(in (B, N, D)) with the shared attention bias (H, N, N); fills cache.
    /// The drop path factors are read from c.scale1 / c.scale2 (B), set by the caller.
    void forward(T* out, const T* in, const T* bias, int B, Cache& c) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        ops::layernorm_forward(c.ln1.data(), c.mean1.data(), c.rstd1.data(), in, norm1_w.data(), norm1_b.data(), M, D, kEps);
        ops::linear_forward(c.qkv.data(), c.ln1.data(), qkv_w.data(), static_cast<const T*>(nullptr), M, D, 3 * D);
        add_qv_bias(c.qkv.data(), M);
        ops::attention_bias_forward(c.attn.data(), c.lse.data(), c.qkv.data(), bias, B, N, H, Dh);
        ops::linear_forward(c.a.data(), c.attn.data(), proj_w.data(), proj_b.data(), M, D, D);
        ops::layer_scale_residual_forward(c.mid.data(), in, c.a.data(), gamma_1.data(), c.scale1.data(), B, N, D);
        ops::layernorm_forward(c.ln2.data(), c.mean2.data(), c.rstd2.data(), c.mid.data(), norm2_w.data(), norm2_b.data(), M, D, kEps);
        ops::linear_forward(c.fc1.data(), c.ln2.data(), fc1_w.data(), static_cast<const T*>(nullptr), M, D, F);
        ops::bias_gelu_forward(c.act.data(), c.fc1.data(), c.fc1.data(), fc1_b.data(), M, F);
        ops::linear_forward(c.m.data(), c.act.data(), fc2_w.data(), fc2_b.data(), M, F, D);
        ops::layer_scale_residual_forward(out, c.mid.data(), c.m.data(), gamma_2.data(), c.scale2.data(), B, N, D);
    }

    /// Given dout (B, N, D), accumulates parameter gradients and the attention-bias gradient into
    /// dbias (H, N, N) (+=), and writes din (B, N, D) (overwrites).
    void backward(T* din, T* dbias, const T* dout, const T* in, const T* bias, int B, const Cache& c, Scratch& s) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        // MLP branch: d_mid = dout + LN2'(fc1'(gelu'(fc2'(s2 * gamma_2 * dout))))
        ops::layer_scale_residual_backward(s.d_branch.data(), gamma_2.grad(), dout, c.m.data(), gamma_2.data(), c.scale2.data(), B, N, D);
        std::fill_n(s.d_act.data(), M * F, T(0));
        ops::linear_backward(s.d_act.data(), fc2_w.grad(), fc2_b.grad(), s.d_branch.data(), c.act.data(), fc2_w.data(), M, F, D);
        std::fill_n(s.d_fc1.data(), M * F, T(0));
        ops::gelu_backward(s.d_fc1.data(), s.d_act.data(), c.fc1.data(), M * F);
        std::fill_n(s.d_ln.data(), M * D, T(0));
        ops::linear_backward(s.d_ln.data(), fc1_w.grad(), fc1_b.grad(), s.d_fc1.data(), c.ln2.data(), fc1_w.data(), M, D, F);
        std::copy_n(dout, M * D, s.d_mid.data());
        ops::layernorm_backward(s.d_mid.data(), norm2_w.grad(), norm2_b.grad(), s.d_ln.data(), c.mid.data(), c.mean2.data(),
                                c.rstd2.data(), norm2_w.data(), M, D);
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
        ops::layernorm_backward(din, norm1_w.grad(), norm1_b.grad(), s.d_ln.data(), in, c.mean1.data(), c.rstd1.data(),
                                norm1_w.data(), M, D);
    }

    Param<T, Shape<D>> gamma_1, gamma_2, norm1_w, norm1_b, q_bias, v_bias;
    Param<T, Shape<3 * D, D>> qkv_w;
    Param<T, Shape<D, D>> proj_w;
    Param<T, Shape<D>> proj_b, norm2_w, norm2_b;
    Param<T, Shape<F, D>> fc1_w;
    Param<T, Shape<F>> fc1_b;
    Param<T, Shape<D, F>> fc2_w;
    Param<T, Shape<D>> fc2_b;

private:
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
class OfficialViTEncoder {
    static_assert(ValidConfig<C>::value);
    static_assert(std::is_floating_point_v<T>, "simmim: the scalar type must be float or double");

public:
    using scalar_type = T;
    static constexpr ViTConfig config = C;
    static constexpr int S = C.image_size, Cin = C.in_chans, p = C.patch_size, g = C.grid();
    static constexpr int L = C.num_patches(), N = C.num_tokens(), D = C.embed_dim, P = C.patch_dim(), H = C.num_heads;
    static constexpr int R = ops::relative_position_table_rows(g);  // rows of the relative position bias table
    static constexpr int out_dim = D;          // feature width handed to the head
    static constexpr int out_stride = p;       // pixels per feature position
    static constexpr int num_layers = C.depth; // for layer-wise lr decay
    using Block = OfficialViTBlock<T, C>;

    explicit OfficialViTEncoder(ParamArena<T>& arena)
        : cls_token(arena.template add<Shape<1, 1, D>>("encoder.cls_token", Init::TruncNormalStd, false)),
          mask_token(arena.template add<Shape<1, 1, D>>("encoder.mask_token", Init::TruncNormalStd, true)),
          patch_w(arena.template add<Shape<D, Cin, p, p>>("encoder.patch_embed.proj.weight", Init::TruncNormalStd, true)),
          patch_b(arena.template add<Shape<D>>("encoder.patch_embed.proj.bias", Init::Zeros, false)),
          rel_pos_table(arena.template add<Shape<R, H>>("encoder.rel_pos_bias.relative_position_bias_table", Init::Zeros, true)),
          index_(ops::relative_position_index(g)) {
        blocks_.reserve(C.depth);
        for (int i = 0; i < C.depth; ++i) blocks_.emplace_back(arena, "encoder.blocks." + std::to_string(i) + ".", i + 1);
        norm_w = arena.template add<Shape<D>>("encoder.norm.weight", Init::Ones, false);
        norm_b = arena.template add<Shape<D>>("encoder.norm.bias", Init::Zeros, false);
    }

    /// Stochastic depth for the following forward passes: block i drops each sample's attention and
    /// MLP branches independently with rate r_i = linspace(0, rate, depth)[i] (BEiT's rule; block 0
    /// never drops), kept branches scaled by 1 / (1 - r_i). The draws are a pure function of
    /// (seed, step, block, branch, sample) (ops::drop_path_scale), so a resumed run is bit-identical;
    /// backward() uses the factors of the last forward. rate 0 (the default) disables it exactly:
    /// call set_drop_path(0, 0, 0) for evaluation, linear probing or reconstruction. The official
    /// pretraining uses rate 0.1. Throws std::invalid_argument unless 0 <= rate < 1.
    void set_drop_path(double rate, std::uint64_t seed, std::int64_t step) {
        if (!(rate >= 0.0 && rate < 1.0))
            throw std::invalid_argument("OfficialViTEncoder::set_drop_path: rate must lie in [0, 1), found " + std::to_string(rate));
        drop_rate_ = rate;
        drop_seed_ = seed;
        drop_step_ = step;
    }
    double drop_path_rate() const noexcept { return drop_rate_; }

    /// features (B, L, D) from image (B, C, S, S) and mask (B, L) (1 = masked).
    void forward(T* features, const T* image, const T* mask, int B) {
        forward_tokens(image, mask, B, C.depth);
        ops::layernorm_forward(final_.data(), fmean_.data(), frstd_.data(), xs_[C.depth].data(), norm_w.data(), norm_b.data(),
                               static_cast<std::ptrdiff_t>(B) * N, D, Block::kEps);
        drop_cls(features, final_.data(), B);
    }

    /// Runs the embedding and the first `blocks` blocks only (no final norm); returns their output
    /// (B, N, D), cls token first, valid until the next forward. Used for linear probing of block k
    /// (with drop path off). backward() needs a full forward().
    const T* forward_tokens(const T* image, const T* mask, int B, int blocks) {
        if (blocks < 0 || blocks > C.depth)
            throw std::invalid_argument("OfficialViTEncoder: block index must lie in [0, " + std::to_string(C.depth) + "], found " +
                                        std::to_string(blocks));
        if (B <= 0) throw std::invalid_argument("OfficialViTEncoder: batch must be positive, found " + std::to_string(B));
        resize(B);
        const std::ptrdiff_t BL = static_cast<std::ptrdiff_t>(B) * L;
        ops::patchify(patches_.data(), image, B, Cin, S, p);
        ops::linear_forward(embed_.data(), patches_.data(), patch_w.data(), patch_b.data(), BL, P, D);
        mask_.assign(mask, mask + BL);
        // mask-token blend and cls token; the zero "position embedding" adds exactly nothing
        ops::mask_blend_pos_forward(xs_[0].data(), embed_.data(), mask_.data(), mask_token.data(), cls_token.data(), zeros_.data(), B, L, D);
        ops::relative_position_bias_forward(bias_.data(), rel_pos_table.data(), index_.data(), N, H);
        for (int i = 0; i < blocks; ++i) {
            draw_drop_path(i, B);
            blocks_[i].forward(xs_[i + 1].data(), xs_[i].data(), bias_.data(), B, caches_[i]);
        }
        return xs_[blocks].data();
    }

    /// Accumulates parameter gradients from dfeatures (B, L, D); if dimage is not null, accumulates
    /// the gradient with respect to the input image (B, C, S, S) into it.
    void backward(const T* dfeatures, T* dimage) {
        const int B = batch_;
        const std::ptrdiff_t BN = static_cast<std::ptrdiff_t>(B) * N, BL = static_cast<std::ptrdiff_t>(B) * L;
        // d_final (B, N, D): zero for the dropped cls rows
        std::fill(dx_a_.storage().begin(), dx_a_.storage().end(), T(0));
        for (int b = 0; b < B; ++b)
            std::copy_n(dfeatures + static_cast<std::ptrdiff_t>(b) * L * D, static_cast<std::ptrdiff_t>(L) * D,
                        dx_a_.data() + (static_cast<std::ptrdiff_t>(b) * N + 1) * D);
        std::fill(dx_b_.storage().begin(), dx_b_.storage().end(), T(0));
        ops::layernorm_backward(dx_b_.data(), norm_w.grad(), norm_b.grad(), dx_a_.data(), xs_[C.depth].data(), fmean_.data(),
                                frstd_.data(), norm_w.data(), BN, D);
        std::fill(dbias_.begin(), dbias_.end(), T(0));
        T* dx = dx_b_.data();
        T* dtmp = dx_a_.data();
        for (int i = C.depth - 1; i >= 0; --i) {
            blocks_[i].backward(dtmp, dbias_.data(), dx, xs_[i].data(), bias_.data(), B, caches_[i], scratch_);
            std::swap(dx, dtmp);
        }
        // the shared table: sum over blocks (in dbias_) scattered back through the index
        ops::relative_position_bias_backward(rel_pos_table.grad(), dbias_.data(), index_.data(), N, H);
        // dx = d x0 (B, N, D): cls token, mask blend, patch embedding
        T* dcls = cls_token.grad();
        T* dmt = mask_token.grad();
        for (int b = 0; b < B; ++b) {
            const T* row = dx + static_cast<std::ptrdiff_t>(b) * N * D;
            for (int d = 0; d < D; ++d) dcls[d] += row[d];
            for (int l = 0; l < L; ++l) {
                const T w = mask_[static_cast<std::ptrdiff_t>(b) * L + l];
                const T* r = row + static_cast<std::ptrdiff_t>(1 + l) * D;
                T* de = d_embed_.data() + (static_cast<std::ptrdiff_t>(b) * L + l) * D;
                for (int d = 0; d < D; ++d) {
                    dmt[d] += r[d] * w;
                    de[d] = r[d] * (T(1) - w);
                }
            }
        }
        T* dpatches = nullptr;
        if (dimage) {
            std::fill(d_patches_.storage().begin(), d_patches_.storage().end(), T(0));
            dpatches = d_patches_.data();
        }
        ops::linear_backward(dpatches, patch_w.grad(), patch_b.grad(), d_embed_.data(), patches_.data(), patch_w.data(), BL, P, D);
        if (dimage) ops::unpatchify(dimage, d_patches_.data(), B, Cin, S, p, /*accumulate=*/true);
    }

    /// Drop path factors (B) of block `block`'s branch `branch` (0 attention, 1 MLP) in the last
    /// forward: 0 dropped, 1 / (1 - r_i) kept, 1 with drop path off.
    const std::vector<T>& drop_path_factors(int block, int branch) const {
        if (block < 0 || block >= C.depth || branch < 0 || branch > 1 || caches_.empty())
            throw std::invalid_argument("OfficialViTEncoder::drop_path_factors: needs a forward, block in [0, depth), branch 0 or 1");
        return branch == 0 ? caches_[block].scale1 : caches_[block].scale2;
    }
    /// The relative position bias (H, N, N) of the last forward, shared by every block.
    const AlignedVector<T>& attention_bias() const noexcept { return bias_; }
    /// BEiT's relative_position_index (N, N) for this grid (ops::relative_position_index).
    const std::vector<std::int32_t>& relative_position_index() const noexcept { return index_; }

    Param<T, Shape<1, 1, D>> cls_token, mask_token;
    Param<T, Shape<D, Cin, p, p>> patch_w;
    Param<T, Shape<D>> patch_b;
    Param<T, Shape<R, H>> rel_pos_table;
    std::vector<Block> blocks_;
    Param<T, Shape<D>> norm_w, norm_b;

private:
    void draw_drop_path(int block, int B) {
        auto& c = caches_[block];
        const double r = ops::drop_path_block_rate(drop_rate_, block, C.depth);
        for (int b = 0; b < B; ++b) {
            c.scale1[b] = T(ops::drop_path_scale(r, drop_seed_, drop_step_, block, 0, b));
            c.scale2[b] = T(ops::drop_path_scale(r, drop_seed_, drop_step_, block, 1, b));
        }
    }
    void resize(int B) {
        if (B == batch_) return;
        batch_ = B;
        patches_.resize(B);
        d_patches_.resize(B);
        embed_.resize(B);
        d_embed_.resize(B);
        xs_.resize(C.depth + 1);
        for (auto& x : xs_) x.resize(B);
        caches_.resize(C.depth);
        for (auto& c : caches_) c.resize(B);
        scratch_.resize(B);
        final_.resize(B);
        fmean_.resize(B);
        frstd_.resize(B);
        dx_a_.resize(B);
        dx_b_.resize(B);
    }
    static void drop_cls(T* features, const T* tokens, int B) {
        for (int b = 0; b < B; ++b)
            std::copy_n(tokens + (static_cast<std::ptrdiff_t>(b) * N + 1) * D, static_cast<std::ptrdiff_t>(L) * D,
                        features + static_cast<std::ptrdiff_t>(b) * L * D);
    }

    std::vector<std::int32_t> index_;                    // (N, N) relative_position_index
    int batch_ = -1;
    double drop_rate_ = 0.0;
    std::uint64_t drop_seed_ = 0;
    std::int64_t drop_step_ = 0;
    BatchTensor<T, Shape<L, P>> patches_, d_patches_;    // (B, L, C*p*p)
    BatchTensor<T, Shape<L, D>> embed_, d_embed_;        // (B, L, D)
    AlignedVector<T> mask_;                              // (B, L)
    AlignedVector<T> zeros_ = AlignedVector<T>(static_cast<std::size_t>(N) * D, T(0));  // (N, D)
    AlignedVector<T> bias_ = AlignedVector<T>(static_cast<std::size_t>(H) * N * N);     // (H, N, N)
    AlignedVector<T> dbias_ = AlignedVector<T>(static_cast<std::size_t>(H) * N * N);    // (H, N, N)
    std::vector<BatchTensor<T, Shape<N, D>>> xs_;        // residual stream, depth + 1 of (B, N, D)
    std::vector<typename Block::Cache> caches_;
    typename Block::Scratch scratch_;
    BatchTensor<T, Shape<N, D>> final_, dx_a_, dx_b_;    // (B, N, D)
    BatchTensor<T, Shape<N>> fmean_, frstd_;             // (B, N)
};

/// SimMIM with the official (BEiT-derived) ViT encoder, the linear head, masked L1 and the official
/// random masking.
template <class T, ViTConfig C>
using OfficialViTSimMIM = SimMIM<OfficialViTEncoder<T, C>, LinearHead<T, C>, MaskedL1Loss<T, C>, RandomMaskPatch>;

}  // namespace simmim
