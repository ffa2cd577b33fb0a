// simmim/model/classifier.hpp: image classification on top of a SimMIM-pretrained encoder.
//
//   Classifier<T, Enc, K>: encoder (no mask) -> final-normed features (B, L, D) on its output grid -> mean
//                  over positions (B, D) -> head Linear(D, K) -> logits (B, K); loss = cross-entropy with
//                  label smoothing. ViTClassifier is the common ViT's; a Swin encoder gives the official
//                  SwinTransformer classifier (norm -> avgpool -> head).
//   Linear probing: features of block k (before the final norm), mean over patch tokens, standardised,
//                  then a linear classifier trained on the frozen features (LinearProbe).
// Parameter names: the encoder's official names, plus head.weight [K, D] and head.bias [K].
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/model/swin_encoder.hpp"
#include "simmim/model/vit_encoder.hpp"
#include "simmim/ops/linear.hpp"

namespace simmim {

namespace ops {

/// pooled (B, D) = mean over the L rows of x (B, L, D).
template <class T>
void mean_pool_forward(T* pooled, const T* x, int B, int L, int D) {
    for (int b = 0; b < B; ++b) {
        T* out = pooled + static_cast<std::ptrdiff_t>(b) * D;
        std::fill(out, out + D, T(0));
        for (int l = 0; l < L; ++l) {
            const T* row = x + (static_cast<std::ptrdiff_t>(b) * L + l) * D;
            for (int d = 0; d < D; ++d) out[d] += row[d];
        }
        for (int d = 0; d < D; ++d) out[d] /= T(L);
    }
}

/// dx (B, L, D) += dpooled (B, D) / L broadcast over the rows.
template <class T>
void mean_pool_backward(T* dx, const T* dpooled, int B, int L, int D) {
    for (int b = 0; b < B; ++b)
        for (int l = 0; l < L; ++l) {
            T* row = dx + (static_cast<std::ptrdiff_t>(b) * L + l) * D;
            for (int d = 0; d < D; ++d) row[d] += dpooled[static_cast<std::ptrdiff_t>(b) * D + d] / T(L);
        }
}

/// Mean over the batch of cross-entropy with label smoothing eps (torch.nn.functional.cross_entropy with
/// label_smoothing): target q = (1 - eps) onehot(y) + eps / K. Writes dlogits (B, K) = (softmax - q) / B.
/// Returns the loss; `correct` (if not null) receives the number of argmax hits.
template <class T>
T cross_entropy_forward_backward(T* dlogits, const T* logits, const int* labels, int B, int K, T eps, int* correct = nullptr) {
    double total = 0;
    int hits = 0;
    for (int b = 0; b < B; ++b) {
        const T* z = logits + static_cast<std::ptrdiff_t>(b) * K;
        const int y = labels[b];
        if (y < 0 || y >= K) throw std::invalid_argument("cross_entropy: label " + std::to_string(y) + " out of range [0, " + std::to_string(K) + ")");
        const T m = *std::max_element(z, z + K);
        T sum = 0;
        for (int k = 0; k < K; ++k) sum += std::exp(z[k] - m);
        const T log_z = m + std::log(sum);
        T loss = 0;
        for (int k = 0; k < K; ++k) {
            const T q = (k == y ? T(1) - eps : T(0)) + eps / T(K);
            loss -= q * (z[k] - log_z);
            if (dlogits) dlogits[static_cast<std::ptrdiff_t>(b) * K + k] = (std::exp(z[k] - log_z) - q) / T(B);
        }
        total += double(loss);
        hits += static_cast<int>(std::max_element(z, z + K) - z) == y;
    }
    if (correct) *correct = hits;
    return T(total / B);
}

/// Mean over the batch of the soft-target cross-entropy (timm's SoftTargetCrossEntropy, the loss of
/// Mixup / CutMix): loss = mean_b sum_k -q[b, k] log softmax(z_b)[k] for targets q (B, K) (each row summing
/// to 1, e.g. data::mix_targets). Writes dlogits (B, K) = (softmax(z_b) sum_k q[b, k] - q[b]) / B if not null.
template <class T>
T soft_target_cross_entropy_forward_backward(T* dlogits, const T* logits, const T* targets, int B, int K) {
    double total = 0;
    for (int b = 0; b < B; ++b) {
        const T* z = logits + static_cast<std::ptrdiff_t>(b) * K;
        const T* q = targets + static_cast<std::ptrdiff_t>(b) * K;
        const T m = *std::max_element(z, z + K);
        T sum = 0, qsum = 0;
        for (int k = 0; k < K; ++k) {
            sum += std::exp(z[k] - m);
            qsum += q[k];
        }
        const T log_z = m + std::log(sum);
        T loss = 0;
        for (int k = 0; k < K; ++k) {
            loss -= q[k] * (z[k] - log_z);
            if (dlogits) dlogits[static_cast<std::ptrdiff_t>(b) * K + k] = (std::exp(z[k] - log_z) * qsum - q[k]) / T(B);
        }
        total += double(loss);
    }
    return T(total / B);
}

}  // namespace ops

/// A classifier: the SimMIM encoder Enc (its weights load from a pretraining checkpoint) with a
/// mean-pooled linear head over K classes.
template <class T, class Enc, int K>
class Classifier {
    ParamArena<T> arena_;  // first: the encoder and the head register into it while constructed
    Enc encoder_;

public:
    static constexpr int L = Enc::geometry.out_tokens(), D = Enc::geometry.out_dim;
    using Encoder = Enc;
    /// Layer ids run from 0 (embedding) to num_layers + 1 (final norm and head): lr scale decay^(num_layers + 1 - id).
    static constexpr int num_layers = Enc::num_layers;

    explicit Classifier(std::uint64_t seed = 0)
        : encoder_(arena_),
          head_w(arena_.template add<Shape<K, D>>("head.weight", Init::TruncNormal002, true)),
          head_b(arena_.template add<Shape<K>>("head.bias", Init::Zeros, false)) {
        arena_.allocate();
        arena_.initialize(seed);
    }
    Classifier(const Classifier&) = delete;

    /// logits (B, K) of images (B, C, S, S).
    const AlignedVector<T>& forward(const T* images, int B) {
        batch_ = B;
        no_mask_.assign(static_cast<std::size_t>(B) * Enc::geometry.mask_tokens(), T(0));
        features_.resize(static_cast<std::size_t>(B) * L * D);
        pooled_.resize(static_cast<std::size_t>(B) * D);
        logits_.resize(static_cast<std::size_t>(B) * K);
        encoder_.forward(features_.data(), images, no_mask_.data(), B);
        ops::mean_pool_forward(pooled_.data(), features_.data(), B, L, D);
        ops::linear_forward(logits_.data(), pooled_.data(), head_w.data(), head_b.data(), B, D, K);
        return logits_;
    }
    /// Accumulates parameter gradients from dlogits (B, K).
    void backward(const T* dlogits) {
        dpooled_.assign(static_cast<std::size_t>(batch_) * D, T(0));
        ops::linear_backward(dpooled_.data(), head_w.grad(), head_b.grad(), dlogits, pooled_.data(), head_w.data(), batch_, D, K);
        dfeatures_.assign(static_cast<std::size_t>(batch_) * L * D, T(0));
        ops::mean_pool_backward(dfeatures_.data(), dpooled_.data(), batch_, L, D);
        encoder_.backward(dfeatures_.data(), nullptr);
    }

    /// Layer id for layer-wise lr decay, the official rules: the encoder's own (Enc::layer_id, Swin's
    /// get_swin_layer) when it has one; for a ViT tokens, position embedding and patch embedding 0,
    /// block i -> i + 1, final norm and head -> depth + 1.
    static int layer_id(const std::string& name) {
        if (name.rfind("head.", 0) == 0) return num_layers + 1;
        if constexpr (requires { Enc::layer_id(name); }) {
            return Enc::layer_id(name);
        } else {
            if (name.rfind("encoder.blocks.", 0) == 0) return std::stoi(name.substr(15)) + 1;
            if (name.rfind("encoder.norm.", 0) == 0) return num_layers + 1;
            return 0;
        }
    }

    ParamArena<T>& params() noexcept { return arena_; }
    Encoder& encoder() noexcept { return encoder_; }

    Param<T, Shape<K, D>> head_w;
    Param<T, Shape<K>> head_b;

private:
    int batch_ = 0;
    AlignedVector<T> no_mask_, features_, pooled_, logits_, dpooled_, dfeatures_;
};

/// The common ViT's classifier.
template <class T, ViTConfig C, int K>
using ViTClassifier = Classifier<T, ViTEncoder<T, C>, K>;

/// A linear classifier on frozen features (B, D): standardised with the training set's per-feature
/// mean and standard deviation (a BatchNorm without affine, as in the MAE/SimMIM linear-probe protocol),
/// then Linear(D, K) trained with cross-entropy.
template <class T, int D, int K>
class LinearProbe {
    ParamArena<T> arena_;

public:
    LinearProbe()
        : weight(arena_.template add<Shape<K, D>>("probe.weight", Init::Zeros, true)),
          bias(arena_.template add<Shape<K>>("probe.bias", Init::Zeros, false)) {
        arena_.allocate();
    }
    /// Per-feature mean and standard deviation of n training feature rows (n, D).
    void fit_standardization(const T* features, std::size_t n) {
        mean_.assign(D, 0);
        inv_std_.assign(D, 0);
        for (std::size_t i = 0; i < n; ++i)
            for (int d = 0; d < D; ++d) mean_[d] += double(features[i * D + d]);
        for (auto& m : mean_) m /= double(n);
        for (std::size_t i = 0; i < n; ++i)
            for (int d = 0; d < D; ++d) {
                const double c = double(features[i * D + d]) - mean_[d];
                inv_std_[d] += c * c;
            }
        for (auto& v : inv_std_) v = 1.0 / std::sqrt(v / double(n) + 1e-6);
    }
    /// Standardises rows in place.
    void standardize(T* features, std::size_t n) const {
        for (std::size_t i = 0; i < n; ++i)
            for (int d = 0; d < D; ++d) features[i * D + d] = T((double(features[i * D + d]) - mean_[d]) * inv_std_[d]);
    }
    /// logits (B, K) of standardised features (B, D).
    void forward(T* logits, const T* features, int B) const {
        ops::linear_forward(logits, features, weight.data(), bias.data(), B, D, K);
    }
    void backward(const T* dlogits, const T* features, int B) {
        ops::linear_backward<T>(nullptr, weight.grad(), bias.grad(), dlogits, features, weight.data(), B, D, K);
    }
    ParamArena<T>& params() noexcept { return arena_; }

    Param<T, Shape<K, D>> weight;
    Param<T, Shape<K>> bias;

private:
    std::vector<double> mean_, inv_std_;
};

}  // namespace simmim
