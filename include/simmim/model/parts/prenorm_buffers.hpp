// simmim/model/parts/prenorm_buffers.hpp: the activations a pre-norm transformer block keeps for its
// backward, and its backward scratch, shared by the blocks of every encoder:
//   x -> ln1 = norm1(x) -> qkv -> attn (softmax statistics lse) -> ... -> mid -> ln2 = norm2(mid) -> mlp
#pragma once

#include <cstddef>

#include "simmim/core/config.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/model/parts/mlp.hpp"

namespace simmim {

/// The sizes every pre-norm block over a BlockSpec declares (its base class), checked at compile time.
template <class T, BlockSpec Bk>
struct PreNormBlockShape {
    static_assert(Bk.dim > 0 && Bk.tokens > 0 && Bk.heads > 0 && Bk.mlp_hidden > 0, "simmim: block sizes must be positive");
    static_assert(Bk.dim % Bk.heads == 0, "simmim: embed_dim must be a multiple of num_heads");
    static constexpr int D = Bk.dim, N = Bk.tokens, H = Bk.heads, Dh = Bk.head_dim(), F = Bk.mlp_hidden;
    static constexpr T kEps = T(1e-6);  // LayerNorm eps of both ViT forms (partial(nn.LayerNorm, eps=1e-6))
};

/// Block activations over B samples of N tokens of width D, H heads, MLP hidden F.
template <class T, int N, int D, int H, int F>
struct PreNormCache {
    BatchTensor<T, Shape<N, D>> ln1, attn, mid, ln2;  // norm1 output, attention output, after the first residual, norm2 output
    BatchTensor<T, Shape<N>> mean1, rstd1, mean2, rstd2;
    BatchTensor<T, Shape<N, 3 * D>> qkv;
    BatchTensor<T, Shape<H, N>> lse;  // row log-sum-exp of the attention scores
    typename Mlp<T, N, D, F>::Cache mlp;
    template <class Fn>
    void for_each(Fn&& f) {
        for (auto* t : {&ln1, &attn, &mid, &ln2}) f(*t);
        for (auto* t : {&mean1, &rstd1, &mean2, &rstd2}) f(*t);
        f(qkv);
        f(lse);
        mlp.for_each(f);
    }
    void resize(std::size_t B) {
        for_each([&](auto& t) { t.resize(B); });
    }
};

/// Gradient scratch of one block's backward (shared by the blocks of a stack).
template <class T, int N, int D, int F>
struct PreNormScratch {
    BatchTensor<T, Shape<N, D>> d_ln, d_attn, d_mid;
    BatchTensor<T, Shape<N, 3 * D>> d_qkv;
    typename Mlp<T, N, D, F>::Scratch mlp;
    template <class Fn>
    void for_each(Fn&& f) {
        for (auto* t : {&d_ln, &d_attn, &d_mid}) f(*t);
        f(d_qkv);
        mlp.for_each(f);
    }
    void resize(std::size_t B) {
        for_each([&](auto& t) { t.resize(B); });
    }
};

}  // namespace simmim
