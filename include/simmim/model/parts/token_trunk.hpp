// simmim/model/parts/token_trunk.hpp: the plumbing of an isotropic (ViT-like) encoder, shared by the ViT
// forms: patch embedding -> block stack -> final LayerNorm -> features without the leading (cls) tokens,
// with its caches, its backward and its inference path. The encoder supplies how a block is called.
//
//   forward_tokens: x0 = embed(image, mask); x_{i+1} = call(i, block_i, x_i)     returns x_k (B, N, D)
//   finish_forward: features (B, L, D) = norm(x_depth)[:, N - L:]
//   backward:       dfeatures -> norm' -> blocks' (call) -> embed'               accumulates gradients
//   encode:         the same features, a few samples at a time, nothing kept (const)
//
// Registration order of the parameters is the encoder's: the trunk registers the embedding when
// constructed, the blocks with add_blocks() and the final norm with add_norm(), so an encoder can register
// its own tensors in between (the official ViT's shared relative position bias table).
#pragma once

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

#include "simmim/core/tensor.hpp"
#include "simmim/model/parts/block_stack.hpp"
#include "simmim/model/parts/layer_norm.hpp"
#include "simmim/model/parts/patch_embedding.hpp"
#include "simmim/ops/copy.hpp"
#include "simmim/ops/tokens.hpp"

namespace simmim {

template <class T, class Embedding, class Block>
class TokenTrunk {
public:
    static constexpr int N = Block::N, D = Block::D, L = Embedding::L, skip = N - L;  // skip: leading (cls) tokens
    static_assert(Embedding::N == N && Embedding::D == D, "simmim: the embedding's tokens must be the blocks' tokens");
    using Stack = BlockStack<T, Block>;

    TokenTrunk(ParamArena<T>& arena, PatchEmbedInit init) : arena_(&arena), embed_(arena, init) {}
    /// Registers `depth` blocks, block i = make(i) (each block's parameters a gradient group of the arena).
    template <class Make>
    void add_blocks(int depth, Make&& make) {
        stack_ = Stack(*arena_, depth, std::forward<Make>(make));
    }
    /// Registers the final norm "encoder.norm.".
    void add_norm(ParamArena<T>& arena) { norm_ = LayerNormParams<T, D>(arena, "encoder.norm."); }

    /// Bytes forward and backward allocate for a batch of B with `depth` blocks.
    static std::size_t activation_bytes(int depth, int B) {
        return Stack::activation_bytes(depth, B) + Embedding::activation_bytes(B) +
               static_cast<std::size_t>(B) * bytes_per_sample<NormCache<T, N, D>>();
    }

    /// Embedding and blocks 0 .. blocks - 1: call(i, block, out, in, cache) runs block i. Returns x_blocks.
    template <class Call>
    const T* forward_tokens(const T* image, const T* mask, int B, int blocks, Call&& call) {
        if (blocks < 0 || blocks > stack_.depth())
            throw std::invalid_argument("encoder: block index must lie in [0, " + std::to_string(stack_.depth()) + "], found " +
                                        std::to_string(blocks));
        if (B <= 0) throw std::invalid_argument("encoder: batch must be positive, found " + std::to_string(B));
        resize(B);
        embed_.forward(stack_.input(), image, mask, B, embed_cache_);
        stack_.forward(blocks, std::forward<Call>(call));
        return stack_.output(blocks);
    }
    /// features (B, L, D) = the final norm of the last block's output, leading tokens dropped.
    void finish_forward(T* features, int B) {
        norm_.forward(final_.out.data(), final_.mean.data(), final_.rstd.data(), stack_.output(stack_.depth()),
                      static_cast<std::ptrdiff_t>(B) * N, Block::kEps);
        ops::drop_leading_tokens(features, final_.out.data(), B, N, skip, D);
    }
    /// Back from dfeatures (B, L, D) through the norm, the blocks (call(i, block, din, dout, in, cache,
    /// scratch)) and the embedding; accumulates d image when dimage is not null.
    template <class Call>
    void backward(const T* dfeatures, T* dimage, Call&& call) {
        const int B = stack_.batch();
        const std::ptrdiff_t BN = static_cast<std::ptrdiff_t>(B) * N;
        ops::drop_leading_tokens_backward(stack_.spare(), dfeatures, B, N, skip, D);  // zero for the dropped rows
        ops::fill(stack_.grad_out(), BN * D, T(0));
        norm_.backward(stack_.grad_out(), stack_.spare(), stack_.output(stack_.depth()), final_.mean.data(), final_.rstd.data(), BN);
        const T* dx0 = stack_.backward(std::forward<Call>(call));
        embed_.backward(dx0, dimage, B, embed_cache_, embed_scratch_);
    }

    /// Inference in chunks of samples (only one chunk's activations of one block alive at a time):
    /// call(i, out, in, samples, cache) runs block i.
    template <class Call>
    void encode(T* features, const T* image, const T* mask, int B, Call&& call) const {
        constexpr std::size_t image_numel = static_cast<std::size_t>(Embedding::Cin) * Embedding::S * Embedding::S;
        if (B <= 0) throw std::invalid_argument("encode: batch must be positive, found " + std::to_string(B));
        typename Embedding::Cache embed_cache;
        BatchTensor<T, Shape<N, D>> x[2];
        typename Block::Cache cache;
        NormCache<T, N, D> final_norm;
        const std::size_t per_sample = bytes_per_sample<typename Embedding::Cache>() + 2 * BatchTensor<T, Shape<N, D>>::sample_bytes +
                                       bytes_per_sample<typename Block::Cache>() + bytes_per_sample<NormCache<T, N, D>>();
        for_each_chunk(B, inference_chunk(per_sample), [&](int b0, int nb) {
            const auto n = static_cast<std::size_t>(nb);
            if (x[0].batch() != n) {
                embed_cache.resize(n);
                for (auto& t : x) t.resize(n);
                cache.resize(n);
                final_norm.resize(n);
            }
            embed_.forward(x[0].data(), image + b0 * image_numel, mask ? mask + static_cast<std::ptrdiff_t>(b0) * L : nullptr, nb,
                           embed_cache);
            T* in = x[0].data();
            T* out = x[1].data();
            for (int i = 0; i < stack_.depth(); ++i) {
                call(i, stack_[i], out, static_cast<const T*>(in), nb, cache);
                std::swap(in, out);
            }
            norm_.forward(final_norm.out.data(), final_norm.mean.data(), final_norm.rstd.data(), in,
                          static_cast<std::ptrdiff_t>(nb) * N, Block::kEps);
            ops::drop_leading_tokens(features + static_cast<std::ptrdiff_t>(b0) * L * D, final_norm.out.data(), nb, N, skip, D);
        });
    }

    const Embedding& embedding() const noexcept { return embed_; }
    Stack& blocks() noexcept { return stack_; }
    const Stack& blocks() const noexcept { return stack_; }
    const LayerNormParams<T, D>& norm() const noexcept { return norm_; }
    Embedding& embedding() noexcept { return embed_; }

private:
    void resize(int B) {
        if (B == stack_.batch()) return;
        stack_.resize(B);
        embed_cache_.resize(static_cast<std::size_t>(B));
        embed_scratch_.resize(static_cast<std::size_t>(B));
        final_.resize(static_cast<std::size_t>(B));
    }

    ParamArena<T>* arena_;
    Embedding embed_;
    Stack stack_;
    LayerNormParams<T, D> norm_;
    typename Embedding::Cache embed_cache_;
    typename Embedding::Scratch embed_scratch_;
    NormCache<T, N, D> final_;  // final norm output (B, N, D) and its statistics
};

}  // namespace simmim
