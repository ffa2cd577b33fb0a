// simmim/io/png_grid.hpp: reconstruction pictures, one row per sample:
//   original | masked input | reconstruction with the visible pixels pasted back | raw prediction.
// Needs stb_image_write (Debian libstb-dev; the simmim::data target adds its include directory).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#endif
#include <stb_image_write.h>

namespace simmim::io {

/// Writes an 8-bit PNG (rows of width*channels bytes); throws naming the path on failure.
inline void write_png(const std::filesystem::path& path, int width, int height, int channels, const std::vector<std::uint8_t>& pixels) {
    if (pixels.size() != static_cast<std::size_t>(width) * height * channels)
        throw std::invalid_argument("write_png: pixel buffer does not match " + std::to_string(width) + "x" + std::to_string(height));
    if (!stbi_write_png(path.string().c_str(), width, height, channels, pixels.data(), width * channels))
        throw std::runtime_error("cannot write PNG '" + path.string() + "'");
}

struct ReconstructionPanels {
    int channels = 3, size = 0, patch = 0;  // C, S (= H = W), model patch p
    std::vector<float> mean, std;           // de-normalisation per channel; empty: per-sample min/max
    int upscale = 0;                        // pixel repeat; 0 chooses one so a panel is >= 128 px
};

/// One PNG with a row per sample. images, pred: (B, C, S, S) normalised; mask: (B, S/p, S/p), 1 = masked.
inline void write_reconstruction_png(const std::filesystem::path& path, const ReconstructionPanels& cfg, int B,
                                     const float* images, const float* pred, const float* mask) {
    const int C = cfg.channels, S = cfg.size, p = cfg.patch, g = S / p;
    const int up = cfg.upscale > 0 ? cfg.upscale : std::max(1, (128 + S - 1) / S);
    const int cell = S * up, gap = 2, W = 4 * cell + 5 * gap, H = B * cell + (B + 1) * gap;
    const int oc = C == 1 ? 1 : 3;
    std::vector<std::uint8_t> out(static_cast<std::size_t>(W) * H * oc, 255);
    for (int b = 0; b < B; ++b) {
        const float* x = images + static_cast<std::ptrdiff_t>(b) * C * S * S;
        const float* r = pred + static_cast<std::ptrdiff_t>(b) * C * S * S;
        const float* m = mask + static_cast<std::ptrdiff_t>(b) * g * g;
        float lo = 0, hi = 1;
        if (cfg.mean.empty()) {
            lo = *std::min_element(x, x + C * S * S);
            hi = *std::max_element(x, x + C * S * S);
            if (hi <= lo) hi = lo + 1;
        }
        auto to_byte = [&](float v, int c) {
            float u = cfg.mean.empty() ? (v - lo) / (hi - lo) : v * cfg.std[c] + cfg.mean[c];
            return static_cast<std::uint8_t>(std::lround(std::clamp(u, 0.f, 1.f) * 255.f));
        };
        for (int panel = 0; panel < 4; ++panel)
            for (int y = 0; y < S; ++y)
                for (int xx = 0; xx < S; ++xx) {
                    const bool masked = m[(y / p) * g + xx / p] != 0.f;
                    for (int c = 0; c < oc; ++c) {
                        const int cc = std::min(c, C - 1);
                        const std::ptrdiff_t i = (static_cast<std::ptrdiff_t>(cc) * S + y) * S + xx;
                        std::uint8_t v;
                        switch (panel) {
                            case 0: v = to_byte(x[i], cc); break;
                            case 1: v = masked ? std::uint8_t(128) : to_byte(x[i], cc); break;
                            case 2: v = masked ? to_byte(r[i], cc) : to_byte(x[i], cc); break;
                            default: v = to_byte(r[i], cc); break;
                        }
                        const int oy0 = gap + b * (cell + gap) + y * up, ox0 = gap + panel * (cell + gap) + xx * up;
                        for (int dy = 0; dy < up; ++dy)
                            for (int dx = 0; dx < up; ++dx)
                                out[(static_cast<std::size_t>(oy0 + dy) * W + ox0 + dx) * oc + c] = v;
                    }
                }
    }
    write_png(path, W, H, oc, out);
}

}  // namespace simmim::io
