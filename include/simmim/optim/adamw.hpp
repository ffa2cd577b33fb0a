// simmim/optim/adamw.hpp: AdamW as torch.optim.AdamW (decoupled weight decay), with the official
// SimMIM parameter groups, and gradient-norm clipping as torch.nn.utils.clip_grad_norm_.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "simmim/core/tensor.hpp"
#include "simmim/kernels/simd.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

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
    ///   p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  (1 - b computed in double)
    ///   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    void step(double lr) {
        ++t_;
        const double bc1 = 1.0 - std::pow(cfg_.beta1, double(t_));
        const double bc2_sqrt = std::sqrt(1.0 - std::pow(cfg_.beta2, double(t_)));
        const T b1 = T(cfg_.beta1), b2 = T(cfg_.beta2), eps = T(cfg_.eps);
        // 1 - beta in double, then rounded, as torch's alpha / value arguments (float(1) - float(0.999)
        // would be 4.7e-5 off float(0.001)).
        const T a1 = T(1.0 - cfg_.beta1), a2 = T(1.0 - cfg_.beta2);
        const auto& ps = arena_->params();
        T* values = arena_->values();
        const T* grads = arena_->grads();
        for (std::size_t k = 0; k < ps.size(); ++k) {
            const double plr = lr * lr_scale_[k];
            const T decay = T(1.0 - plr * (ps[k].weight_decay ? cfg_.weight_decay : 0.0));
            const T step_size = T(plr / bc1);
            const T bc2s = T(bc2_sqrt);
            const std::ptrdiff_t begin = static_cast<std::ptrdiff_t>(ps[k].offset);
            const std::ptrdiff_t n = static_cast<std::ptrdiff_t>(ps[k].size);
            const auto update = [&](std::ptrdiff_t from, std::ptrdiff_t to) {
                update_range(values + begin + from, m_.data() + begin + from, v_.data() + begin + from,
                             grads + begin + from, to - from, decay, b1, b2, a1, a2, step_size, bc2s, eps);
            };
            if (n > 65536) {
#pragma omp parallel
                {
#ifdef _OPENMP
                    const std::ptrdiff_t parts = omp_get_num_threads(), part = omp_get_thread_num();
#else
                    const std::ptrdiff_t parts = 1, part = 0;
#endif
                    update(part * n / parts, (part + 1) * n / parts);
                }
            } else {
                update(0, n);
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
// GCC 12.1-12.2 warns inside its own AVX-512 headers once xsimd::sqrt is inlined (GCC bug 105593,
// the self-initialised _mm512_undefined_ps; see kernels/simd.hpp): silenced for update_range only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
    /// The update of n elements, with xsimd batches when kernels/simd.hpp enables them for T (std::sqrt
    /// keeps the compiler from vectorising the scalar loop: its errno path is control flow). Same
    /// operations in the same order for every element, body or tail.
    static void update_range(T* p, T* m, T* v, const T* g, std::ptrdiff_t n, T decay, T b1, T b2, T a1, T a2,
                             T step_size, T bc2s, T eps) {
        std::ptrdiff_t i = 0;
#if SIMMIM_SIMD
        if constexpr (kernels::simd_enabled<T>) {
            using B = kernels::Batch<T>;
            constexpr std::ptrdiff_t W = kernels::lanes<T>;
            const B vdecay(decay), vb1(b1), vb2(b2), va1(a1), va2(a2), vstep(step_size), vbc2s(bc2s),
                veps(eps);
            for (; i + W <= n; i += W) {
                const B gi = B::load_unaligned(g + i);
                B pi = B::load_unaligned(p + i) * vdecay;
                const B mi = vb1 * B::load_unaligned(m + i) + va1 * gi;
                const B vi = vb2 * B::load_unaligned(v + i) + va2 * gi * gi;
                pi = pi - vstep * mi / (xsimd::sqrt(vi) / vbc2s + veps);
                mi.store_unaligned(m + i);
                vi.store_unaligned(v + i);
                pi.store_unaligned(p + i);
            }
        }
#endif
        for (; i < n; ++i) {
            const T gi = g[i];
            T pi = p[i] * decay;
            const T mi = b1 * m[i] + a1 * gi;
            const T vi = b2 * v[i] + a2 * gi * gi;
            pi -= step_size * mi / (std::sqrt(vi) / bc2s + eps);
            m[i] = mi;
            v[i] = vi;
            p[i] = pi;
        }
    }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

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
    for (std::ptrdiff_t ch = 0; ch < kChunks; ++ch) {
        // Eight interleaved sums (element i into lane i % 8), added up in lane order: a fixed order
        // that the compiler can keep in one SIMD register instead of one serial chain of additions.
        constexpr std::ptrdiff_t kLanes = 8;
        double lane[kLanes] = {};
        const std::ptrdiff_t first = ch * n / kChunks, last = (ch + 1) * n / kChunks;
        std::ptrdiff_t i = first;
        for (; i + kLanes <= last; i += kLanes)
            for (std::ptrdiff_t l = 0; l < kLanes; ++l) lane[l] += double(g[i + l]) * double(g[i + l]);
        for (; i < last; ++i) lane[(i - first) % kLanes] += double(g[i]) * double(g[i]);
        for (const double x : lane) partial[ch] += x;
    }
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
