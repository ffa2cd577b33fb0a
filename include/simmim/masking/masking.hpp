// simmim/masking/masking.hpp: the masking concept and the two policies of the core.
//
// A masking policy fills a (B, h, w) token-grid mask, 1 = masked, from a seed and a step. Sample b of
// step s draws from Rng(derive_seed(seed, s, b)), so masks are reproducible, independent per sample,
// and a resumed run draws the same masks as an uninterrupted one.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/core/geometry.hpp"
#include "simmim/core/random.hpp"
#include "simmim/masking/mask_spec.hpp"

namespace simmim {

template <class M>
concept MaskingPolicy = requires(const M& m, std::uint64_t seed, std::int64_t step, int batch, float* out) {
    { m.token_grid() } -> std::convertible_to<int>;      // h = w of the token grid
    { m.masked_per_sample() } -> std::convertible_to<int>;
    m.generate(seed, step, batch, out);                   // out: (batch, h, w), 1 = masked
};

/// The official MaskGenerator: an R x R grid of mask patches (R = input / mask_patch), exactly
/// ceil(R*R*ratio) of them masked (uniform without replacement), upsampled by mask_patch / model_patch
/// to the token grid.
class RandomMaskPatch {
public:
    RandomMaskPatch(int input_size, int mask_patch_size, int model_patch_size, double mask_ratio)
        : input_size_(input_size), mask_patch_(mask_patch_size), model_patch_(model_patch_size), ratio_(mask_ratio) {
        if (input_size <= 0 || mask_patch_size <= 0 || model_patch_size <= 0)
            throw std::invalid_argument("RandomMaskPatch: sizes must be positive");
        if (input_size % mask_patch_size != 0)
            throw std::invalid_argument("RandomMaskPatch: input size " + std::to_string(input_size) +
                                        " is not a multiple of mask patch " + std::to_string(mask_patch_size));
        if (mask_patch_size % model_patch_size != 0)
            throw std::invalid_argument("RandomMaskPatch: mask patch " + std::to_string(mask_patch_size) +
                                        " is not a multiple of model patch " + std::to_string(model_patch_size));
        if (!(mask_ratio > 0.0 && mask_ratio < 1.0))
            throw std::invalid_argument("RandomMaskPatch: mask ratio " + std::to_string(mask_ratio) + " is not in (0, 1)");
        rand_size_ = input_size / mask_patch_size;
        scale_ = mask_patch_size / model_patch_size;
        const int count = rand_size_ * rand_size_;
        mask_count_ = static_cast<int>(std::ceil(count * mask_ratio));
    }
    int token_grid() const { return rand_size_ * scale_; }
    int mask_grid() const { return rand_size_; }
    int masked_per_sample() const { return mask_count_ * scale_ * scale_; }
    double ratio() const { return ratio_; }
    int mask_patch_size() const { return mask_patch_; }

    /// One sample's mask from its own generator.
    template <class T>
    void generate_one(Rng& rng, T* out) const {
        const int count = rand_size_ * rand_size_;
        std::vector<int> perm(count);
        std::iota(perm.begin(), perm.end(), 0);
        for (int i = count - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(static_cast<std::uint64_t>(i) + 1)]);
        std::vector<unsigned char> coarse(count, 0);
        for (int i = 0; i < mask_count_; ++i) coarse[perm[i]] = 1;
        const int g = token_grid();
        for (int y = 0; y < g; ++y)
            for (int x = 0; x < g; ++x) out[y * g + x] = T(coarse[(y / scale_) * rand_size_ + x / scale_]);
    }
    template <class T>
    void generate(std::uint64_t seed, std::int64_t step, int batch, T* out) const {
        const int g = token_grid();
        for (int b = 0; b < batch; ++b) {
            Rng rng(derive_seed(seed, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(b)));
            generate_one(rng, out + static_cast<std::ptrdiff_t>(b) * g * g);
        }
    }

private:
    int input_size_, mask_patch_, model_patch_;
    double ratio_;
    int rand_size_ = 0, scale_ = 0, mask_count_ = 0;
};

/// The seed blog's policy: floor(N * ratio) individual tokens masked, uniform without replacement.
class RandomTokens {
public:
    RandomTokens(int token_grid, double mask_ratio) : grid_(token_grid), ratio_(mask_ratio) {
        if (token_grid <= 0) throw std::invalid_argument("RandomTokens: token grid must be positive");
        if (!(mask_ratio > 0.0 && mask_ratio < 1.0))
            throw std::invalid_argument("RandomTokens: mask ratio " + std::to_string(mask_ratio) + " is not in (0, 1)");
        count_ = static_cast<int>(std::floor(grid_ * grid_ * mask_ratio));
    }
    int token_grid() const { return grid_; }
    int masked_per_sample() const { return count_; }
    template <class T>
    void generate(std::uint64_t seed, std::int64_t step, int batch, T* out) const {
        const int n = grid_ * grid_;
        std::vector<int> perm(n);
        for (int b = 0; b < batch; ++b) {
            Rng rng(derive_seed(seed, static_cast<std::uint64_t>(step), static_cast<std::uint64_t>(b)));
            std::iota(perm.begin(), perm.end(), 0);
            for (int i = n - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(static_cast<std::uint64_t>(i) + 1)]);
            T* m = out + static_cast<std::ptrdiff_t>(b) * n;
            std::fill(m, m + n, T(0));
            for (int i = 0; i < count_; ++i) m[perm[i]] = T(1);
        }
    }

private:
    int grid_;
    double ratio_;
    int count_ = 0;
};

/// The official random mask-patch policy for an encoder of geometry G (its mask grid is the model patch
/// grid of the generator) with the mask patch and ratio of M, checked at compile time:
///   simmim::ViTSimMIM<float, cfg> model(simmim::random_mask_patch<cfg, {.patch_size = 8, .ratio = 0.6}>());
/// (a ViTConfig converts to its geometry). For sizes chosen at run time, construct RandomMaskPatch directly
/// (its constructor checks the same rules and throws std::invalid_argument).
template <EncoderGeometry G, MaskSpec M>
RandomMaskPatch random_mask_patch() {
    static_assert(ValidGeometry<G>::value);
    static_assert(M.patch_size > 0, "simmim: the mask patch size must be positive");
    static_assert(M.patch_size % G.mask_cell() == 0,
                  "simmim: the mask patch size must be a multiple of the encoder's mask-grid cell (the model patch size)");
    static_assert(G.image_size % M.patch_size == 0, "simmim: the mask patch size must divide the image size");
    static_assert(M.ratio > 0.0 && M.ratio < 1.0, "simmim: the mask ratio must lie in (0, 1)");
    return RandomMaskPatch(G.image_size, M.patch_size, G.mask_cell(), M.ratio);
}

static_assert(MaskingPolicy<RandomMaskPatch>);
static_assert(MaskingPolicy<RandomTokens>);

}  // namespace simmim
