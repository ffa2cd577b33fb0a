// simmim/data/augment.hpp: the SimMIM pretraining transform, the fine-tuning transform for small images
// and their deterministic eval form.
//
// augment() = [pad onto a zero canvas] -> RandomResizedCrop (torchvision's sampling, bilinear,
// half-pixel centres, no antialias) -> horizontal flip (p = 0.5) -> ToTensor (/255) -> Normalize.
// The fine-tuning transform for 28-32 px images (random_resized_crop = false, crop_padding = P > 0) is
// torchvision's RandomCrop(S, padding=P, fill=0) in place of the RandomResizedCrop, then the flip with
// probability hflip_prob, Normalize, and RandomErasing(p = erase_prob, value 0) on the normalised image.
// Randomness comes only from the Rng passed in, in this order: crop draws, the flip draw (when hflip),
// the erasing draws (when erase_prob > 0).
// Differences from torchvision on PIL images: resizing happens in float on [0, 1] values (PIL
// resizes 8-bit data, rounds, and antialiases when shrinking).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/data/dataset.hpp"

namespace simmim::data {

/// Per-channel normalisation: out = (x - mean[c]) / std[c] for x in [0, 1]. Empty = identity.
struct Normalization {
    std::vector<float> mean, std;
};
inline const Normalization kImageNetNorm{{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};
inline const Normalization kFashionMnistNorm{{0.2860f}, {0.3530f}};
inline const Normalization kMnistNorm{{0.1307f}, {0.3081f}};
inline const Normalization kCifar10Norm{{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};

struct AugmentConfig {
    int out_size = 0;      // output is out_size x out_size
    int out_channels = 3;  // 1 or 3; see augment() for the conversions
    int canvas = 0;        // if > 0: first centre the image on a canvas x canvas of zeros (28 -> 32 for MNIST)
    bool random_resized_crop = true;
    double scale_min = 0.67, scale_max = 1.0;             // crop area / image area
    double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;  // crop width / height, sampled log-uniformly
    bool hflip = true;
    double hflip_prob = 0.5;  // probability of the flip when hflip
    // without random_resized_crop: torchvision RandomCrop(out_size, padding=crop_padding, fill=0) (0: none)
    int crop_padding = 0;
    // torchvision RandomErasing(p=erase_prob, scale, ratio, value=0) after the normalisation (0: off)
    double erase_prob = 0.0;
    double erase_scale_min = 0.02, erase_scale_max = 0.33;  // erased area / image area
    double erase_ratio_min = 0.3, erase_ratio_max = 3.3;    // erased height / width, sampled log-uniformly
    Normalization norm;  // empty mean and std: no normalisation (values stay in [0, 1])
};

/// A crop rectangle in pixels.
struct CropBox {
    int top = 0, left = 0, height = 0, width = 0;
};

namespace detail {

inline void check_config(const AugmentConfig& cfg) {
    const auto fail = [](const std::string& what) { throw DataError("AugmentConfig: " + what); };
    if (cfg.out_size <= 0) fail("out_size must be positive, found " + std::to_string(cfg.out_size));
    if (cfg.out_channels != 1 && cfg.out_channels != 3)
        fail("out_channels must be 1 or 3, found " + std::to_string(cfg.out_channels));
    if (cfg.canvas < 0) fail("canvas must be >= 0, found " + std::to_string(cfg.canvas));
    if (cfg.random_resized_crop) {
        if (!(cfg.scale_min > 0.0 && cfg.scale_min <= cfg.scale_max))
            fail("expected 0 < scale_min <= scale_max, found " + std::to_string(cfg.scale_min) + ", " +
                 std::to_string(cfg.scale_max));
        if (!(cfg.ratio_min > 0.0 && cfg.ratio_min <= cfg.ratio_max && std::isfinite(cfg.ratio_max)))
            fail("expected 0 < ratio_min <= ratio_max, found " + std::to_string(cfg.ratio_min) + ", " +
                 std::to_string(cfg.ratio_max));
    }
    if (cfg.crop_padding < 0 || cfg.crop_padding > 4096) fail("crop_padding must lie in [0, 4096], found " + std::to_string(cfg.crop_padding));
    if (cfg.crop_padding > 0 && cfg.random_resized_crop) fail("crop_padding is the crop without random_resized_crop; choose one");
    if (!(cfg.hflip_prob >= 0.0 && cfg.hflip_prob <= 1.0)) fail("hflip_prob must lie in [0, 1], found " + std::to_string(cfg.hflip_prob));
    if (!(cfg.erase_prob >= 0.0 && cfg.erase_prob <= 1.0)) fail("erase_prob must lie in [0, 1], found " + std::to_string(cfg.erase_prob));
    if (cfg.erase_prob > 0.0) {
        if (!(cfg.erase_scale_min > 0.0 && cfg.erase_scale_min <= cfg.erase_scale_max && cfg.erase_scale_max < 1.0))
            fail("expected 0 < erase_scale_min <= erase_scale_max < 1, found " + std::to_string(cfg.erase_scale_min) + ", " +
                 std::to_string(cfg.erase_scale_max));
        if (!(cfg.erase_ratio_min > 0.0 && cfg.erase_ratio_min <= cfg.erase_ratio_max && std::isfinite(cfg.erase_ratio_max)))
            fail("expected 0 < erase_ratio_min <= erase_ratio_max, found " + std::to_string(cfg.erase_ratio_min) + ", " +
                 std::to_string(cfg.erase_ratio_max));
    }
    const std::size_t channels = static_cast<std::size_t>(cfg.out_channels);
    const bool identity = cfg.norm.mean.empty() && cfg.norm.std.empty();
    if (!identity && (cfg.norm.mean.size() != channels || cfg.norm.std.size() != channels))
        fail("norm needs " + std::to_string(channels) + " means and stds (out_channels), found " +
             std::to_string(cfg.norm.mean.size()) + " and " + std::to_string(cfg.norm.std.size()));
    for (const float s : cfg.norm.std)
        if (!(s > 0.0f)) fail("norm.std values must be positive, found " + std::to_string(s));
}

/// Python's round(): nearest integer, ties to even (the current rounding mode is never changed here).
inline int round_half_even(double x) { return static_cast<int>(std::nearbyint(x)); }

/// One axis of PyTorch's bilinear interpolation (align_corners=False): the two source indices
/// and their weights for every output position, for an input span [offset, offset + in).
struct LinearTaps {
    std::vector<int> i0, i1;
    std::vector<float> w0, w1;
};
inline LinearTaps linear_taps(int in, int out, int offset) {
    LinearTaps taps;
    taps.i0.resize(static_cast<std::size_t>(out));
    taps.i1.resize(static_cast<std::size_t>(out));
    taps.w0.resize(static_cast<std::size_t>(out));
    taps.w1.resize(static_cast<std::size_t>(out));
    const float scale = static_cast<float>(in) / static_cast<float>(out);
    for (int o = 0; o < out; ++o) {
        const float src = std::max(scale * (static_cast<float>(o) + 0.5f) - 0.5f, 0.0f);
        const int i0 = std::min(static_cast<int>(src), in - 1);
        const int i1 = i0 + (i0 < in - 1 ? 1 : 0);
        const float w1 = src - static_cast<float>(i0);
        const std::size_t k = static_cast<std::size_t>(o);
        taps.i0[k] = offset + i0;
        taps.i1[k] = offset + i1;
        taps.w1[k] = w1;
        taps.w0[k] = 1.0f - w1;
    }
    return taps;
}

/// Bilinear resize of the `box` region of src (C, H, W) into dst (C, outH, outW).
inline void resize_region(const float* src, int C, int H, int W, const CropBox& box, float* dst, int outH, int outW) {
    const LinearTaps ty = linear_taps(box.height, outH, box.top);
    const LinearTaps tx = linear_taps(box.width, outW, box.left);
    const std::size_t plane_in = static_cast<std::size_t>(H) * static_cast<std::size_t>(W);
    const std::size_t plane_out = static_cast<std::size_t>(outH) * static_cast<std::size_t>(outW);
    for (int c = 0; c < C; ++c) {
        const float* in = src + static_cast<std::size_t>(c) * plane_in;  // (H, W)
        float* out = dst + static_cast<std::size_t>(c) * plane_out;      // (outH, outW)
        for (std::size_t y = 0; y < static_cast<std::size_t>(outH); ++y) {
            const float* row0 = in + static_cast<std::size_t>(ty.i0[y]) * static_cast<std::size_t>(W);
            const float* row1 = in + static_cast<std::size_t>(ty.i1[y]) * static_cast<std::size_t>(W);
            for (std::size_t x = 0; x < static_cast<std::size_t>(outW); ++x) {
                const std::size_t x0 = static_cast<std::size_t>(tx.i0[x]), x1 = static_cast<std::size_t>(tx.i1[x]);
                out[y * static_cast<std::size_t>(outW) + x] = ty.w0[y] * (tx.w0[x] * row0[x0] + tx.w1[x] * row0[x1]) +
                                                              ty.w1[y] * (tx.w0[x] * row1[x0] + tx.w1[x] * row1[x1]);
            }
        }
    }
}

/// RawImage -> (out_channels, side, side) floats in [0, 1] if canvas > 0 (image centred, zeros
/// around), else (out_channels, H, W). Conversions: 1->3 replicate; 3->1 luminance
/// 0.299R + 0.587G + 0.114B; 4->3 drop alpha; 4->1 drop alpha then luminance; 2 (gray+alpha)->1
/// drop alpha; 2->3 drop alpha then replicate.
inline std::vector<float> to_planar_float(const RawImage& image, int out_channels, int canvas, int& H, int& W) {
    const int Hi = image.height, Wi = image.width, Ci = image.channels;
    H = canvas > 0 ? canvas : Hi;
    W = canvas > 0 ? canvas : Wi;
    const int top = (H - Hi) / 2, left = (W - Wi) / 2;
    const std::size_t plane = static_cast<std::size_t>(H) * static_cast<std::size_t>(W);
    std::vector<float> out(static_cast<std::size_t>(out_channels) * plane, 0.0f);  // (C, H, W)
    const bool gray_in = Ci <= 2;
    for (int y = 0; y < Hi; ++y) {
        for (int x = 0; x < Wi; ++x) {
            const std::uint8_t* p =
                image.pixels.data() + (static_cast<std::size_t>(y) * static_cast<std::size_t>(Wi) + static_cast<std::size_t>(x)) *
                                          static_cast<std::size_t>(Ci);
            const std::size_t at = static_cast<std::size_t>(y + top) * static_cast<std::size_t>(W) + static_cast<std::size_t>(x + left);
            if (out_channels == 1) {
                out[at] = gray_in ? p[0] / 255.0f : (0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2]) / 255.0f;
            } else {
                for (std::size_t c = 0; c < 3; ++c) out[c * plane + at] = p[gray_in ? 0 : c] / 255.0f;
            }
        }
    }
    return out;
}

}  // namespace detail

/// torchvision RandomResizedCrop.get_params on an H x W image: up to 10 attempts of
/// area = uniform(scale) * H * W, aspect = exp(uniform(log ratio)), w = round(sqrt(area * aspect)),
/// h = round(sqrt(area / aspect)) (round half to even, like Python), accepted if 0 < w <= W and
/// 0 < h <= H, then top = uniform int [0, H - h], left = uniform int [0, W - w]. Fallback: the
/// central crop of the whole image with its aspect ratio clamped to [ratio_min, ratio_max].
inline CropBox sample_crop(int H, int W, const AugmentConfig& cfg, Rng& rng) {
    if (H <= 0 || W <= 0) throw DataError("sample_crop: image size must be positive, found " + std::to_string(H) + "x" + std::to_string(W));
    const double area = static_cast<double>(H) * static_cast<double>(W);
    const double log_ratio_min = std::log(cfg.ratio_min), log_ratio_max = std::log(cfg.ratio_max);
    for (int attempt = 0; attempt < 10; ++attempt) {
        const double target_area = area * rng.uniform(cfg.scale_min, cfg.scale_max);
        const double aspect = std::exp(rng.uniform(log_ratio_min, log_ratio_max));
        const int w = detail::round_half_even(std::sqrt(target_area * aspect));
        const int h = detail::round_half_even(std::sqrt(target_area / aspect));
        if (0 < w && w <= W && 0 < h && h <= H) {
            const int top = static_cast<int>(rng.below(static_cast<std::uint64_t>(H - h + 1)));
            const int left = static_cast<int>(rng.below(static_cast<std::uint64_t>(W - w + 1)));
            return {top, left, h, w};
        }
    }
    const double in_ratio = static_cast<double>(W) / static_cast<double>(H);
    int w = W, h = H;
    if (in_ratio < cfg.ratio_min) {
        h = std::clamp(detail::round_half_even(W / cfg.ratio_min), 1, H);
    } else if (in_ratio > cfg.ratio_max) {
        w = std::clamp(detail::round_half_even(H * cfg.ratio_max), 1, W);
    }
    return {(H - h) / 2, (W - w) / 2, h, w};
}

/// torchvision RandomCrop(S, padding=P).get_params on the padded (S + 2P) x (S + 2P) image: top and left
/// uniform integers in [0, 2P], top drawn first. The crop is rows top .. top + S - 1 of the padded image,
/// i.e. image row top - P + y for output row y (zero outside the image).
inline CropBox sample_pad_crop(int S, int P, Rng& rng) {
    const std::uint64_t n = static_cast<std::uint64_t>(2 * P + 1);
    const int top = static_cast<int>(rng.below(n));
    const int left = static_cast<int>(rng.below(n));
    return {top - P, left - P, S, S};
}

/// Copies the S x S window at (box.top, box.left) of src (C, S, S) into dst (C, S, S); pixels of the window
/// outside src are 0 (the zero padding). dst must not alias src.
inline void crop_window(const float* src, int C, int S, const CropBox& box, float* dst) {
    const std::size_t side = static_cast<std::size_t>(S), plane = side * side;
    for (std::size_t c = 0; c < static_cast<std::size_t>(C); ++c)
        for (int y = 0; y < S; ++y) {
            float* out = dst + c * plane + static_cast<std::size_t>(y) * side;
            const int sy = box.top + y;
            if (sy < 0 || sy >= S) {
                std::fill(out, out + side, 0.0f);
                continue;
            }
            const float* row = src + c * plane + static_cast<std::size_t>(sy) * side;
            for (int x = 0; x < S; ++x) {
                const int sx = box.left + x;
                out[x] = sx >= 0 && sx < S ? row[sx] : 0.0f;
            }
        }
}

/// torchvision RandomErasing.get_params (value 0) on an H x W image, after the draw u < erase_prob that
/// applies it: up to 10 attempts of area = uniform(scale) * H * W, aspect = exp(uniform(log ratio)),
/// h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect)) (half to even, as torch.round), accepted
/// if h < H and w < W, then top = uniform int [0, H - h], left = uniform int [0, W - w]. Returns an empty box
/// (height 0) when no attempt fits: nothing is erased.
inline CropBox sample_erase(int H, int W, const AugmentConfig& cfg, Rng& rng) {
    const double area = static_cast<double>(H) * static_cast<double>(W);
    const double log_ratio_min = std::log(cfg.erase_ratio_min), log_ratio_max = std::log(cfg.erase_ratio_max);
    for (int attempt = 0; attempt < 10; ++attempt) {
        const double erase_area = area * rng.uniform(cfg.erase_scale_min, cfg.erase_scale_max);
        const double aspect = std::exp(rng.uniform(log_ratio_min, log_ratio_max));
        const int h = detail::round_half_even(std::sqrt(erase_area * aspect));
        const int w = detail::round_half_even(std::sqrt(erase_area / aspect));
        if (!(h < H && w < W) || h <= 0 || w <= 0) continue;
        const int top = static_cast<int>(rng.below(static_cast<std::uint64_t>(H - h + 1)));
        const int left = static_cast<int>(rng.below(static_cast<std::uint64_t>(W - w + 1)));
        return {top, left, h, w};
    }
    return {0, 0, 0, 0};
}

/// Bilinear resize of src (C, H, W) to dst (C, outH, outW), as torch.nn.functional.interpolate(
/// mode="bilinear", align_corners=False, antialias=False): half-pixel centres, source coordinates
/// below 0 clamped to 0, the last row / column repeated past the edge.
inline void resize_bilinear(const float* src, int C, int H, int W, float* dst, int outH, int outW) {
    if (C <= 0 || H <= 0 || W <= 0 || outH <= 0 || outW <= 0)
        throw DataError("resize_bilinear: sizes must be positive, found C=" + std::to_string(C) + " " + std::to_string(H) + "x" +
                        std::to_string(W) + " -> " + std::to_string(outH) + "x" + std::to_string(outW));
    detail::resize_region(src, C, H, W, CropBox{0, 0, H, W}, dst, outH, outW);
}

/// Writes `out` (cfg.out_channels, cfg.out_size, cfg.out_size), normalised. rng drives the crop,
/// the flip and the erasing; with random_resized_crop = false, crop_padding = 0, hflip = false and
/// erase_prob = 0 the transform is the deterministic eval one (canvas, bilinear resize of the whole
/// image to out_size x out_size if its size differs, normalise) and rng is not used. With crop_padding
/// the whole image is first resized to out_size (if its size differs), then cropped with the padding.
/// DataError on an inconsistent image or config.
inline void augment(const RawImage& image, const AugmentConfig& cfg, Rng& rng, float* out) {
    detail::check_config(cfg);
    if (image.width <= 0 || image.height <= 0 || image.channels < 1 || image.channels > 4)
        throw DataError("augment: image must have positive size and 1..4 channels, found " + std::to_string(image.width) + "x" +
                        std::to_string(image.height) + "x" + std::to_string(image.channels));
    const std::size_t expected = static_cast<std::size_t>(image.width) * static_cast<std::size_t>(image.height) *
                                 static_cast<std::size_t>(image.channels);
    if (image.pixels.size() != expected)
        throw DataError("augment: image " + std::to_string(image.width) + "x" + std::to_string(image.height) + "x" +
                        std::to_string(image.channels) + " needs " + std::to_string(expected) + " pixel bytes, found " +
                        std::to_string(image.pixels.size()));
    if (cfg.canvas > 0 && (image.width > cfg.canvas || image.height > cfg.canvas))
        throw DataError("augment: image " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                        " does not fit on the " + std::to_string(cfg.canvas) + "x" + std::to_string(cfg.canvas) + " canvas");

    int H = 0, W = 0;
    const std::vector<float> planar = detail::to_planar_float(image, cfg.out_channels, cfg.canvas, H, W);  // (C, H, W)
    const CropBox box = cfg.random_resized_crop ? sample_crop(H, W, cfg, rng) : CropBox{0, 0, H, W};
    const int C = cfg.out_channels, S = cfg.out_size;
    const std::size_t side = static_cast<std::size_t>(S);
    if (cfg.crop_padding > 0) {
        const CropBox window = sample_pad_crop(S, cfg.crop_padding, rng);
        std::vector<float> whole;
        const float* image_s = planar.data();  // (C, S, S)
        if (H != S || W != S) {
            whole.resize(static_cast<std::size_t>(C) * side * side);
            detail::resize_region(planar.data(), C, H, W, box, whole.data(), S, S);
            image_s = whole.data();
        }
        crop_window(image_s, C, S, window, out);
    } else {
        detail::resize_region(planar.data(), C, H, W, box, out, S, S);  // (C, S, S)
    }

    if (cfg.hflip && rng.uniform() < cfg.hflip_prob)
        for (std::size_t row = 0; row < static_cast<std::size_t>(C) * side; ++row) std::reverse(out + row * side, out + (row + 1) * side);

    if (!cfg.norm.mean.empty()) {
        for (std::size_t c = 0; c < static_cast<std::size_t>(C); ++c) {
            const float mean = cfg.norm.mean[c], std = cfg.norm.std[c];
            float* plane = out + c * side * side;
            for (std::size_t i = 0; i < side * side; ++i) plane[i] = (plane[i] - mean) / std;
        }
    }
    if (cfg.erase_prob > 0.0 && rng.uniform() < cfg.erase_prob) {
        const CropBox e = sample_erase(S, S, cfg, rng);
        for (std::size_t c = 0; c < static_cast<std::size_t>(C); ++c)
            for (int y = e.top; y < e.top + e.height; ++y)
                std::fill_n(out + (c * side + static_cast<std::size_t>(y)) * side + static_cast<std::size_t>(e.left), e.width, 0.0f);
    }
}

}  // namespace simmim::data
