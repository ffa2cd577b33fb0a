// simmim/masking/central_square.hpp: one deterministic square of masked tokens in the centre.
//
// The "square" masking of the SimMIM ablations: the mask ratio is turned into the side of one square,
// side = round(sqrt(ratio) * g) tokens on a g x g token grid, placed in the centre. When g - side is
// odd the square cannot sit exactly in the centre: it starts at offset = floor((g - side) / 2), so the
// visible margin above and to the left is one token narrower than below and to the right.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "simmim/masking/masking.hpp"

namespace simmim {

/// Central square masking: every sample of every step gets the same mask (no random draws), a
/// side x side square of masked tokens (1 = masked) at rows and columns [offset, offset + side).
class CentralSquare {
public:
    /// input_size and model_patch in pixels (input_size % model_patch == 0, g = input_size / model_patch);
    /// mask_ratio in (0, 1). side = round(sqrt(mask_ratio) * g), rounded half away from zero, must be in
    /// [1, g - 1] (at least one masked and at least one visible token); otherwise std::invalid_argument.
    CentralSquare(int input_size, int model_patch, double mask_ratio) : ratio_(mask_ratio) {
        if (input_size <= 0)
            throw std::invalid_argument("CentralSquare: input_size " + std::to_string(input_size) + " must be positive");
        if (model_patch <= 0)
            throw std::invalid_argument("CentralSquare: model_patch " + std::to_string(model_patch) + " must be positive");
        if (input_size % model_patch != 0)
            throw std::invalid_argument("CentralSquare: input_size " + std::to_string(input_size) +
                                        " is not a multiple of model_patch " + std::to_string(model_patch));
        if (!(mask_ratio > 0.0 && mask_ratio < 1.0))
            throw std::invalid_argument("CentralSquare: mask_ratio " + std::to_string(mask_ratio) + " is not in (0, 1)");
        grid_ = input_size / model_patch;
        side_ = static_cast<int>(std::lround(std::sqrt(mask_ratio) * grid_));
        if (side_ < 1 || side_ > grid_ - 1)
            throw std::invalid_argument("CentralSquare: mask_ratio " + std::to_string(mask_ratio) + " gives a square of side " +
                                        std::to_string(side_) + " on a " + std::to_string(grid_) + "x" + std::to_string(grid_) +
                                        " token grid, expected a side in [1, " + std::to_string(grid_ - 1) + "]");
        offset_ = (grid_ - side_) / 2;
    }
    int token_grid() const { return grid_; }
    /// Exactly side * side masked tokens in every sample.
    int masked_per_sample() const { return side_ * side_; }
    int side() const { return side_; }
    /// First masked row and column.
    int offset() const { return offset_; }
    double ratio() const { return ratio_; }

    /// out: (batch, g, g), 1 = masked. seed and step are accepted for the MaskingPolicy contract and
    /// do not change the mask.
    template <class T>
    void generate(std::uint64_t /*seed*/, std::int64_t /*step*/, int batch, T* out) const {
        const int g = grid_;
        for (int b = 0; b < batch; ++b) {
            T* m = out + static_cast<std::ptrdiff_t>(b) * g * g;  // (g, g)
            for (int y = 0; y < g; ++y)
                for (int x = 0; x < g; ++x) {
                    const bool inside = y >= offset_ && y < offset_ + side_ && x >= offset_ && x < offset_ + side_;
                    m[y * g + x] = T(inside ? 1 : 0);
                }
        }
    }

private:
    double ratio_;
    int grid_ = 0, side_ = 0, offset_ = 0;
};

static_assert(MaskingPolicy<CentralSquare>);

}  // namespace simmim
