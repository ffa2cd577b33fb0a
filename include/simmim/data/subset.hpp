// simmim/data/subset.hpp: a view of some images of a Dataset, and the class-balanced label subsets of the
// label-scarce evaluations (fine-tuning with 10% or 1% of the labels, as self-supervised pretraining is judged).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "simmim/core/random.hpp"
#include "simmim/data/dataset.hpp"

namespace simmim::data {

/// The images `indices` of `base`, in that order. Thread-safe as the base is.
class SubsetDataset : public Dataset {
public:
    /// DataError when base is null or an index is out of its range; `what` goes into description().
    SubsetDataset(std::shared_ptr<const Dataset> base, std::vector<std::size_t> indices, std::string what)
        : base_(std::move(base)), indices_(std::move(indices)), what_(std::move(what)) {
        if (!base_) throw DataError("SubsetDataset: the base dataset is null");
        for (const std::size_t i : indices_)
            if (i >= base_->size())
                throw DataError("SubsetDataset: index " + std::to_string(i) + " is outside " + base_->description());
    }
    std::size_t size() const override { return indices_.size(); }
    RawImage get(std::size_t index) const override {
        if (index >= indices_.size())
            throw DataError("SubsetDataset: image " + std::to_string(index) + " of " + std::to_string(indices_.size()) + " requested");
        return base_->get(indices_[index]);
    }
    std::string description() const override { return base_->description() + ", " + what_; }
    int num_classes() const override { return base_->num_classes(); }
    const std::vector<std::size_t>& indices() const noexcept { return indices_; }

private:
    std::shared_ptr<const Dataset> base_;
    std::vector<std::size_t> indices_;
    std::string what_;
};

/// The indices (ascending) of a class-balanced subset of the first `n` images of `d`: of the n_c images of every class c,
/// max(1, round(fraction * n_c)), drawn without replacement by a Fisher-Yates shuffle of the class's images seeded
/// with (seed, c), so a subset depends only on the labels, the fraction and the seed (and a smaller fraction of the
/// same seed is not in general a subset of a larger one). Reads every label once (get()). std::invalid_argument for
/// a fraction outside (0, 1]; DataError for an unlabeled dataset or an image whose label is outside [0, classes).
inline std::vector<std::size_t> class_balanced_subset(const Dataset& d, std::size_t n, double fraction, std::uint64_t seed) {
    if (!(fraction > 0.0 && fraction <= 1.0))
        throw std::invalid_argument("class_balanced_subset: the fraction must lie in (0, 1], found " + std::to_string(fraction));
    const int K = d.num_classes();
    if (K <= 0) throw DataError(d.description() + ": has no labels, so no class-balanced subset can be drawn");
    n = std::min(n, d.size());
    std::vector<std::vector<std::size_t>> by_class(static_cast<std::size_t>(K));
    for (std::size_t i = 0; i < n; ++i) {
        const int label = d.get(i).label;
        if (label < 0 || label >= K)
            throw DataError(d.description() + ": image " + std::to_string(i) + " has label " + std::to_string(label) + ", outside [0, " +
                            std::to_string(K) + ")");
        by_class[static_cast<std::size_t>(label)].push_back(i);
    }
    std::vector<std::size_t> chosen;
    for (int c = 0; c < K; ++c) {
        auto& members = by_class[static_cast<std::size_t>(c)];
        if (members.empty()) continue;
        const auto take = std::max<std::size_t>(1, static_cast<std::size_t>(std::llround(fraction * static_cast<double>(members.size()))));
        Rng rng(derive_seed(seed, 7, static_cast<std::uint64_t>(c)));
        for (std::size_t i = members.size(); i > 1; --i) std::swap(members[i - 1], members[static_cast<std::size_t>(rng.below(i))]);
        chosen.insert(chosen.end(), members.begin(), members.begin() + static_cast<std::ptrdiff_t>(std::min(take, members.size())));
    }
    std::sort(chosen.begin(), chosen.end());
    return chosen;
}

/// The indices (ascending) of [0, n) that are not in `taken` (ascending, as class_balanced_subset returns them): the
/// training images left when a class-balanced validation subset is held out. std::invalid_argument when `taken` is not
/// strictly ascending or holds an index >= n.
inline std::vector<std::size_t> complement_indices(const std::vector<std::size_t>& taken, std::size_t n) {
    for (std::size_t i = 0; i < taken.size(); ++i)
        if (taken[i] >= n || (i > 0 && taken[i] <= taken[i - 1]))
            throw std::invalid_argument("complement_indices: the indices must be strictly ascending and below " + std::to_string(n));
    std::vector<std::size_t> rest;
    rest.reserve(n - taken.size());
    std::size_t j = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if (j < taken.size() && taken[j] == i) ++j;
        else rest.push_back(i);
    }
    return rest;
}

}  // namespace simmim::data
