// simmim/optim/adamw.hpp: AdamW as torch.optim.AdamW (decoupled weight decay), with the official
// SimMIM parameter groups, and gradient-norm clipping as torch.nn.utils.clip_grad_norm_.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "simmim/core/tensor.hpp"

namespace simmim {

struct AdamWConfig {
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0.05;  // applied to the decay group only (ParamInfo::weight_decay)
};

/// AdamW over every parameter of an arena. Per-parameter learning-rate scales (layer-wise decay in
/// fine-tuning) can be set with set_lr_scale(). State: the step count and the two moments.
template <class T>
class AdamW {
public:
    AdamW(ParamArena<T>& arena, AdamWConfig cfg = {})
        : arena_(&arena), cfg_(cfg), m_(arena.size(), T(0)), v_(arena.size(), T(0)), lr_scale_(arena.params().size(), 1.0) {}

    /// One update with learning rate lr, from the gradients in the arena (torch 1.13 single-tensor AdamW):
    ///   p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    ///   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    void step(double lr) {
        ++t_;
        const double bc1 = 1.0 - std::pow(cfg_.beta1, double(t_));
        const double bc2_sqrt = std::sqrt(1.0 - std::pow(cfg_.beta2, double(t_)));
        const T b1 = T(cfg_.beta1), b2 = T(cfg_.beta2), eps = T(cfg_.eps);
        const auto& ps = arena_->params();
        T* values = arena_->values();
        const T* grads = arena_->grads();
        for (std::size_t k = 0; k < ps.size(); ++k) {
            const double plr = lr * lr_scale_[k];
            const T decay = T(1.0 - plr * (ps[k].weight_decay ? cfg_.weight_decay : 0.0));
            const T step_size = T(plr / bc1);
            const T bc2s = T(bc2_sqrt);
            const std::ptrdiff_t begin = static_cast<std::ptrdiff_t>(ps[k].offset);
            const std::ptrdiff_t end = begin + static_cast<std::ptrdiff_t>(ps[k].size);
#pragma omp parallel for schedule(static) if (end - begin > 65536)
            for (std::ptrdiff_t i = begin; i < end; ++i) {
                const T g = grads[i];
                values[i] *= decay;
                m_[i] = b1 * m_[i] + (T(1) - b1) * g;
                v_[i] = b2 * v_[i] + (T(1) - b2) * g * g;
                values[i] -= step_size * m_[i] / (std::sqrt(v_[i]) / bc2s + eps);
            }
        }
    }

    void set_lr_scale(std::size_t param_index, double scale) { lr_scale_.at(param_index) = scale; }
    std::int64_t steps() const noexcept { return t_; }
    void set_steps(std::int64_t t) noexcept { t_ = t; }
    AlignedVector<T>& exp_avg() noexcept { return m_; }
    AlignedVector<T>& exp_avg_sq() noexcept { return v_; }
    const AlignedVector<T>& exp_avg() const noexcept { return m_; }
    const AlignedVector<T>& exp_avg_sq() const noexcept { return v_; }
    const AdamWConfig& config() const noexcept { return cfg_; }

private:
    ParamArena<T>* arena_;
    AdamWConfig cfg_;
    AlignedVector<T> m_, v_;
    std::vector<double> lr_scale_;
    std::int64_t t_ = 0;
};

/// Global L2 norm of all gradients; if it exceeds max_norm, scales them by max_norm / (norm + 1e-6)
/// (torch.nn.utils.clip_grad_norm_). Returns the norm before clipping.
template <class T>
double clip_grad_norm(ParamArena<T>& arena, double max_norm) {
    T* g = arena.grads();
    const std::ptrdiff_t n = static_cast<std::ptrdiff_t>(arena.size());
    constexpr std::ptrdiff_t kChunks = 64;  // fixed partition, summed in order: deterministic
    double partial[kChunks] = {};
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t ch = 0; ch < kChunks; ++ch)
        for (std::ptrdiff_t i = ch * n / kChunks; i < (ch + 1) * n / kChunks; ++i) partial[ch] += double(g[i]) * double(g[i]);
    double sq = 0;
    for (const double v : partial) sq += v;
    const double norm = std::sqrt(sq);
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
        const T c = T(coef);
#pragma omp parallel for schedule(static)
        for (std::ptrdiff_t i = 0; i < n; ++i) g[i] *= c;
    }
    return norm;
}

}  // namespace simmim
