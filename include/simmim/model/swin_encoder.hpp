// simmim/model/swin_encoder.hpp: the Swin Transformer encoder of SimMIM (Liu et al., ICCV 2021; Xie et al.,
// CVPR 2022), as microsoft/SimMIM models/simmim.py SwinTransformerForSimMIM with models/swin_transformer.py,
// composed from the shared parts (model/parts/) and the window ops (ops/window.hpp).
//
// forward:  image (B, C, S, S), mask (B, g*g) on the patch grid g = S / p -> features (B, o*o, C_last)
//   t = LayerNorm(patches W_pe^T + b_pe)             (B, g*g, C)       PatchEmbed with patch_embed.norm (eps 1e-5)
//   x = t * (1 - w) + mask_token * w                 w = mask          (the mask token is not normalised)
//   stage i = 0 .. S-1 on an r_i x r_i grid of C_i channels:
//     block j: x = x + proj(window_attention(norm1(x)))             windows of w_i, shifted by w_i/2 when j is odd
//              x = x + fc2(gelu(fc1(norm2(x))))                     (and the stage is not clamped)
//     then, but after the last stage, PatchMerging: x = Linear(LayerNorm(cat(x0, x1, x2, x3)))  (4C_i -> 2C_i)
//   features = norm(x)                                (B, o*o, C_last) in grid order, o = g / 2^(S-1)
// Window attention: roll(-s) + window partition (one row permutation, ops::window_order), per window and
// head softmax(q k^T / sqrt(d) + table[index] + attn_mask[window]) v (ops::attention_bias_forward with a
// window mask), then the inverse permutation. Every LayerNorm has eps 1e-5; GELU is the exact erf form;
// no absolute position embedding, no dropout, no drop path (the SimMIM pretraining configuration).
//
// Parameters carry the official state-dict names (encoder.patch_embed.*, encoder.layers.{i}.blocks.{j}.*,
// encoder.layers.{i}.downsample.*, encoder.norm.*, encoder.mask_token) and registration order. Init as the
// official code: Linear weights and the bias tables trunc_normal(std .02), biases 0, LayerNorm 1 / 0, the
// patch projection PyTorch's default Conv2d init, mask_token trunc_normal(std .02). Weight decay as the official
// pretraining groups, including their quirk: the relative position bias tables ARE decayed (the prefixed
// skip keyword 'encoder.relative_position_bias_table' matches no name), the mask token, biases and norms not.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "simmim/core/geometry.hpp"
#include "simmim/core/swin_config.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/masking/masking.hpp"
#include "simmim/model/linear_head.hpp"
#include "simmim/model/masked_l1_loss.hpp"
#include "simmim/model/parts/block_stack.hpp"
#include "simmim/model/parts/layer_norm.hpp"
#include "simmim/model/parts/mlp.hpp"
#include "simmim/model/parts/patch_embedding.hpp"
#include "simmim/model/parts/prenorm_buffers.hpp"
#include "simmim/ops/attention_bias.hpp"
#include "simmim/ops/copy.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/window.hpp"
#include "simmim/model/simmim_model.hpp"

namespace simmim {

/// The sizes of one Swin block (a structural type): C channels on an r x r grid in ws x ws windows.
struct SwinBlockSpec {
    int dim = 0;         // C_i
    int resolution = 0;  // r_i
    int window = 0;      // w_i (after the clamp rule)
    int heads = 0;
    int mlp_hidden = 0;
    constexpr bool operator==(const SwinBlockSpec&) const = default;
};

/// One Swin Transformer block, with its relative position bias table and, when shifted, its attention mask.
/// It maps (B, r*r, C) tokens in grid order to the same; inside, everything runs in window order.
template <class T, SwinBlockSpec Bs>
class SwinBlock {
    static_assert(Bs.dim > 0 && Bs.heads > 0 && Bs.dim % Bs.heads == 0, "simmim: Swin block channels must be a multiple of its heads");
    static_assert(Bs.window > 0 && Bs.resolution % Bs.window == 0, "simmim: a Swin block's window must divide its resolution");

public:
    static constexpr int D = Bs.dim, r = Bs.resolution, ws = Bs.window, H = Bs.heads, Dh = D / H, F = Bs.mlp_hidden;
    static constexpr int N = r * r;                    // tokens per sample (what BlockStack sees)
    static constexpr int Nw = ws * ws;                 // tokens per window
    static constexpr int nW = (r / ws) * (r / ws);     // windows per sample
    static constexpr int R = ops::window_table_rows(ws);
    static constexpr bool permuted = nW > 1;           // one window of the whole grid: window order = grid order
    static constexpr T kEps = T(1e-5);

    /// Activations kept for backward, in window order (lse is (B * nW, H, Nw), H * N per sample), plus the
    /// (H, Nw, Nw) bias gathered from the table in the last forward.
    struct Cache : PreNormCache<T, N, D, H, F> {
        AlignedVector<T> bias = AlignedVector<T>(static_cast<std::size_t>(H) * Nw * Nw);
        void resize(std::size_t B) {
            this->for_each([&](auto& t) { t.resize(B); });
        }
    };
    /// Gradient scratch shared by the blocks of a stage: the pre-norm block's, the block input and output
    /// gradient in window order (when permuted), and the bias gradient.
    struct Scratch : PreNormScratch<T, N, D, F> {
        BatchTensor<T, Shape<N, D>> x_w, d_w;
        AlignedVector<T> dbias = AlignedVector<T>(static_cast<std::size_t>(H) * Nw * Nw);
        template <class Fn>
        void for_each(Fn&& f) {
            PreNormScratch<T, N, D, F>::for_each(f);
            if constexpr (permuted) {
                f(x_w);
                f(d_w);
            }
        }
        void resize(std::size_t B) {
            for_each([&](auto& t) { t.resize(B); });
        }
    };

    /// Registers the block's parameters under `prefix` ("encoder.layers.{i}.blocks.{j}.") in the official
    /// order; `shift` is 0 or ws / 2.
    SwinBlock(ParamArena<T>& arena, const std::string& prefix, int shift)
        : norm1(arena, prefix + "norm1."),
          table(arena.template add<Shape<R, H>>(prefix + "attn.relative_position_bias_table", Init::TruncNormal002, true)),
          qkv_w(arena.template add<Shape<3 * D, D>>(prefix + "attn.qkv.weight", Init::TruncNormal002, true)),
          qkv_b(arena.template add<Shape<3 * D>>(prefix + "attn.qkv.bias", Init::Zeros, false)),
          proj_w(arena.template add<Shape<D, D>>(prefix + "attn.proj.weight", Init::TruncNormal002, true)),
          proj_b(arena.template add<Shape<D>>(prefix + "attn.proj.bias", Init::Zeros, false)),
          norm2(arena, prefix + "norm2."),
          mlp(arena, prefix + "mlp.", Init::TruncNormal002),
          shift_(shift),
          order_(ops::window_order(r, ws, shift)),
          index_(ops::window_relative_position_index(ws)) {
        if (shift > 0) mask_ = ops::shifted_window_mask<T>(r, ws, shift);
    }

    /// out (B, N, D) = block(in (B, N, D)), both in grid order; fills c. tmp holds B * N * D values.
    void forward(T* out, const T* in, int B, Cache& c, T* tmp) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        const T* x = in;
        T* y = out;
        if constexpr (permuted) {
            ops::gather_rows(tmp, in, order_.data(), B, N, D);
            x = tmp;
        }
        ops::relative_position_bias_forward(c.bias.data(), table.data(), index_.data(), Nw, H);
        norm1.forward(c.ln1.data(), c.mean1.data(), c.rstd1.data(), x, M, kEps);
        ops::linear_forward(c.qkv.data(), c.ln1.data(), qkv_w.data(), qkv_b.data(), M, D, 3 * D);
        ops::attention_bias_forward(c.attn.data(), c.lse.data(), c.qkv.data(), c.bias.data(), B * nW, Nw, H, Dh, mask(), nW);
        ops::linear_forward(c.mid.data(), c.attn.data(), proj_w.data(), proj_b.data(), M, D, D);
        // mid = x + proj(attn); ln2 = norm2(mid)
        ops::residual_layernorm_forward(c.mid.data(), c.ln2.data(), c.mean2.data(), c.rstd2.data(), c.mid.data(), x,
                                        norm2.weight.data(), norm2.bias.data(), M, D, kEps);
        if constexpr (permuted) y = tmp;  // x is no longer needed
        mlp.forward(y, c.ln2.data(), B, c.mlp);
        add_inplace(y, c.mid.data(), M * D);
        if constexpr (permuted) ops::scatter_rows(out, y, order_.data(), B, N, D);
    }

    /// Given dout (B, N, D) in grid order, accumulates the parameter gradients and writes din (B, N, D).
    void backward(T* din, const T* dout, const T* in, int B, const Cache& c, Scratch& s) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * N;
        const T* dy = dout;
        const T* x = in;
        T* dx = din;
        if constexpr (permuted) {
            ops::gather_rows(s.d_w.data(), dout, order_.data(), B, N, D);
            ops::gather_rows(s.x_w.data(), in, order_.data(), B, N, D);
            dy = s.d_w.data();
            x = s.x_w.data();
            dx = s.d_w.data();  // written once dy is consumed
        }
        // MLP branch: d_mid = dy + LN2'(mlp'(dy))
        mlp.backward(s.d_ln.data(), dy, c.ln2.data(), B, c.mlp, s.mlp);
        ops::copy(s.d_mid.data(), dy, M * D);
        norm2.backward(s.d_mid.data(), s.d_ln.data(), c.mid.data(), c.mean2.data(), c.rstd2.data(), M);
        // attention branch: dx = d_mid + LN1'(qkv'(attn'(proj'(d_mid))))
        ops::linear_backward(s.d_attn.data(), proj_w.grad(), proj_b.grad(), s.d_mid.data(), c.attn.data(), proj_w.data(), M, D, D, T(0));
        ops::fill(s.d_qkv.data(), M * 3 * D, T(0));
        std::fill(s.dbias.begin(), s.dbias.end(), T(0));
        ops::attention_bias_backward(s.d_qkv.data(), s.dbias.data(), s.d_attn.data(), c.qkv.data(), c.attn.data(), c.lse.data(),
                                     c.bias.data(), B * nW, Nw, H, Dh, mask(), nW);
        ops::relative_position_bias_backward(table.grad(), s.dbias.data(), index_.data(), Nw, H);
        ops::linear_backward(s.d_ln.data(), qkv_w.grad(), qkv_b.grad(), s.d_qkv.data(), c.ln1.data(), qkv_w.data(), M, D, 3 * D, T(0));
        ops::copy(dx, s.d_mid.data(), M * D);
        norm1.backward(dx, s.d_ln.data(), x, c.mean1.data(), c.rstd1.data(), M);
        if constexpr (permuted) ops::scatter_rows(din, dx, order_.data(), B, N, D);
    }

    int shift() const noexcept { return shift_; }
    /// relative_position_index (Nw, Nw) and, for a shifted block, attn_mask (nW, Nw, Nw): the official buffers.
    const std::vector<std::int32_t>& relative_position_index() const noexcept { return index_; }
    const std::vector<T>& attention_mask() const noexcept { return mask_; }

    LayerNormParams<T, D> norm1;
    Param<T, Shape<R, H>> table;
    Param<T, Shape<3 * D, D>> qkv_w;
    Param<T, Shape<3 * D>> qkv_b;
    Param<T, Shape<D, D>> proj_w;
    Param<T, Shape<D>> proj_b;
    LayerNormParams<T, D> norm2;
    Mlp<T, N, D, F> mlp;

private:
    const T* mask() const noexcept { return mask_.empty() ? nullptr : mask_.data(); }
    static void add_inplace(T* y, const T* x, std::ptrdiff_t n) {
#pragma omp parallel for schedule(static) if (n >= kernels::kParallelMinWork)
        for (std::ptrdiff_t i = 0; i < n; ++i) y[i] += x[i];
    }
    int shift_ = 0;
    std::vector<std::int32_t> order_;  // (N) window order of the grid rows
    std::vector<std::int32_t> index_;  // (Nw, Nw)
    std::vector<T> mask_;              // (nW, Nw, Nw), empty without shift
};

/// Swin's PatchMerging: (B, r*r, C) -> (B, (r/2)^2, 2C), x = reduction(norm(cat(x0, x1, x2, x3))), no bias.
template <class T, int r, int C>
class PatchMerging {
    static_assert(r >= 2 && r % 2 == 0, "simmim: patch merging needs an even resolution");

public:
    static constexpr int No = (r / 2) * (r / 2), Cm = 4 * C;
    static constexpr T kEps = T(1e-5);
    struct Cache {
        BatchTensor<T, Shape<No, Cm>> merged;  // (B, No, 4C) before the norm
        NormCache<T, No, Cm> norm;
        template <class Fn>
        void for_each(Fn&& f) {
            f(merged);
            norm.for_each(f);
        }
        void resize(std::size_t B) {
            for_each([&](auto& t) { t.resize(B); });
        }
    };
    struct Scratch {
        BatchTensor<T, Shape<No, Cm>> d_normed, d_merged;
        template <class Fn>
        void for_each(Fn&& f) {
            f(d_normed);
            f(d_merged);
        }
        void resize(std::size_t B) {
            for_each([&](auto& t) { t.resize(B); });
        }
    };
    static std::size_t activation_bytes(int B) {
        return static_cast<std::size_t>(B) * (bytes_per_sample<Cache>() + bytes_per_sample<Scratch>());
    }

    PatchMerging() = default;
    /// "encoder.layers.{i}.downsample.": reduction.weight [2C, 4C], then norm.weight / .bias [4C].
    PatchMerging(ParamArena<T>& arena, const std::string& prefix)
        : reduction(arena.template add<Shape<2 * C, Cm>>(prefix + "reduction.weight", Init::TruncNormal002, true)),
          norm(arena, prefix + "norm.") {}

    /// out (B, No, 2C) from in (B, r*r, C); fills c.
    void forward(T* out, const T* in, int B, Cache& c) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * No;
        ops::merge_gather(c.merged.data(), in, B, r, C);
        norm.forward(c.norm.out.data(), c.norm.mean.data(), c.norm.rstd.data(), c.merged.data(), M, kEps);
        ops::linear_forward(out, c.norm.out.data(), reduction.data(), static_cast<const T*>(nullptr), M, Cm, 2 * C);
    }
    /// din (B, r*r, C) from dout (B, No, 2C) (overwrites); accumulates the parameter gradients.
    void backward(T* din, const T* dout, int B, const Cache& c, Scratch& s) const {
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * No;
        ops::linear_backward(s.d_normed.data(), reduction.grad(), static_cast<T*>(nullptr), dout, c.norm.out.data(), reduction.data(),
                             M, Cm, 2 * C, T(0));
        ops::fill(s.d_merged.data(), M * Cm, T(0));
        norm.backward(s.d_merged.data(), s.d_normed.data(), c.merged.data(), c.norm.mean.data(), c.norm.rstd.data(), M);
        ops::merge_scatter(din, s.d_merged.data(), B, r, C);
    }

    Param<T, Shape<2 * C, Cm>> reduction;
    LayerNormParams<T, Cm> norm;
};

namespace detail {
/// Stage I of a Swin encoder: its blocks and, but for the last stage, its patch merging.
template <class T, SwinConfig C, int I>
struct SwinStage {
    static constexpr int r = C.resolution(I), D = C.dim(I), depth = C.depth(I);
    static constexpr bool merges = I + 1 < C.num_stages;
    using Block = SwinBlock<T, SwinBlockSpec{D, r, C.window(I), C.heads(I), C.mlp_ratio * D}>;
    using Merge = PatchMerging<T, r, D>;
    BlockStack<T, Block> stack;
    Merge merge;
    typename Merge::Cache merge_cache;
    typename Merge::Scratch merge_scratch;

    explicit SwinStage(ParamArena<T>& arena)
        : stack(arena, depth, [&](int j) {
              return Block(arena, "encoder.layers." + std::to_string(I) + ".blocks." + std::to_string(j) + ".", j % 2 ? C.shift(I) : 0);
          }) {
        if constexpr (merges) merge = Merge(arena, "encoder.layers." + std::to_string(I) + ".downsample.");
    }
    static std::size_t activation_bytes(int B) {
        return BlockStack<T, Block>::activation_bytes(depth, B) + (merges ? Merge::activation_bytes(B) : 0);
    }
    void resize(int B) {
        stack.resize(B);
        if constexpr (merges) {
            merge_cache.resize(static_cast<std::size_t>(B));
            merge_scratch.resize(static_cast<std::size_t>(B));
        }
    }
};

template <class T, SwinConfig C, class Seq>
struct SwinStages;
template <class T, SwinConfig C, std::size_t... I>
struct SwinStages<T, C, std::index_sequence<I...>> {
    using type = std::tuple<SwinStage<T, C, static_cast<int>(I)>...>;
};
}  // namespace detail

/// The Swin encoder of SimMIM. Satisfies the Encoder concept (model/concepts.hpp).
template <class T, SwinConfig C>
class SwinEncoder {
    static_assert(ValidSwinConfig<C>::value);
    static_assert(std::is_floating_point_v<T>, "simmim: the scalar type must be float or double");

public:
    using scalar_type = T;
    static constexpr SwinConfig config = C;
    static constexpr EncoderGeometry geometry = C.geometry();
    static constexpr int S = C.image_size, Cin = C.in_chans, p = C.patch_size, g = C.grid(), D0 = C.embed_dim;
    static constexpr int num_stages = C.num_stages, Dout = C.num_features(), o = geometry.out_grid, Lout = o * o;
    static constexpr int num_layers = C.total_depth();  // blocks, for layer-wise lr decay (get_swin_layer: + 2)
    static constexpr T kEps = T(1e-5);
    using Embedding = PatchEmbedding<T, PatchEmbedSpec{S, Cin, p, D0, /*cls_token=*/false, /*pos_embed=*/false, /*norm=*/true}>;
    using Stages = typename detail::SwinStages<T, C, std::make_index_sequence<static_cast<std::size_t>(C.num_stages)>>::type;
    template <int I>
    using Stage = std::tuple_element_t<static_cast<std::size_t>(I), Stages>;
    using Last = Stage<num_stages - 1>;

    /// The form recorded in weights files (model/model_kind.hpp).
    static std::string kind() { return "swin"; }

    /// Bytes forward() and backward() allocate for a batch of B.
    static std::size_t activation_bytes(int B) {
        std::size_t n = Embedding::activation_bytes(B) + static_cast<std::size_t>(B) * sizeof(T) * max_tokens_per_sample();
        for_each_index([&]<int I>() { n += Stage<I>::activation_bytes(B); });
        return n + static_cast<std::size_t>(B) * 2 * Lout * sizeof(T);  // final norm statistics
    }

    /// Registers the parameters in the official state-dict order: mask_token (a parameter of the encoder
    /// module itself comes before its submodules'), patch_embed (proj, norm), the stages' blocks and
    /// downsampling, norm.
    explicit SwinEncoder(ParamArena<T>& arena)
        : embed_(arena, {Init::TruncNormal002, /*mask_token_decay=*/false, /*mask_token_first=*/true, /*conv_default=*/true}),
          stages_(make_stages(arena, std::make_index_sequence<static_cast<std::size_t>(C.num_stages)>{})),
          norm_(arena, "encoder.norm.") {}
    SwinEncoder(const SwinEncoder&) = delete;
    SwinEncoder& operator=(const SwinEncoder&) = delete;

    /// features (B, o*o, C_last) from image (B, C, S, S) and mask (B, g*g) (1 = masked).
    void forward(T* features, const T* image, const T* mask, int B) {
        if (B <= 0) throw std::invalid_argument("SwinEncoder::forward: batch must be positive");
        resize(B);
        embed_.forward(stage<0>().stack.input(), image, mask, B, embed_cache_);
        for_each_index([&]<int I>() {
            auto& st = stage<I>();
            st.stack.forward(st.depth, [&](int, const auto& block, T* out, const T* in, auto& c) { block.forward(out, in, B, c, tmp_.data()); });
            if constexpr (Stage<I>::merges)
                st.merge.forward(stage<I + 1>().stack.input(), st.stack.output(st.depth), B, st.merge_cache);
        });
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * Lout;
        norm_.forward(features, norm_mean_.data(), norm_rstd_.data(), last().stack.output(Last::depth), M, kEps);
    }

    /// Accumulates the parameter gradients from dfeatures (B, o*o, C_last); if dimage is not null,
    /// accumulates d image (B, C, S, S) into it. Needs a forward().
    void backward(const T* dfeatures, T* dimage) {
        const int B = batch_;
        if (B <= 0) throw std::logic_error("SwinEncoder::backward: needs a forward()");
        const std::ptrdiff_t M = static_cast<std::ptrdiff_t>(B) * Lout;
        T* dlast = last().stack.grad_out();
        ops::fill(dlast, M * Dout, T(0));
        norm_.backward(dlast, dfeatures, last().stack.output(Last::depth), norm_mean_.data(), norm_rstd_.data(), M);
        const T* dx0 = nullptr;
        for_each_index_reverse([&]<int I>() {
            auto& st = stage<I>();
            dx0 = st.stack.backward([&](int, const auto& block, T* din, const T* dout, const T* in, const auto& c, auto& s) {
                block.backward(din, dout, in, B, c, s);
            });
            if constexpr (I > 0) {
                auto& prev = stage<I - 1>();
                prev.merge.backward(prev.stack.grad_out(), dx0, B, prev.merge_cache, prev.merge_scratch);
            }
        });
        embed_.backward(dx0, dimage, B, embed_cache_, embed_scratch_);
    }

    /// Inference: the features of forward(), keeping nothing for backward, in chunks of a few samples.
    void encode(T* features, const T* image, const T* mask, int B) const {
        if (B <= 0) throw std::invalid_argument("SwinEncoder::encode: batch must be positive");
        const int chunk = inference_chunk(static_cast<std::size_t>(activation_bytes(1)));
        for_each_chunk(B, chunk, [&](int b0, int nb) {
            typename Embedding::Cache ec;
            ec.resize(static_cast<std::size_t>(nb));
            AlignedVector<T> x(static_cast<std::size_t>(nb) * max_tokens_per_sample()), y(x.size()), tmp(x.size());
            embed_.forward(x.data(), image + static_cast<std::ptrdiff_t>(b0) * geometry.image_numel(),
                           mask ? mask + static_cast<std::ptrdiff_t>(b0) * g * g : nullptr, nb, ec);
            for_each_index([&]<int I>() {
                const auto& st = stage<I>();
                typename Stage<I>::Block::Cache c;
                c.resize(static_cast<std::size_t>(nb));
                for (int j = 0; j < st.depth; ++j) {
                    st.stack[j].forward(y.data(), x.data(), nb, c, tmp.data());
                    std::swap(x, y);
                }
                if constexpr (Stage<I>::merges) {
                    typename Stage<I>::Merge::Cache mc;
                    mc.resize(static_cast<std::size_t>(nb));
                    st.merge.forward(y.data(), x.data(), nb, mc);
                    std::swap(x, y);
                }
            });
            AlignedVector<T> mean(static_cast<std::size_t>(nb) * Lout), rstd(mean.size());
            norm_.forward(features + static_cast<std::ptrdiff_t>(b0) * Lout * Dout, mean.data(), rstd.data(), x.data(),
                          static_cast<std::ptrdiff_t>(nb) * Lout, kEps);
        });
    }

    /// Layer id of a parameter for layer-wise lr decay, the official get_swin_layer: mask_token and
    /// patch_embed 0; layers.i.blocks.j sum(depths[:i]) + j + 1; layers.i.downsample sum(depths[:i+1]) (its
    /// stage's last block); everything else (final norm, a classifier head) total_depth + 1.
    static int layer_id(const std::string& name) {
        if (name == "encoder.mask_token" || name.rfind("encoder.patch_embed.", 0) == 0) return 0;
        if (name.rfind("encoder.layers.", 0) == 0) {
            const std::size_t i_end = name.find('.', 15);
            const int i = std::stoi(name.substr(15, i_end - 15));
            int before = 0;
            for (int k = 0; k < i; ++k) before += C.depth(k);
            const std::string rest = name.substr(i_end + 1);
            if (rest.rfind("blocks.", 0) == 0) return before + std::stoi(rest.substr(7)) + 1;
            return before + C.depth(i);  // downsample
        }
        return num_layers + 1;
    }

    /// The official model's buffers, in its naming: every block's attn.relative_position_index (Nw, Nw) and,
    /// for shifted blocks, its attn_mask (nW, Nw, Nw).
    std::vector<ModelBuffer> buffers() const {
        std::vector<ModelBuffer> out;
        for_each_index([&]<int I>() {
            const auto& st = stage<I>();
            using Block = typename Stage<I>::Block;
            for (int j = 0; j < st.depth; ++j) {
                const std::string prefix = "encoder.layers." + std::to_string(I) + ".blocks." + std::to_string(j) + ".";
                const auto& blk = st.stack[j];
                if (blk.shift() > 0)
                    out.push_back({prefix + "attn_mask", {Block::nW, Block::Nw, Block::Nw},
                                   std::vector<double>(blk.attention_mask().begin(), blk.attention_mask().end()), false});
                out.push_back({prefix + "attn.relative_position_index", {Block::Nw, Block::Nw},
                               std::vector<double>(blk.relative_position_index().begin(), blk.relative_position_index().end()), true});
            }
        });
        return out;
    }

    const Embedding& embedding() const noexcept { return embed_; }
    template <int I>
    const Stage<I>& stage() const noexcept { return std::get<static_cast<std::size_t>(I)>(stages_); }
    const LayerNormParams<T, Dout>& norm() const noexcept { return norm_; }

private:
    template <int I>
    Stage<I>& stage() noexcept { return std::get<static_cast<std::size_t>(I)>(stages_); }
    Last& last() noexcept { return stage<num_stages - 1>(); }
    const Last& last() const noexcept { return stage<num_stages - 1>(); }

    template <std::size_t... I>
    static Stages make_stages(ParamArena<T>& arena, std::index_sequence<I...>) {
        return Stages{std::tuple_element_t<I, Stages>(arena)...};  // braces: registered in stage order
    }
    template <class Fn>
    static void for_each_index(Fn&& f) {
        [&]<std::size_t... I>(std::index_sequence<I...>) { (f.template operator()<static_cast<int>(I)>(), ...); }(
            std::make_index_sequence<static_cast<std::size_t>(C.num_stages)>{});
    }
    template <class Fn>
    static void for_each_index_reverse(Fn&& f) {
        [&]<std::size_t... I>(std::index_sequence<I...>) { (f.template operator()<C.num_stages - 1 - static_cast<int>(I)>(), ...); }(
            std::make_index_sequence<static_cast<std::size_t>(C.num_stages)>{});
    }
    /// The most values one sample's tokens take at any stage (stage 0 or a merged input).
    static constexpr std::size_t max_tokens_per_sample() {
        std::size_t n = 0;
        for (int i = 0; i < C.num_stages; ++i)
            n = std::max(n, static_cast<std::size_t>(C.resolution(i)) * C.resolution(i) * C.dim(i));
        return n;
    }
    void resize(int B) {
        if (B == batch_) return;
        batch_ = B;
        embed_cache_.resize(static_cast<std::size_t>(B));
        embed_scratch_.resize(static_cast<std::size_t>(B));
        for_each_index([&]<int I>() { stage<I>().resize(B); });
        tmp_.resize(static_cast<std::size_t>(B) * max_tokens_per_sample());
        norm_mean_.resize(static_cast<std::size_t>(B) * Lout);
        norm_rstd_.resize(static_cast<std::size_t>(B) * Lout);
    }

    Embedding embed_;
    Stages stages_;
    LayerNormParams<T, Dout> norm_;
    int batch_ = -1;
    typename Embedding::Cache embed_cache_;
    typename Embedding::Scratch embed_scratch_;
    AlignedVector<T> tmp_;                    // the blocks' window-order working rows
    AlignedVector<T> norm_mean_, norm_rstd_;  // (B, o*o) statistics of the final norm
};

/// SimMIM with a Swin encoder: the official head Conv2d(C_last, stride^2 * C_in, 1) + PixelShuffle(stride)
/// (sized by the input channels, as HF does; the official code always predicts 3), the masked L1 loss on the
/// patch grid and the official random masking.
template <class T, SwinConfig C>
using SwinSimMIM = SimMIM<SwinEncoder<T, C>, LinearHead<T, C>, MaskedL1Loss<T, C>, RandomMaskPatch>;  // C converts to its geometry

}  // namespace simmim
