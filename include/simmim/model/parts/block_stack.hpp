// simmim/model/parts/block_stack.hpp: a stack of transformer blocks that owns the residual stream, the
// blocks' caches and the gradient buffers of its backward.
//
// Block is any block type with Block::N, Block::D (it maps (B, N, D) to (B, N, D)), Block::Cache and
// Block::Scratch (each with resize(B)). The encoder says how a block is called (a shared bias, drop path
// factors, ...) through the `call` argument of forward() and backward():
//   forward:  call(i, block, out, in, cache)                 x_{i+1} = block_i(x_i)
//   backward: call(i, block, din, dout, in, cache, scratch)  din overwritten
#pragma once

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "simmim/core/tensor.hpp"

namespace simmim {

template <class T, class Block>
class BlockStack {
public:
    static constexpr int N = Block::N, D = Block::D;
    using Cache = typename Block::Cache;
    using Scratch = typename Block::Scratch;
    using Tokens = BatchTensor<T, Shape<N, D>>;

    BlockStack() = default;
    /// `depth` blocks, block i = make(i).
    template <class Make>
    BlockStack(int depth, Make&& make) {
        blocks_.reserve(static_cast<std::size_t>(depth));
        for (int i = 0; i < depth; ++i) blocks_.push_back(make(i));
    }
    /// `depth` blocks, block i = make(i), each registering its parameters into `arena`: each block's
    /// parameters become a gradient group of the arena (ParamArena::add_grad_group), and backward() notifies
    /// the arena as soon as a block's gradients are final (a distributed run starts reducing them then).
    template <class Make>
    BlockStack(ParamArena<T>& arena, int depth, Make&& make) : arena_(&arena) {
        blocks_.reserve(static_cast<std::size_t>(depth));
        for (int i = 0; i < depth; ++i) {
            const std::size_t first = arena.params().size();
            blocks_.push_back(make(i));
            groups_.push_back(arena.add_grad_group(first, arena.params().size()));
        }
    }

    int depth() const noexcept { return static_cast<int>(blocks_.size()); }

    /// Bytes resize(B) allocates for a stack of `depth` blocks: the residual stream (depth + 1), one cache
    /// per block, the shared scratch and the two gradient buffers.
    static std::size_t activation_bytes(int depth, int B) {
        const auto d = static_cast<std::size_t>(depth);
        return static_cast<std::size_t>(B) *
               ((d + 3) * Tokens::sample_bytes + d * bytes_per_sample<Cache>() + bytes_per_sample<Scratch>());
    }
    Block& operator[](int i) { return blocks_[static_cast<std::size_t>(i)]; }
    const Block& operator[](int i) const { return blocks_[static_cast<std::size_t>(i)]; }
    Cache& cache(int i) { return caches_.at(static_cast<std::size_t>(i)); }
    const Cache& cache(int i) const { return caches_.at(static_cast<std::size_t>(i)); }
    bool empty_caches() const noexcept { return caches_.empty(); }

    /// Sizes every buffer for a batch of B (nothing happens when B is the current batch).
    void resize(int B) {
        if (B == batch_) return;
        batch_ = B;
        xs_.resize(static_cast<std::size_t>(depth()) + 1);
        for (auto& x : xs_) x.resize(static_cast<std::size_t>(B));
        caches_.resize(static_cast<std::size_t>(depth()));
        for (auto& c : caches_) c.resize(static_cast<std::size_t>(B));
        scratch_.resize(static_cast<std::size_t>(B));
        for (auto& g : grad_) g.resize(static_cast<std::size_t>(B));
    }
    int batch() const noexcept { return batch_; }

    /// x_0 (B, N, D): the stack's input, written by the caller before forward().
    T* input() { return xs_.at(0).data(); }
    /// x_k (B, N, D), the output of block k - 1 (x_0 the input), valid until the next forward.
    const T* output(int k) const { return xs_.at(static_cast<std::size_t>(k)).data(); }

    /// Runs blocks 0 .. count - 1 on x_0.
    template <class Call>
    void forward(int count, Call&& call) {
        if (count < 0 || count > depth())
            throw std::invalid_argument("BlockStack: block count must lie in [0, " + std::to_string(depth()) + "], found " +
                                        std::to_string(count));
        for (int i = 0; i < count; ++i) call(i, blocks_[static_cast<std::size_t>(i)], xs_[static_cast<std::size_t>(i) + 1].data(),
                                             xs_[static_cast<std::size_t>(i)].data(), caches_[static_cast<std::size_t>(i)]);
    }

    /// (B, N, D) buffers for the caller's backward: write d x_depth into grad_out() and call backward();
    /// spare() is free to use until then (e.g. for the gradient before a final norm).
    T* grad_out() { return grad_[1].data(); }
    T* spare() { return grad_[0].data(); }

    /// Back through every block from d x_depth (in grad_out()); returns d x_0 (B, N, D), valid until the
    /// next backward. Needs a forward() through every block.
    template <class Call>
    const T* backward(Call&& call) {
        T* dx = grad_[1].data();
        T* dtmp = grad_[0].data();
        for (int i = depth() - 1; i >= 0; --i) {
            const auto k = static_cast<std::size_t>(i);
            call(i, blocks_[k], dtmp, static_cast<const T*>(dx), xs_[k].data(), caches_[k], scratch_);
            if (arena_) arena_->notify_grad_ready(groups_[k]);  // block i's parameter gradients are final
            std::swap(dx, dtmp);
        }
        return dx;
    }

private:
    std::vector<Block> blocks_;
    ParamArena<T>* arena_ = nullptr;   // set when the blocks' parameters are gradient groups of this arena
    std::vector<std::size_t> groups_;  // the group of each block
    int batch_ = -1;
    std::vector<Tokens> xs_;      // residual stream, depth + 1 of (B, N, D)
    std::vector<Cache> caches_;   // one per block
    Scratch scratch_;             // shared: one block's backward at a time
    Tokens grad_[2];              // (B, N, D) ping-pong gradients of the backward
};

/// Runs an encoder's inference over a batch of B in chunks of at most `chunk` samples, so that the
/// activations held at once do not grow with B: run(first_sample, samples) for each chunk in order.
template <class Run>
void for_each_chunk(int B, int chunk, Run&& run) {
    if (chunk < 1) chunk = 1;
    for (int b0 = 0; b0 < B; b0 += chunk) run(b0, std::min(chunk, B - b0));
}

/// Samples per inference chunk: as many as fit `budget_bytes` of activations at `bytes_per_sample`, at least 1.
inline int inference_chunk(std::size_t bytes_per_sample, std::size_t budget_bytes = std::size_t(64) << 20) {
    const std::size_t n = bytes_per_sample ? budget_bytes / bytes_per_sample : 1;
    return n < 1 ? 1 : (n > 1 << 20 ? 1 << 20 : static_cast<int>(n));
}

}  // namespace simmim
