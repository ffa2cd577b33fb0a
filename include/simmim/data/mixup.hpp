// simmim/data/mixup.hpp: batch-level Mixup and CutMix with soft targets, as timm's Mixup(mode="batch",
// correct_lam=True), which the official SimMIM fine-tuning uses.
//
// Per batch (draw_mix): with probability `prob` the batch is mixed; if both alphas are > 0, CutMix is chosen
// with probability `switch_prob`, else the one whose alpha is > 0; lam ~ Beta(alpha, alpha) of the chosen one.
//   Mixup:  x_b = lam x_b + (1 - lam) x_{B-1-b}                  (the batch mixed with its reverse, x.flip(0))
//   CutMix: a box of side int(S sqrt(1 - lam)) centred at a uniform pixel, clipped to the image, is copied
//           from x_{B-1-b} into x_b, and lam becomes 1 - box area / image area (correct_lam)
// Targets (mix_targets, timm's mixup_target): smooth each one-hot label with eps (off = eps / K,
// on = 1 - eps + off), then mix: q_b = lam smooth(y_b) + (1 - lam) smooth(y_{B-1-b}). Smoothing is linear,
// so this equals smoothing the mixed one-hot targets (mix then smooth). The loss is the soft-target
// cross-entropy (ops::soft_target_cross_entropy_forward_backward, model/classifier.hpp).
// Randomness comes only from the Rng passed in (the trainer seeds it with (seed, step)): the prob draw, the
// switch draw (both alphas > 0), the Beta draw, then the CutMix centre (row, then column).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/core/random.hpp"

namespace simmim::data {

struct MixupConfig {
    double mixup_alpha = 0.0, cutmix_alpha = 0.0;  // Beta parameters; 0 disables that kind
    double prob = 1.0;                             // probability that a batch is mixed at all
    double switch_prob = 0.5;                      // probability of CutMix when both alphas are > 0
    bool enabled() const noexcept { return mixup_alpha > 0.0 || cutmix_alpha > 0.0; }
};

/// What draw_mix decided for one batch: lam = 1 and no box when the batch is not mixed.
struct MixDraw {
    double lam = 1.0;
    bool mixed = false, cutmix = false;
    int y0 = 0, y1 = 0, x0 = 0, x1 = 0;  // CutMix box rows [y0, y1), columns [x0, x1)
};

/// Gamma(a, 1) by Marsaglia and Tsang (a >= 1), boosted by U^(1/a) for a < 1.
inline double sample_gamma(double a, Rng& rng) {
    if (!(a > 0.0) || !std::isfinite(a)) throw std::invalid_argument("sample_gamma: shape must be finite and > 0, found " + std::to_string(a));
    if (a < 1.0) {
        const double g = sample_gamma(a + 1.0, rng);
        double u = rng.uniform();
        while (u <= 0.0) u = rng.uniform();
        return g * std::pow(u, 1.0 / a);
    }
    const double d = a - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
        double x = 0, v = 0;
        do {
            x = rng.normal();
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        const double u = rng.uniform();
        if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
        if (u > 0.0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
    }
}

/// Beta(a, b) = X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b) (X drawn first).
inline double sample_beta(double a, double b, Rng& rng) {
    const double x = sample_gamma(a, rng), y = sample_gamma(b, rng);
    return x + y > 0.0 ? x / (x + y) : 0.5;
}

/// timm's rand_bbox + cutmix_bbox_and_lam(correct_lam=True) on an H x W image: cut = int(side sqrt(1 - lam)),
/// centre cy uniform in [0, H), cx uniform in [0, W), box [clip(c - cut // 2), clip(c + cut // 2)).
inline void cutmix_box(double lam, int H, int W, Rng& rng, MixDraw& d) {
    const double ratio = std::sqrt(1.0 - lam);
    const int cut_h = static_cast<int>(H * ratio), cut_w = static_cast<int>(W * ratio);
    const int cy = static_cast<int>(rng.below(static_cast<std::uint64_t>(H)));
    const int cx = static_cast<int>(rng.below(static_cast<std::uint64_t>(W)));
    d.y0 = std::clamp(cy - cut_h / 2, 0, H);
    d.y1 = std::clamp(cy + cut_h / 2, 0, H);
    d.x0 = std::clamp(cx - cut_w / 2, 0, W);
    d.x1 = std::clamp(cx + cut_w / 2, 0, W);
    d.lam = 1.0 - double(d.y1 - d.y0) * double(d.x1 - d.x0) / (double(H) * double(W));
}

/// The mixing of one batch of H x W images (timm's Mixup._params_per_batch, then the CutMix box).
inline MixDraw draw_mix(const MixupConfig& cfg, int H, int W, Rng& rng) {
    if (!(cfg.mixup_alpha >= 0.0) || !(cfg.cutmix_alpha >= 0.0) || !std::isfinite(cfg.mixup_alpha) || !std::isfinite(cfg.cutmix_alpha))
        throw std::invalid_argument("draw_mix: alphas must be finite and >= 0");
    MixDraw d;
    if (!cfg.enabled() || !(rng.uniform() < cfg.prob)) return d;
    d.mixed = true;
    if (cfg.mixup_alpha > 0.0 && cfg.cutmix_alpha > 0.0) d.cutmix = rng.uniform() < cfg.switch_prob;
    else d.cutmix = cfg.cutmix_alpha > 0.0;
    const double alpha = d.cutmix ? cfg.cutmix_alpha : cfg.mixup_alpha;
    d.lam = sample_beta(alpha, alpha, rng);
    if (d.cutmix) cutmix_box(d.lam, H, W, rng, d);
    return d;
}

/// Mixes a batch of images (B, C, H, W) in place as `d` says: sample b with sample B - 1 - b of the
/// unmixed batch (an odd batch's middle sample with itself).
template <class T>
void apply_mix(T* images, int B, int C, int H, int W, const MixDraw& d) {
    if (!d.mixed) return;
    const std::size_t numel = static_cast<std::size_t>(C) * H * W;
    const std::vector<T> original(images, images + static_cast<std::size_t>(B) * numel);
    for (int b = 0; b < B; ++b) {
        T* x = images + static_cast<std::size_t>(b) * numel;
        const T* other = original.data() + static_cast<std::size_t>(B - 1 - b) * numel;
        if (d.cutmix) {
            for (int c = 0; c < C; ++c)
                for (int y = d.y0; y < d.y1; ++y)
                    for (int xx = d.x0; xx < d.x1; ++xx) {
                        const std::size_t at = (static_cast<std::size_t>(c) * H + y) * W + xx;
                        x[at] = other[at];
                    }
        } else {
            const T lam = T(d.lam), rest = T(1.0 - d.lam);
            for (std::size_t i = 0; i < numel; ++i) x[i] = lam * x[i] + rest * other[i];
        }
    }
}

/// targets (B, K) = lam smooth(y_b) + (1 - lam) smooth(y_{B-1-b}), smooth(y) = (1 - eps) onehot(y) + eps / K
/// (timm's mixup_target). invalid_argument for a label outside [0, K).
template <class T>
void mix_targets(T* targets, const int* labels, int B, int K, double lam, double eps) {
    const double off = eps / K, on = 1.0 - eps + off;
    for (int b = 0; b < B; ++b) {
        const int y1 = labels[b], y2 = labels[B - 1 - b];
        if (y1 < 0 || y1 >= K || y2 < 0 || y2 >= K) throw std::invalid_argument("mix_targets: label out of range [0, " + std::to_string(K) + ")");
        for (int k = 0; k < K; ++k) {
            const double q1 = k == y1 ? on : off, q2 = k == y2 ? on : off;
            targets[static_cast<std::size_t>(b) * K + k] = T(q1 * lam + q2 * (1.0 - lam));
        }
    }
}

}  // namespace simmim::data
