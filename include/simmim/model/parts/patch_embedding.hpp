// simmim/model/parts/patch_embedding.hpp: the patch embedding every SimMIM encoder starts with.
//
// forward:  image (B, C, S, S), mask (B, L) -> tokens x0 (B, N, D), N = L (+ 1 with a cls token)
//   patches = patchify(image)                        (B, L, C*p*p)
//   t = patches W^T + b                              (B, L, D)    Conv2d(C, D, p, stride p)
//   t = LayerNorm(t)                                 optional (Swin's patch_embed.norm, eps 1e-5)
//   t = t * (1 - w) + mask_token * w                 w = mask (a null mask: nothing masked)
//   x0 = [cls_token ; t] (+ pos_embed)               cls token and absolute position embedding optional
// backward: dx0 (B, N, D) -> accumulates the gradients of the projection, the tokens and the position
// embedding; accumulates d image when asked.
//
// Parameters under "encoder.": cls_token [1,1,D], mask_token [1,1,D], pos_embed [1,N,D],
// patch_embed.proj.weight [D,C,p,p] and .bias [D], patch_embed.norm.weight / .bias [D] with the norm. Registration order is the order of the official state
// dicts (it fixes each parameter's initialisation stream and the checkpoint layout): cls_token, then the
// mask token when `mask_token_first`, pos_embed, the projection; otherwise the encoder registers the mask
// token last with add_mask_token() (the common ViT registers it after its final norm).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>

#include "simmim/core/tensor.hpp"
#include "simmim/model/parts/layer_norm.hpp"
#include "simmim/ops/copy.hpp"
#include "simmim/ops/fused.hpp"
#include "simmim/ops/linear.hpp"
#include "simmim/ops/patch.hpp"

namespace simmim {

/// The shape of a patch embedding (a structural type).
struct PatchEmbedSpec {
    int image_size = 0;  // S
    int in_chans = 0;    // C
    int patch_size = 0;  // p
    int dim = 0;         // D
    bool cls_token = false;
    bool pos_embed = false;  // absolute position embedding over the N tokens (needs the cls token here)
    bool norm = false;       // LayerNorm (eps 1e-5) after the projection, before the mask token (Swin)
    constexpr int grid() const { return image_size / patch_size; }               // g
    constexpr int patches() const { return grid() * grid(); }                     // L
    constexpr int tokens() const { return patches() + (cls_token ? 1 : 0); }     // N
    constexpr int patch_dim() const { return in_chans * patch_size * patch_size; }  // P
};

/// How the embedding's parameters are initialised and decayed.
struct PatchEmbedInit {
    Init weights = Init::TruncNormal002;  // projection weight, cls token, mask token, position embedding
    bool mask_token_decay = false;        // the official ViT decays its mask token; the common form does not
    bool mask_token_first = false;        // register the mask token right after the cls token
    bool conv_default = false;            // projection as PyTorch's default Conv2d init (Swin), not `weights`
};

template <class T, PatchEmbedSpec E>
class PatchEmbedding {
    static_assert(E.image_size > 0 && E.patch_size > 0 && E.in_chans > 0 && E.dim > 0, "simmim: patch embedding sizes must be positive");
    static_assert(E.image_size % E.patch_size == 0, "simmim: image_size must be a multiple of patch_size");
    static_assert(!E.pos_embed || E.cls_token, "simmim: a position embedding without a cls token is not offered");

public:
    static constexpr int S = E.image_size, Cin = E.in_chans, p = E.patch_size, D = E.dim;
    static constexpr int L = E.patches(), N = E.tokens(), P = E.patch_dim();
    static constexpr T kNormEps = T(1e-5);  // nn.LayerNorm's default, as Swin's patch_embed.norm

    /// What forward() keeps for backward().
    struct Cache {
        BatchTensor<T, Shape<L, P>> patches;  // (B, L, C*p*p)
        BatchTensor<T, Shape<L, D>> embed;    // (B, L, D) projection before the blend
        BatchTensor<T, Shape<L>> mask;        // (B, L)
        NormCache<T, L, D> norm;              // with the norm: its output (blended) and statistics
        template <class Fn>
        void for_each(Fn&& f) {
            f(patches);
            f(embed);
            f(mask);
            if constexpr (E.norm) norm.for_each(f);
        }
        void resize(std::size_t B) {
            for_each([&](auto& t) { t.resize(B); });
        }
    };
    /// Gradient scratch of backward().
    struct Scratch {
        BatchTensor<T, Shape<L, P>> d_patches;
        BatchTensor<T, Shape<L, D>> d_embed;
        BatchTensor<T, Shape<L, D>> d_normed;  // with the norm: the gradient at its output
        template <class Fn>
        void for_each(Fn&& f) {
            f(d_patches);
            f(d_embed);
            if constexpr (E.norm) f(d_normed);
        }
        void resize(std::size_t B) {
            for_each([&](auto& t) { t.resize(B); });
        }
    };

    PatchEmbedding(ParamArena<T>& arena, PatchEmbedInit init) : init_(init) {
        if constexpr (E.cls_token) cls_token = arena.template add<Shape<1, 1, D>>("encoder.cls_token", init.weights, false);
        if (init.mask_token_first) add_mask_token(arena);
        if constexpr (E.pos_embed) pos_embed = arena.template add<Shape<1, N, D>>("encoder.pos_embed", init.weights, false);
        if (init.conv_default) {  // kaiming_uniform_(a = sqrt(5)) and the bias: both uniform with bound 1 / sqrt(fan_in)
            const double bound = 1.0 / std::sqrt(double(P));
            weight = arena.template add<Shape<D, Cin, p, p>>("encoder.patch_embed.proj.weight", Init::Uniform, true, bound);
            bias = arena.template add<Shape<D>>("encoder.patch_embed.proj.bias", Init::Uniform, false, bound);
        } else {
            weight = arena.template add<Shape<D, Cin, p, p>>("encoder.patch_embed.proj.weight", init.weights, true);
            bias = arena.template add<Shape<D>>("encoder.patch_embed.proj.bias", Init::Zeros, false);
        }
        if constexpr (E.norm) norm = LayerNormParams<T, D>(arena, "encoder.patch_embed.norm.");
    }
    /// Registers the mask token (when mask_token_first was false, after the encoder's other parameters).
    void add_mask_token(ParamArena<T>& arena) {
        if (has_mask_token_) throw std::logic_error("PatchEmbedding: the mask token is registered twice");
        mask_token = arena.template add<Shape<1, 1, D>>("encoder.mask_token", init_.weights, init_.mask_token_decay);
        has_mask_token_ = true;
    }

    /// Activation bytes of forward (Cache) and backward (Scratch) for a batch of B.
    static std::size_t activation_bytes(int B) {
        return static_cast<std::size_t>(B) * (bytes_per_sample<Cache>() + bytes_per_sample<Scratch>());
    }

    /// x0 (B, N, D) from image (B, C, S, S) and mask (B, L) (1 = masked; null: nothing masked); fills c.
    void forward(T* x0, const T* image, const T* mask, int B, Cache& c) const {
        const std::ptrdiff_t BL = static_cast<std::ptrdiff_t>(B) * L;
        ops::patchify(c.patches.data(), image, B, Cin, S, p);
        ops::linear_forward(c.embed.data(), c.patches.data(), weight.data(), bias.data(), BL, P, D);
        if (mask) std::copy_n(mask, BL, c.mask.data());
        else std::fill_n(c.mask.data(), BL, T(0));
        const T* tokens = c.embed.data();
        if constexpr (E.norm) {
            norm.forward(c.norm.out.data(), c.norm.mean.data(), c.norm.rstd.data(), c.embed.data(), BL, kNormEps);
            tokens = c.norm.out.data();
        }
        if constexpr (E.cls_token) {
            // the zero "position embedding" of an encoder without one adds exactly nothing
            const T* pos = E.pos_embed ? pos_embed.data() : zeros().data();
            ops::mask_blend_pos_forward(x0, tokens, c.mask.data(), mask_token.data(), cls_token.data(), pos, B, L, D);
        } else {
            ops::mask_blend_forward(x0, tokens, c.mask.data(), mask_token.data(), B, L, D);
        }
    }

    /// Accumulates the parameter gradients from dx0 (B, N, D); if dimage is not null, accumulates
    /// d image (B, C, S, S) into it.
    void backward(const T* dx0, T* dimage, int B, const Cache& c, Scratch& s) const {
        const std::ptrdiff_t BL = static_cast<std::ptrdiff_t>(B) * L * P;  // elements of the patch rows
        constexpr int first = E.cls_token ? 1 : 0;  // row of the first patch token
        T* dcls = E.cls_token ? cls_token.grad() : nullptr;
        T* dpos = E.pos_embed ? pos_embed.grad() : nullptr;
        T* dmt = mask_token.grad();
        for (int b = 0; b < B; ++b) {
            const T* row = dx0 + static_cast<std::ptrdiff_t>(b) * N * D;
            if constexpr (E.pos_embed)
                for (std::ptrdiff_t j = 0; j < static_cast<std::ptrdiff_t>(N) * D; ++j) dpos[j] += row[j];
            if constexpr (E.cls_token)
                for (int d = 0; d < D; ++d) dcls[d] += row[d];
            for (int l = 0; l < L; ++l) {
                const T w = c.mask[static_cast<std::ptrdiff_t>(b) * L + l];
                const T* r = row + static_cast<std::ptrdiff_t>(first + l) * D;
                T* de = (E.norm ? s.d_normed.data() : s.d_embed.data()) + (static_cast<std::ptrdiff_t>(b) * L + l) * D;
                for (int d = 0; d < D; ++d) {
                    dmt[d] += r[d] * w;
                    de[d] = r[d] * (T(1) - w);
                }
            }
        }
        if constexpr (E.norm) {
            const std::ptrdiff_t BLr = static_cast<std::ptrdiff_t>(B) * L;
            ops::fill(s.d_embed.data(), BLr * D, T(0));
            norm.backward(s.d_embed.data(), s.d_normed.data(), c.embed.data(), c.norm.mean.data(), c.norm.rstd.data(), BLr);
        }
        T* dpatches = nullptr;
        if (dimage) {
            std::fill_n(s.d_patches.data(), BL, T(0));
            dpatches = s.d_patches.data();
        }
        ops::linear_backward(dpatches, weight.grad(), bias.grad(), s.d_embed.data(), c.patches.data(), weight.data(),
                             static_cast<std::ptrdiff_t>(B) * L, P, D);
        if (dimage) ops::unpatchify(dimage, s.d_patches.data(), B, Cin, S, p, /*accumulate=*/true);
    }

    Param<T, Shape<1, 1, D>> cls_token, mask_token;
    Param<T, Shape<1, N, D>> pos_embed;
    Param<T, Shape<D, Cin, p, p>> weight;
    Param<T, Shape<D>> bias;
    LayerNormParams<T, D> norm;  // registered with E.norm only

private:
    static const AlignedVector<T>& zeros() {
        static const AlignedVector<T> z(static_cast<std::size_t>(N) * D, T(0));  // (N, D)
        return z;
    }
    PatchEmbedInit init_;
    bool has_mask_token_ = false;
};

}  // namespace simmim
