// Class-balanced label subsets (simmim/data/subset.hpp) and SubsetDataset: counts against the closed form
// max(1, round(f * n_c)) counted independently here, labels, order, determinism, uniformity over seeds, errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/data/subset.hpp"

using simmim::data::DataError;
using simmim::data::RawImage;

namespace {

/// Image i has label labels[i] (or none) and one pixel holding i % 251.
class LabelledDataset final : public simmim::data::Dataset {
public:
    LabelledDataset(std::vector<int> labels, int classes) : labels_(std::move(labels)), classes_(classes) {}
    std::size_t size() const override { return labels_.size(); }
    RawImage get(std::size_t i) const override {
        if (i >= labels_.size()) throw DataError("index out of range");
        RawImage r;
        r.width = r.height = r.channels = 1;
        r.pixels = {static_cast<std::uint8_t>(i % 251)};
        r.label = labels_[i];
        return r;
    }
    std::string description() const override { return "labelled test set"; }
    int num_classes() const override { return classes_; }

private:
    std::vector<int> labels_;
    int classes_;
};

/// Uneven classes: class c of 5 has 40 + 37 c images, interleaved by a fixed pattern; class 4 ends up with 188.
std::vector<int> uneven_labels() {
    std::vector<int> labels;
    std::vector<int> left{40, 77, 114, 151, 188};
    for (int step = 0; labels.size() < 570; ++step) {
        const int c = (step * 3) % 5;
        if (left[static_cast<std::size_t>(c)] > 0) {
            labels.push_back(c);
            --left[static_cast<std::size_t>(c)];
        } else {
            for (int d = 0; d < 5; ++d)
                if (left[static_cast<std::size_t>(d)] > 0) {
                    labels.push_back(d);
                    --left[static_cast<std::size_t>(d)];
                    break;
                }
        }
    }
    return labels;
}

}  // namespace

TEST_CASE("class_balanced_subset: max(1, round(f n_c)) images of every class, ascending, distinct, deterministic", "[data][subset]") {
    const auto labels = uneven_labels();
    const LabelledDataset d(labels, 5);
    for (const double f : {1.0, 0.5, 0.1, 0.01}) {
        CAPTURE(f);
        const auto idx = simmim::data::class_balanced_subset(d, d.size(), f, 3);
        std::map<int, long> per_class, expected;
        for (const int l : labels) ++expected[l];
        for (auto& [c, n] : expected) n = std::max<long>(1, std::lround(f * static_cast<double>(n)));
        std::set<std::size_t> seen;
        for (std::size_t k = 0; k < idx.size(); ++k) {
            REQUIRE(idx[k] < d.size());
            if (k > 0) CHECK(idx[k] > idx[k - 1]);
            seen.insert(idx[k]);
            ++per_class[labels[idx[k]]];
        }
        CHECK(seen.size() == idx.size());
        CHECK(per_class == expected);
        CHECK(simmim::data::class_balanced_subset(d, d.size(), f, 3) == idx);
        if (f < 1.0) CHECK(simmim::data::class_balanced_subset(d, d.size(), f, 4) != idx);
    }
    // f = 1: every image
    CHECK(simmim::data::class_balanced_subset(d, d.size(), 1.0, 9).size() == d.size());
    // only the first n images are candidates
    for (const std::size_t i : simmim::data::class_balanced_subset(d, 100, 0.5, 1)) CHECK(i < 100);
}

TEST_CASE("class_balanced_subset: every image of a class is drawn with probability f over seeds", "[data][subset]") {
    // 1 class of 50 images, 5 drawn: over 2000 seeds each image is expected 200 times (binomial sd 13.4)
    const LabelledDataset d(std::vector<int>(50, 0), 1);
    std::vector<int> hits(50, 0);
    for (std::uint64_t seed = 0; seed < 2000; ++seed)
        for (const std::size_t i : simmim::data::class_balanced_subset(d, d.size(), 0.1, seed)) ++hits[i];
    for (int i = 0; i < 50; ++i) {
        CAPTURE(i);
        CHECK(hits[static_cast<std::size_t>(i)] > 140);  // 4.5 sd
        CHECK(hits[static_cast<std::size_t>(i)] < 260);
    }
}

TEST_CASE("SubsetDataset maps its indices, and bad fractions, unlabeled sets and bad indices are errors", "[data][subset]") {
    auto base = std::make_shared<LabelledDataset>(uneven_labels(), 5);
    const simmim::data::SubsetDataset s(base, {7, 3, 300}, "three images");
    CHECK(s.size() == 3);
    CHECK(s.get(0).pixels[0] == 7);
    CHECK(s.get(2).pixels[0] == 300 % 251);
    CHECK(s.get(1).label == base->get(3).label);
    CHECK(s.num_classes() == 5);
    CHECK(s.description() == "labelled test set, three images");
    CHECK_THROWS_AS(s.get(3), DataError);
    CHECK_THROWS_AS(simmim::data::SubsetDataset(base, {570}, "x"), DataError);
    CHECK_THROWS_AS(simmim::data::SubsetDataset(nullptr, {}, "x"), DataError);
    for (const double f : {0.0, -0.1, 1.5, std::nan("")}) CHECK_THROWS_AS(simmim::data::class_balanced_subset(*base, 570, f, 0), std::invalid_argument);
    const LabelledDataset unlabeled(std::vector<int>(10, -1), 0);
    CHECK_THROWS_AS(simmim::data::class_balanced_subset(unlabeled, 10, 0.5, 0), DataError);
    const LabelledDataset bad_label(std::vector<int>{0, 1, 7}, 2);
    CHECK_THROWS_WITH(simmim::data::class_balanced_subset(bad_label, 3, 0.5, 0), Catch::Contains("image 2 has label 7"));
}

TEST_CASE("complement_indices: a held-out validation subset and the training images left partition [0, n)", "[data][subset]") {
    const LabelledDataset d(uneven_labels(), 5);
    const std::size_t n = 400;  // the first 400 images only, as with --max-train
    const auto held = simmim::data::class_balanced_subset(d, n, 0.1, 11);
    const auto rest = simmim::data::complement_indices(held, n);
    CHECK(held.size() + rest.size() == n);
    std::vector<int> seen(n, 0);  // every index exactly once, in one of the two
    for (const std::size_t i : held) ++seen[i];
    for (const std::size_t i : rest) ++seen[i];
    CHECK(std::count(seen.begin(), seen.end(), 1) == static_cast<std::ptrdiff_t>(n));
    CHECK(std::is_sorted(rest.begin(), rest.end()));
    // by hand on a small case
    CHECK(simmim::data::complement_indices({1, 3}, 5) == std::vector<std::size_t>{0, 2, 4});
    CHECK(simmim::data::complement_indices({}, 3) == std::vector<std::size_t>{0, 1, 2});
    CHECK(simmim::data::complement_indices({0, 1, 2}, 3).empty());
    CHECK_THROWS_AS(simmim::data::complement_indices({3, 1}, 5), std::invalid_argument);  // not ascending
    CHECK_THROWS_AS(simmim::data::complement_indices({1, 1}, 5), std::invalid_argument);  // repeated
    CHECK_THROWS_AS(simmim::data::complement_indices({5}, 5), std::invalid_argument);     // out of range
}
