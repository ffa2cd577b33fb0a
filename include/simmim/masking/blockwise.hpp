// simmim/masking/blockwise.hpp: BEiT's block-wise masking (Bao et al. 2021, MaskingGenerator in
// microsoft/unilm beit/masking_generator.py), one of the masking strategies SimMIM compares against.
//
// The algorithm, step by step as BEiT's code does it, on a g x g token grid with target count
// K = round(ratio * g * g):
//   while masked < K:
//     remaining = K - masked; try up to 10 times to place one block:
//       area   = uniform(min_tokens, remaining)                (uniform(a, b) = a + (b - a) * u, u in [0, 1))
//       aspect = exp(uniform(log(min_aspect), log(1 / min_aspect)))
//       h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect))    (round half to even, as Python)
//       if w < g and h < g:
//         top = integer uniform in [0, g - h], left = integer uniform in [0, g - w]
//         new = tokens of the h x w block not yet masked
//         if 0 < new <= remaining: mask the block
//       stop trying once a block added tokens
//     if no attempt added a token: stop (the mask may then hold fewer than K tokens)
// BEiT's max_num_patches is not exposed (it defaults to K, as here). The random numbers come from
// simmim::Rng (u = Rng::uniform(), the integer draws from Rng::below) instead of Python's `random`.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/masking/masking.hpp"

namespace simmim {

namespace detail::blockwise {
/// Python's round() on a non-negative double: nearest integer, ties to even. Kept as a double so a huge
/// value (from an extreme min_aspect) is compared with the grid before any conversion to int.
inline double round_half_even(double x) {
    const double lower = std::floor(x);
    const double frac = x - lower;
    if (frac > 0.5) return lower + 1;
    if (frac < 0.5) return lower;
    return std::fmod(lower, 2.0) == 0.0 ? lower : lower + 1;
}
}  // namespace detail::blockwise

/// BEiT block-wise masking: rectangles of at least min_tokens tokens (except when fewer remain) with a
/// log-uniform aspect ratio in [min_aspect, 1 / min_aspect], added until round(ratio * N) tokens are
/// masked or ten attempts in a row add nothing. Never more than the target; usually exactly the target.
class BlockWise {
public:
    /// input_size and model_patch in pixels (input_size % model_patch == 0, grid g = input_size / model_patch),
    /// mask_ratio in (0, 1) with target K = round(mask_ratio * g * g) (half away from zero) in [1, g*g - 1],
    /// min_tokens in [1, K], min_aspect in (0, 1]. Anything else throws std::invalid_argument.
    BlockWise(int input_size, int model_patch, double mask_ratio, int min_tokens = 16, double min_aspect = 0.3)
        : ratio_(mask_ratio), min_tokens_(min_tokens) {
        if (input_size <= 0)
            throw std::invalid_argument("BlockWise: input_size " + std::to_string(input_size) + " must be positive");
        if (model_patch <= 0)
            throw std::invalid_argument("BlockWise: model_patch " + std::to_string(model_patch) + " must be positive");
        if (input_size % model_patch != 0)
            throw std::invalid_argument("BlockWise: input_size " + std::to_string(input_size) +
                                        " is not a multiple of model_patch " + std::to_string(model_patch));
        if (!(mask_ratio > 0.0 && mask_ratio < 1.0))
            throw std::invalid_argument("BlockWise: mask_ratio " + std::to_string(mask_ratio) + " is not in (0, 1)");
        if (!(min_aspect > 0.0 && min_aspect <= 1.0))
            throw std::invalid_argument("BlockWise: min_aspect " + std::to_string(min_aspect) + " is not in (0, 1]");
        grid_ = input_size / model_patch;
        const int n = grid_ * grid_;
        target_ = static_cast<int>(std::lround(mask_ratio * n));
        if (target_ < 1 || target_ > n - 1)
            throw std::invalid_argument("BlockWise: mask_ratio " + std::to_string(mask_ratio) + " gives a target of " +
                                        std::to_string(target_) + " masked tokens of " + std::to_string(n) +
                                        ", expected [1, " + std::to_string(n - 1) + "]");
        if (min_tokens < 1 || min_tokens > target_)
            throw std::invalid_argument("BlockWise: min_tokens " + std::to_string(min_tokens) + " is not in [1, " +
                                        std::to_string(target_) + "] (the target count round(mask_ratio * N))");
        log_aspect_lo_ = std::log(min_aspect);
        log_aspect_hi_ = std::log(1.0 / min_aspect);
    }
    int token_grid() const { return grid_; }
    /// The target count K = round(ratio * N): an upper bound, reached unless placement stalls.
    int masked_per_sample() const { return target_; }
    double ratio() const { return ratio_; }

    /// One sample's mask, out: (g, g), 1 = masked, from its own generator; returns the masked count.
    template <class T>
    int generate_one(Rng& rng, T* out) const {
        const int g = grid_;
        std::vector<unsigned char> mask(static_cast<std::size_t>(g) * g, 0);  // (g, g)
        int count = 0;
        while (count < target_) {
            const int delta = add_block(rng, mask, target_ - count);
            if (delta == 0) break;
            count += delta;
        }
        for (int i = 0; i < g * g; ++i) out[i] = T(mask[i]);
        return count;
    }
    /// out: (batch, g, g); sample b draws from Rng(derive_seed(seed, step, b)).
    template <class T>
    void generate(std::uint64_t seed, std::int64_t step, int batch, T* out) const {
        const int g = grid_;
        for (int b = 0; b < batch; ++b) {
            Rng rng(derive_seed(seed, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(b)));
            generate_one(rng, out + static_cast<std::ptrdiff_t>(b) * g * g);
        }
    }

private:
    // BEiT's _mask: up to 10 attempts to add one block of at most `remaining` new tokens.
    int add_block(Rng& rng, std::vector<unsigned char>& mask, int remaining) const {
        const int g = grid_;
        int delta = 0;
        for (int attempt = 0; attempt < 10; ++attempt) {
            const double area = rng.uniform(static_cast<double>(min_tokens_), static_cast<double>(remaining));
            const double aspect = std::exp(rng.uniform(log_aspect_lo_, log_aspect_hi_));
            const double h_rounded = detail::blockwise::round_half_even(std::sqrt(area * aspect));
            const double w_rounded = detail::blockwise::round_half_even(std::sqrt(area / aspect));
            if (w_rounded < g && h_rounded < g) {
                const int h = static_cast<int>(h_rounded), w = static_cast<int>(w_rounded);
                const int top = static_cast<int>(rng.below(static_cast<std::uint64_t>(g - h) + 1));
                const int left = static_cast<int>(rng.below(static_cast<std::uint64_t>(g - w) + 1));
                int already = 0;
                for (int y = top; y < top + h; ++y)
                    for (int x = left; x < left + w; ++x) already += mask[y * g + x];
                const int fresh = h * w - already;
                if (fresh > 0 && fresh <= remaining) {
                    for (int y = top; y < top + h; ++y)
                        for (int x = left; x < left + w; ++x)
                            if (mask[y * g + x] == 0) {
                                mask[y * g + x] = 1;
                                ++delta;
                            }
                }
                if (delta > 0) break;
            }
        }
        return delta;
    }

    double ratio_;
    int min_tokens_;
    int grid_ = 0, target_ = 0;
    double log_aspect_lo_ = 0, log_aspect_hi_ = 0;
};

static_assert(MaskingPolicy<BlockWise>);

}  // namespace simmim
