// What a data-parallel run (simmim/dist/mpi.hpp, simmim_pretrain under mpirun) relies on, checked in one
// process against the whole batch, in double:
//   - a batch split into slices, each slice's loss weighted by loss_denominator(slice) / loss_denominator(batch)
//     and its gradients accumulated with that weight as backward's dloss, gives the whole batch's loss and
//     gradients (the sum over ranks is the batch's), for the masked L1 loss, the all-pixel L2 loss, the
//     official ViT with drop path (each slice drawing as its samples' positions in the batch) and Swin;
//   - every transformer block's parameters are a gradient group, notified last block first, at a moment when
//     their gradients already hold their final values (so a bucket can be reduced then).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "gradcheck.hpp"
#include "simmim/simmim.hpp"

using namespace simmim;

namespace {

constexpr ViTConfig kSmall{8, 2, 2, 8, 2, 2, 4};
constexpr MaskSpec kSmallMask{4, 0.5};

/// Loss and gradients of the whole batch of B against the weighted sum over the slices of each split.
/// set_first(first) prepares the model for a slice that starts at sample `first` of the batch (drop path).
template <class Model, class SetFirst>
void check_slices(Model& model, int B, const std::vector<std::vector<int>>& splits, SetFirst&& set_first) {
    Rng rng(5);
    for (std::size_t i = 0; i < model.params().size(); ++i) model.params().values()[i] += 0.05 * rng.normal();
    constexpr std::size_t numel = Model::image_numel, mt = static_cast<std::size_t>(Model::mask_tokens);
    const auto images = test::random_vector(static_cast<std::size_t>(B) * numel, 17);
    std::vector<double> mask(static_cast<std::size_t>(B) * mt);
    model.draw_mask(3, 9, B, mask.data());

    model.zero_grad();
    set_first(0);
    const double whole = model.forward(images.data(), mask.data(), B);
    model.backward();
    const std::vector<double> whole_grads(model.params().grads(), model.params().grads() + model.params().size());
    const double whole_denominator = model.loss_denominator(mask.data(), B);

    for (const auto& split : splits) {
        std::string name;
        for (int n : split) name += std::to_string(n) + " ";
        INFO("slices " << name);
        model.zero_grad();  // the slices' gradients accumulate in one arena, as the ranks' are summed
        double loss = 0, weights = 0;
        int first = 0;
        for (int n : split) {
            const double* slice_mask = mask.data() + static_cast<std::size_t>(first) * mt;
            const double w = model.loss_denominator(slice_mask, n) / whole_denominator;
            set_first(first);
            loss += w * model.forward(images.data() + static_cast<std::size_t>(first) * numel, slice_mask, n);
            model.backward(nullptr, w);
            weights += w;
            first += n;
        }
        REQUIRE(first == B);
        // the weights sum to 1 but for the loss's +1e-5, counted once per slice instead of once
        double denominators = 0;
        for (int f = 0, k = 0; k < static_cast<int>(split.size()); f += split[static_cast<std::size_t>(k)], ++k)
            denominators += model.loss_denominator(mask.data() + static_cast<std::size_t>(f) * mt, split[static_cast<std::size_t>(k)]);
        CHECK(weights == Approx(denominators / whole_denominator).epsilon(1e-14));
        CHECK(weights == Approx(1.0).epsilon(1e-6));
        CHECK(loss == Approx(whole).epsilon(1e-12));
        CHECK(test::relative_error(whole_grads.data(), model.params().grads(), model.params().size()) < 1e-11);
    }
}

const std::vector<std::vector<int>> kSplits = {{1, 4}, {2, 3}, {2, 2, 1}, {1, 1, 1, 1, 1}};

}  // namespace

TEST_CASE("data-parallel slices: the weighted sum of the slices' losses and gradients is the batch's (masked L1)",
          "[distributed][model]") {
    ViTSimMIM<double, kSmall> model(random_mask_patch<kSmall, kSmallMask>(), 7);
    check_slices(model, 5, kSplits, [](int) {});
    // the weight is the ratio of loss denominators, not of sample counts: with the loss's +1e-5 they differ
    std::vector<double> mask(5 * 16);
    model.draw_mask(3, 9, 5, mask.data());
    CHECK(model.loss_denominator(mask.data(), 1) / model.loss_denominator(mask.data(), 5) != 0.2);
}

TEST_CASE("data-parallel slices: all-pixel L2 loss at a lower prediction resolution", "[distributed][model]") {
    using Model = SimMIM<ViTEncoder<double, kSmall>, LinearHead<double, kSmall, 4>,
                         ReconstructionLoss<double, kSmall, LossSpec{.norm = LossNorm::L2, .region = LossRegion::All, .resolution = 4}>, RandomMaskPatch>;
    Model model(random_mask_patch<kSmall, kSmallMask>(), 8);
    check_slices(model, 5, kSplits, [](int) {});
}

TEST_CASE("data-parallel slices: official ViT with drop path draws each sample as in the whole batch", "[distributed][model]") {
    using Model = SimMIM<OfficialViTEncoder<double, kSmall>, LinearHead<double, kSmall>, MaskedL1Loss<double, kSmall>, RandomMaskPatch>;
    Model model(random_mask_patch<kSmall, kSmallMask>(), 9);
    // rate 0.6 over 2 blocks: block 1 drops each branch of a sample with probability 0.6
    check_slices(model, 5, kSplits, [&](int first) { model.encoder().set_drop_path(0.6, 1234, 4, first); });
    model.encoder().set_drop_path(0.6, 1234, 4, 0);
    std::vector<double> images(5 * Model::image_numel, 0.1), mask(5 * Model::mask_tokens, 0.0);
    model.forward(images.data(), mask.data(), 5);
    const auto whole = model.encoder().drop_path_factors(1, 0);
    bool some_dropped = false;
    for (double f : whole) some_dropped = some_dropped || f == 0.0;
    CHECK(some_dropped);  // the draws matter in this check
    model.encoder().set_drop_path(0.6, 1234, 4, 3);
    model.forward(images.data() + 3 * Model::image_numel, mask.data(), 2);
    const auto tail = model.encoder().drop_path_factors(1, 0);
    CHECK(std::vector<double>(whole.begin() + 3, whole.end()) == tail);
}

TEST_CASE("data-parallel slices: Swin", "[distributed][model][swin]") {
    SwinSimMIM<double, presets::swin_tiny_test> model(random_mask_patch<presets::swin_tiny_test, presets::mask_swin_16px>(), 10);
    check_slices(model, 3, {{1, 2}, {1, 1, 1}}, [](int) {});
}

namespace {

/// Every block's parameters (named with one of `prefixes`, in order) form gradient group i, notified in reverse
/// order during backward, with the gradients they end with.
template <class Model>
void check_groups(Model& model, const std::vector<std::string>& prefixes, int B) {
    auto& arena = model.params();
    const auto& groups = arena.grad_groups();
    REQUIRE(groups.size() == prefixes.size());
    for (std::size_t g = 0; g < groups.size(); ++g) {
        INFO("group " << g << " prefix " << prefixes[g]);
        for (std::size_t k = 0; k < arena.params().size(); ++k) {
            const bool named = arena.params()[k].name.rfind(prefixes[g], 0) == 0;
            CHECK(named == (k >= groups[g].first && k < groups[g].end));
        }
    }
    using T = typename Model::scalar_type;
    const auto images = test::random_vector(static_cast<std::size_t>(B) * Model::image_numel, 4);
    std::vector<T> x(images.begin(), images.end()), mask(static_cast<std::size_t>(B) * Model::mask_tokens);
    model.draw_mask(1, 2, B, mask.data());
    std::vector<std::size_t> order;
    std::vector<std::vector<T>> snapshots(groups.size());
    arena.set_grad_ready_hook([&](std::size_t g) {
        order.push_back(g);
        const auto& ps = arena.params();
        const std::size_t lo = ps[groups[g].first].offset, hi = ps[groups[g].end - 1].offset + ps[groups[g].end - 1].size;
        snapshots[g].assign(arena.grads() + lo, arena.grads() + hi);
    });
    model.zero_grad();
    model.forward(x.data(), mask.data(), B);
    model.backward();
    arena.set_grad_ready_hook({});
    std::vector<std::size_t> reversed;
    for (std::size_t g = groups.size(); g-- > 0;) reversed.push_back(g);
    CHECK(order == reversed);
    for (std::size_t g = 0; g < groups.size(); ++g) {
        const auto& ps = arena.params();
        const std::size_t lo = ps[groups[g].first].offset;
        INFO("group " << g);
        REQUIRE(!snapshots[g].empty());
        CHECK(std::equal(snapshots[g].begin(), snapshots[g].end(), arena.grads() + lo));  // final when notified
    }
}

}  // namespace

TEST_CASE("gradient groups: one per transformer block, notified last block first with final gradients", "[distributed][model]") {
    {
        ViTSimMIM<float, presets::vit_tiny_test> model(random_mask_patch<presets::vit_tiny_test, presets::mask_32px>(), 0);
        check_groups(model, {"encoder.blocks.0.", "encoder.blocks.1."}, 2);
    }
    {
        using Model = SimMIM<OfficialViTEncoder<float, presets::vit_tiny_test>, LinearHead<float, presets::vit_tiny_test>,
                             MaskedL1Loss<float, presets::vit_tiny_test>, RandomMaskPatch>;
        Model model(random_mask_patch<presets::vit_tiny_test, presets::mask_32px>(), 0);
        check_groups(model, {"encoder.blocks.0.", "encoder.blocks.1."}, 2);
    }
    {
        SwinSimMIM<float, presets::swin_tiny_test> model(random_mask_patch<presets::swin_tiny_test, presets::mask_swin_16px>(), 0);
        check_groups(model, {"encoder.layers.0.blocks.0.", "encoder.layers.0.blocks.1.", "encoder.layers.1.blocks.0.", "encoder.layers.1.blocks.1."}, 2);
    }
}
