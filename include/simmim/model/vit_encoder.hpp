// simmim/model/vit_encoder.hpp: the ViT encoder of SimMIM in its common (timm) form.
//
// forward:  image (B, C, S, S), mask (B, L) -> features (B, L, D) (final-normed tokens, cls dropped)
//   patches = patchify(image)                       (B, L, C*p*p)
//   t = patches W_pe^T + b_pe                        (B, L, D)    Conv2d(C, D, p, stride p)
//   t = t * (1 - w) + mask_token * w                 w = mask
//   x0 = [cls_token ; t] + pos_embed                 (B, N, D)    N = L + 1
//   x_{i+1} = block_i(x_i)                           pre-norm ViT blocks
//   features = norm(x_depth)[:, 1:]
// backward: dfeatures (B, L, D) -> accumulates every parameter gradient, and dimage if asked.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/core/config.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/ops/attention_fused.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/gelu.hpp"
#include "simmim/ops/layernorm.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/patch.hpp"

namespace simmim {

/// One pre-norm transformer block: x += proj(attn(norm1(x))); x += fc2(gelu(fc1(norm2(x)))).
template <class T, ViTConfig C>
class ViTBlock {
public:
    static constexpr int D = C.embed_dim, N = C.num_tokens(), H = C.num_heads, Dh = C.head_dim(), F = C.mlp_hidden();
    static constexpr T kEps = T(1e-6);

    /// Activations a block caches in forward for its backward.
    struct Cache {
        BatchTensor<T, Shape<N, D>> ln1, attn, mid, ln2;
        BatchTensor<T, Shape<N>> mean1, rstd1, mean2, rstd2;
        BatchTensor<T, Shape<N, 3 * D>> qkv;
        BatchTensor<T, Shape<H, N>> lse;  // row log-sum-exp of the attention scores (fused attention)
        BatchTensor<T, Shape<N, F>> fc1, act;
        void resize(std::size_t B) {
            for (auto* t : {&ln1, &attn, &mid, &ln2}) t->resize(B);
            for (auto* t : {&mean1, &rstd1, &mean2, &rstd2}) t->resize(B);
            qkv.resize(B);
            lse.resize(B);
            fc1.resize(B);
            act.resize(B);
        }
    };
    /// Gradient scratch shared by all blocks (the backward of one block at a time).
    struct Scratch {
        BatchTensor<T, Shape<N, D>> d_ln, d_attn, d_mid;
        BatchTensor<T, Shape<N, 3 * D>> d_qkv;
        BatchTensor<T, Shape<N, F>> d_fc1, d_act;
        void resize(std::size_t B) {
            for (auto* t : {&d_ln, &d_attn, &d_mid}) t->resize(B);
            d_qkv.resize(B);
            d_fc1.resize(B);
            d_act.resize(B);
        }
    };

    ViTBlock(ParamArena<T>& arena, const std::string& prefix)
        : norm1_w(arena.template add<Shape<D>>(prefix + "norm1.weight", Init::Ones, false)),
          norm1_b(arena.template add<Shape<D>>(prefix + "norm1.bias", Init::Zeros, false)),
          qkv_w(arena.template add<Shape<3 * D, D>>(prefix + "attn.qkv.weight", Init::TruncNormal002, true)),
          qkv_b(arena.template add<Shape<3 * D>>(prefix + "attn.qkv.bias", Init::Zeros, false)),
          proj_w(arena.template add<Shape<D, D>>(prefix + "attn.proj.weight", Init::TruncNormal002, true)),
          proj_b(arena.template add<Shape<D>>(prefix + "attn.proj.bias", Init::Zeros, false)),
          norm2_w(arena.template add<Shape<D>>(prefix + "norm2.weight", Init::Ones, false)),
          norm2_b(arena.template add<Shape<D>>(prefix + "norm2.bias", Init::Zeros, false)),
          fc1_w(arena.template add<Shape<F, D>>(prefix + "mlp.fc1.weight", Init::TruncNormal002, true)),
          fc1_b(arena.template add<Shape<F>>(prefix + "mlp.fc1.bias", Init::Zeros, false)),
          fc2_w(arena.template add<Shape<D, F>>(prefix + "mlp.fc2.weight", Init::TruncNormal002, true)),
          fc2_b(arena.template add<Shape<D>>(prefix + "mlp.fc2.bias", Init::Zeros, false)) {}

    /// out (B, N, D) = block(in (B, N, D)); fills cache.
    void forward(T* out, const T* in, int B, Cache& c) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        ops::layernorm_forward(c.ln1.data(), c.mean1.data(), c.rstd1.data(), in, norm1_w.data(), norm1_b.data(), M, D, kEps);
        ops::linear_forward(c.qkv.data(), c.ln1.data(), qkv_w.data(), qkv_b.data(), M, D, 3 * D);
        ops::attention_forward_fused(c.attn.data(), c.lse.data(), c.qkv.data(), B, N, H, Dh);
        ops::linear_forward(c.mid.data(), c.attn.data(), proj_w.data(), proj_b.data(), M, D, D);
        // mid = in + proj(attn); ln2 = norm2(mid)
        ops::residual_layernorm_forward(c.mid.data(), c.ln2.data(), c.mean2.data(), c.rstd2.data(), c.mid.data(), in, norm2_w.data(),
                                        norm2_b.data(), M, D, kEps);
        // fc1 = ln2 W1^T + b1 (pre-activation, kept for backward); act = gelu(fc1)
        ops::linear_forward(c.fc1.data(), c.ln2.data(), fc1_w.data(), static_cast<const T*>(nullptr), M, D, F);
        ops::bias_gelu_forward(c.act.data(), c.fc1.data(), c.fc1.data(), fc1_b.data(), M, F);
        ops::linear_forward(out, c.act.data(), fc2_w.data(), fc2_b.data(), M, F, D);
        add_inplace(out, c.mid.data(), M * D);  // out = mid + fc2(gelu(fc1(ln2)))
    }

    /// Given dout (B, N, D), accumulates parameter gradients and writes din (B, N, D) (overwrites).
    void backward(T* din, const T* dout, const T* in, int B, const Cache& c, Scratch& s) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        // MLP branch: d_mid = dout + LN2'(fc1'(gelu'(fc2'(dout))))
        std::fill_n(s.d_act.data(), M * F, T(0));
        ops::linear_backward(s.d_act.data(), fc2_w.grad(), fc2_b.grad(), dout, c.act.data(), fc2_w.data(), M, F, D);
        std::fill_n(s.d_fc1.data(), M * F, T(0));
        ops::gelu_backward(s.d_fc1.data(), s.d_act.data(), c.fc1.data(), M * F);
        std::fill_n(s.d_ln.data(), M * D, T(0));
        ops::linear_backward(s.d_ln.data(), fc1_w.grad(), fc1_b.grad(), s.d_fc1.data(), c.ln2.data(), fc1_w.data(), M, D, F);
        std::copy_n(dout, M * D, s.d_mid.data());
        ops::layernorm_backward(s.d_mid.data(), norm2_w.grad(), norm2_b.grad(), s.d_ln.data(), c.mid.data(), c.mean2.data(),
                                c.rstd2.data(), norm2_w.data(), M, D);
        // attention branch: din = d_mid + LN1'(qkv'(attn'(proj'(d_mid))))
        std::fill_n(s.d_attn.data(), M * D, T(0));
        ops::linear_backward(s.d_attn.data(), proj_w.grad(), proj_b.grad(), s.d_mid.data(), c.attn.data(), proj_w.data(), M, D, D);
        std::fill_n(s.d_qkv.data(), M * 3 * D, T(0));
        ops::attention_backward_fused(s.d_qkv.data(), s.d_attn.data(), c.qkv.data(), c.attn.data(), c.lse.data(), B, N, H, Dh);
        std::fill_n(s.d_ln.data(), M * D, T(0));
        ops::linear_backward(s.d_ln.data(), qkv_w.grad(), qkv_b.grad(), s.d_qkv.data(), c.ln1.data(), qkv_w.data(), M, D, 3 * D);
        std::copy_n(s.d_mid.data(), M * D, din);
        ops::layernorm_backward(din, norm1_w.grad(), norm1_b.grad(), s.d_ln.data(), in, c.mean1.data(), c.rstd1.data(),
                                norm1_w.data(), M, D);
    }

    Param<T, Shape<D>> norm1_w, norm1_b;
    Param<T, Shape<3 * D, D>> qkv_w;
    Param<T, Shape<3 * D>> qkv_b;
    Param<T, Shape<D, D>> proj_w;
    Param<T, Shape<D>> proj_b, norm2_w, norm2_b;
    Param<T, Shape<F, D>> fc1_w;
    Param<T, Shape<F>> fc1_b;
    Param<T, Shape<D, F>> fc2_w;
    Param<T, Shape<D>> fc2_b;

private:
    static void add_inplace(T* y, const T* x, std::ptrdiff_t n) {
#pragma omp parallel for schedule(static)
        for (std::ptrdiff_t i = 0; i < n; ++i) y[i] += x[i];
    }
};

/// The ViT encoder of SimMIM (common form). Satisfies the Encoder concept (model/concepts.hpp).
template <class T, ViTConfig C>
class ViTEncoder {
    static_assert(ValidConfig<C>::value);
    static_assert(std::is_floating_point_v<T>, "simmim: the scalar type must be float or double");

public:
    using scalar_type = T;
    static constexpr ViTConfig config = C;
    static constexpr int S = C.image_size, Cin = C.in_chans, p = C.patch_size, g = C.grid();
    static constexpr int L = C.num_patches(), N = C.num_tokens(), D = C.embed_dim, P = C.patch_dim();
    static constexpr int out_dim = D;          // feature width handed to the head
    static constexpr int out_stride = p;       // pixels per feature position
    static constexpr int num_layers = C.depth; // for layer-wise lr decay
    using Block = ViTBlock<T, C>;

    explicit ViTEncoder(ParamArena<T>& arena)
        : cls_token(arena.template add<Shape<1, 1, D>>("encoder.cls_token", Init::TruncNormal002, false)),
          pos_embed(arena.template add<Shape<1, N, D>>("encoder.pos_embed", Init::TruncNormal002, false)),
          patch_w(arena.template add<Shape<D, Cin, p, p>>("encoder.patch_embed.proj.weight", Init::TruncNormal002, true)),
          patch_b(arena.template add<Shape<D>>("encoder.patch_embed.proj.bias", Init::Zeros, false)) {
        blocks_.reserve(C.depth);
        for (int i = 0; i < C.depth; ++i) blocks_.emplace_back(arena, "encoder.blocks." + std::to_string(i) + ".");
        norm_w = arena.template add<Shape<D>>("encoder.norm.weight", Init::Ones, false);
        norm_b = arena.template add<Shape<D>>("encoder.norm.bias", Init::Zeros, false);
        mask_token = arena.template add<Shape<1, 1, D>>("encoder.mask_token", Init::TruncNormal002, false);
    }

    /// features (B, L, D) from image (B, C, S, S) and mask (B, L) (1 = masked).
    void forward(T* features, const T* image, const T* mask, int B) {
        forward_tokens(image, mask, B, C.depth);
        ops::layernorm_forward(final_.data(), fmean_.data(), frstd_.data(), xs_[C.depth].data(), norm_w.data(), norm_b.data(),
                               static_cast<std::ptrdiff_t>(B) * N, D, Block::kEps);
        drop_cls(features, final_.data(), B);
    }

    /// Runs the embedding and the first `blocks` blocks only (no final norm); returns their output
    /// (B, N, D), cls token first, valid until the next forward. Used for linear probing of block k.
    /// backward() needs a full forward().
    const T* forward_tokens(const T* image, const T* mask, int B, int blocks) {
        if (blocks < 0 || blocks > C.depth) throw std::invalid_argument("ViTEncoder: block index out of range");
        resize(B);
        const std::ptrdiff_t BL = static_cast<std::ptrdiff_t>(B) * L;
        ops::patchify(patches_.data(), image, B, Cin, S, p);
        ops::linear_forward(embed_.data(), patches_.data(), patch_w.data(), patch_b.data(), BL, P, D);
        mask_.assign(mask, mask + BL);
        ops::mask_blend_pos_forward(xs_[0].data(), embed_.data(), mask_.data(), mask_token.data(), cls_token.data(), pos_embed.data(), B, L, D);
        for (int i = 0; i < blocks; ++i) blocks_[i].forward(xs_[i + 1].data(), xs_[i].data(), B, caches_[i]);
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
        T* dx = dx_b_.data();
        T* dtmp = dx_a_.data();
        for (int i = C.depth - 1; i >= 0; --i) {
            blocks_[i].backward(dtmp, dx, xs_[i].data(), B, caches_[i], scratch_);
            std::swap(dx, dtmp);
        }
        // dx = d x0 (B, N, D): cls token, position embedding, mask blend, patch embedding
        T* dcls = cls_token.grad();
        T* dpos = pos_embed.grad();
        T* dmt = mask_token.grad();
        for (int b = 0; b < B; ++b) {
            const T* row = dx + static_cast<std::ptrdiff_t>(b) * N * D;
            for (std::ptrdiff_t j = 0; j < static_cast<std::ptrdiff_t>(N) * D; ++j) dpos[j] += row[j];
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

    Param<T, Shape<1, 1, D>> cls_token;
    Param<T, Shape<1, N, D>> pos_embed;
    Param<T, Shape<D, Cin, p, p>> patch_w;
    Param<T, Shape<D>> patch_b;
    std::vector<Block> blocks_;
    Param<T, Shape<D>> norm_w, norm_b;
    Param<T, Shape<1, 1, D>> mask_token;

private:
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

    int batch_ = -1;
    BatchTensor<T, Shape<L, P>> patches_, d_patches_;    // (B, L, C*p*p)
    BatchTensor<T, Shape<L, D>> embed_, d_embed_;        // (B, L, D)
    AlignedVector<T> mask_;                              // (B, L)
    std::vector<BatchTensor<T, Shape<N, D>>> xs_;        // residual stream, depth + 1 of (B, N, D)
    std::vector<typename Block::Cache> caches_;
    typename Block::Scratch scratch_;
    BatchTensor<T, Shape<N, D>> final_, dx_a_, dx_b_;    // (B, N, D)
    BatchTensor<T, Shape<N>> fmean_, frstd_;             // (B, N)
};

}  // namespace simmim
