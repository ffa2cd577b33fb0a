// simmim/model/parts/prenorm_buffers.hpp: the activations a pre-norm transformer block keeps for its
// backward, and its backward scratch, shared by the blocks of every encoder:
//   x -> ln1 = norm1(x) -> qkv -> attn (softmax statistics lse) -> ... -> mid -> ln2 = norm2(mid) -> mlp
#pragma once

#include <cstddef>

#include "simmim/core/tensor.hpp"
#include "simmim/model/parts/mlp.hpp"

namespace simmim {

/// Block activations over B samples of N tokens of width D, H heads, MLP hidden F.
template <class T, int N, int D, int H, int F>
struct PreNormCache {
    BatchTensor<T, Shape<N, D>> ln1, attn, mid, ln2;  // norm1 output, attention output, after the first residual, norm2 output
    BatchTensor<T, Shape<N>> mean1, rstd1, mean2, rstd2;
    BatchTensor<T, Shape<N, 3 * D>> qkv;
    BatchTensor<T, Shape<H, N>> lse;  // row log-sum-exp of the attention scores
    typename Mlp<T, N, D, F>::Cache mlp;
    void resize(std::size_t B) {
        for (auto* t : {&ln1, &attn, &mid, &ln2}) t->resize(B);
        for (auto* t : {&mean1, &rstd1, &mean2, &rstd2}) t->resize(B);
        qkv.resize(B);
        lse.resize(B);
        mlp.resize(B);
    }
};

/// Gradient scratch of one block's backward (shared by the blocks of a stack).
template <class T, int N, int D, int F>
struct PreNormScratch {
    BatchTensor<T, Shape<N, D>> d_ln, d_attn, d_mid;
    BatchTensor<T, Shape<N, 3 * D>> d_qkv;
    typename Mlp<T, N, D, F>::Scratch mlp;
    void resize(std::size_t B) {
        for (auto* t : {&d_ln, &d_attn, &d_mid}) t->resize(B);
        d_qkv.resize(B);
        mlp.resize(B);
    }
};

}  // namespace simmim
