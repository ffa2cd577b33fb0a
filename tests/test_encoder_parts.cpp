// The model layer's promise that any encoder plugs in: a toy hierarchical encoder, written here from the
// shared parts (model/parts/) and existing ops, whose output grid is half its mask grid, composed with
// the stock linear head, loss and masking policy, checked whole against finite differences (double).
// Also: encode() (inference) gives the training forward's features for both ViT forms.
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include "gradcheck.hpp"
#include "simmim/simmim.hpp"

using namespace simmim;

namespace {

// ---- the toy hierarchical encoder: embed -> stage 1 -> 2x2 token merge -> stage 2 -> norm ---------
constexpr int kS = 8, kC = 2, kP = 2, kD = 8, kG = kS / kP, kL1 = kG * kG, kL2 = kL1 / 4;  // mask grid 4, output grid 2
template <class T>
class ToyHierarchicalEncoder {
public:
    using scalar_type = T;
    static constexpr EncoderGeometry geometry{kS, kC, /*mask_grid=*/kG, /*out_grid=*/kG / 2, /*out_dim=*/2 * kD};
    static constexpr int num_layers = 2;
    using Embed = PatchEmbedding<T, PatchEmbedSpec{kS, kC, kP, kD, /*cls_token=*/false, /*pos_embed=*/false}>;
    using Block1 = ViTBlock<T, BlockSpec{kD, kL1, 2, 2 * kD}>;
    using Block2 = ViTBlock<T, BlockSpec{2 * kD, kL2, 2, 4 * kD}>;
    struct Caches {  // everything one pass keeps, per batch
        typename Embed::Cache embed;
        typename Embed::Scratch embed_scratch;
        BlockStack<T, Block1>* s1;
        BlockStack<T, Block2>* s2;
        BatchTensor<T, Shape<kL2, 4 * kD>> merged, d_merged;  // (B, L2, 4D) concatenated 2x2 neighbours
        NormCache<T, kL2, 2 * kD> norm;
    };

    explicit ToyHierarchicalEncoder(ParamArena<T>& arena)
        : embed_(arena, {Init::TruncNormal002, false, true}),
          stage1_(1, [&](int) { return Block1(arena, "encoder.layers.0.blocks.0."); }),
          reduction_(arena.template add<Shape<2 * kD, 4 * kD>>("encoder.layers.0.downsample.reduction.weight", Init::TruncNormal002, true)),
          stage2_(1, [&](int) { return Block2(arena, "encoder.layers.1.blocks.0."); }),
          norm_(arena, "encoder.norm.") {}

    void forward(T* features, const T* image, const T* mask, int B) { run(features, image, mask, B, stage1_, stage2_, c_); }
    void encode(T* features, const T* image, const T* mask, int B) const {
        BlockStack<T, Block1> s1 = stage1_;  // copies of the stacks own their activations; the parameters are shared handles
        BlockStack<T, Block2> s2 = stage2_;
        Caches c;
        run(features, image, mask, B, s1, s2, c);
    }
    void backward(const T* dfeatures, T* dimage) {
        const int B = stage2_.batch();
        const std::ptrdiff_t M2 = static_cast<std::ptrdiff_t>(B) * kL2;
        std::fill_n(stage2_.grad_out(), M2 * 2 * kD, T(0));
        norm_.backward(stage2_.grad_out(), dfeatures, stage2_.output(1), c_.norm.mean.data(), c_.norm.rstd.data(), M2);
        const T* dx2 = stage2_.backward([&](int, const Block2& b, T* din, const T* dout, const T* in, const auto& c, auto& s) { b.backward(din, dout, in, B, c, s); });
        std::fill_n(c_.d_merged.data(), M2 * 4 * kD, T(0));
        ops::linear_backward(c_.d_merged.data(), reduction_.grad(), static_cast<T*>(nullptr), dx2, c_.merged.data(), reduction_.data(), M2, 4 * kD, 2 * kD);
        merge(stage1_.grad_out(), c_.d_merged.data(), B, /*backward=*/true);
        const T* dx1 = stage1_.backward([&](int, const Block1& b, T* din, const T* dout, const T* in, const auto& c, auto& s) { b.backward(din, dout, in, B, c, s); });
        embed_.backward(dx1, dimage, B, c_.embed, c_.embed_scratch);
    }

private:
    /// Swin's patch merging order: row (y, x) of the half grid is [x(2y,2x), x(2y+1,2x), x(2y,2x+1), x(2y+1,2x+1)];
    /// backward scatters d merged (B, L2, 4D) back to d tokens (B, L1, D) (overwrites).
    static void merge(T* tokens, T* merged, int B, bool backward) {
        for (int b = 0; b < B; ++b)
            for (int y = 0; y < kG / 2; ++y)
                for (int x = 0; x < kG / 2; ++x)
                    for (int k = 0; k < 4; ++k) {
                        T* src = tokens + ((static_cast<std::ptrdiff_t>(b) * kG + 2 * y + k % 2) * kG + 2 * x + k / 2) * kD;
                        T* dst = merged + ((static_cast<std::ptrdiff_t>(b) * kL2 + y * (kG / 2) + x) * 4 + k) * kD;
                        if (backward) std::copy_n(dst, kD, src);
                        else std::copy_n(src, kD, dst);
                    }
    }
    void run(T* features, const T* image, const T* mask, int B, BlockStack<T, Block1>& s1, BlockStack<T, Block2>& s2, Caches& c) const {
        s1.resize(B);
        s2.resize(B);
        c.embed.resize(B), c.embed_scratch.resize(B), c.merged.resize(B), c.d_merged.resize(B), c.norm.resize(B);
        embed_.forward(s1.input(), image, mask, B, c.embed);
        s1.forward(1, [&](int, const Block1& b, T* out, const T* in, auto& cache) { b.forward(out, in, B, cache); });
        merge(const_cast<T*>(s1.output(1)), c.merged.data(), B, /*backward=*/false);
        ops::linear_forward(s2.input(), c.merged.data(), reduction_.data(), static_cast<const T*>(nullptr), static_cast<std::ptrdiff_t>(B) * kL2, 4 * kD, 2 * kD);
        s2.forward(1, [&](int, const Block2& b, T* out, const T* in, auto& cache) { b.forward(out, in, B, cache); });
        norm_.forward(features, c.norm.mean.data(), c.norm.rstd.data(), s2.output(1), static_cast<std::ptrdiff_t>(B) * kL2, Block2::kEps);
    }

    Embed embed_;
    BlockStack<T, Block1> stage1_;
    Param<T, Shape<2 * kD, 4 * kD>> reduction_;
    BlockStack<T, Block2> stage2_;
    LayerNormParams<T, 2 * kD> norm_;
    Caches c_;
};
// ---- end of the toy encoder -------------------------------------------------------------------

static_assert(Encoder<ToyHierarchicalEncoder<double>>);
constexpr EncoderGeometry kToy = ToyHierarchicalEncoder<double>::geometry;
constexpr MaskSpec kToyMask{4, 0.5};  // mask patch 4 = 2 cells of the 4x4 mask grid
template <class T>
using ToyModel = SimMIM<ToyHierarchicalEncoder<T>, LinearHead<T, kToy>, ReconstructionLoss<T, kToy>, RandomMaskPatch>;

}  // namespace

TEST_CASE("a toy hierarchical encoder plugs into SimMIM: whole-model gradients match finite differences", "[model][parts][gradcheck]") {
    STATIC_REQUIRE(ToyModel<double>::mask_tokens == 16);  // the mask is on the 4x4 mask grid ...
    STATIC_REQUIRE(ToyModel<double>::L == 4);             // ... the features on the 2x2 output grid
    STATIC_REQUIRE(LinearHead<double, kToy>::r == 4);     // stride 4: the head predicts 4x4 pixels per feature
    ToyModel<double> model(random_mask_patch<kToy, kToyMask>(), 3);
    Rng rng(5);
    for (std::size_t i = 0; i < model.params().size(); ++i) model.params().values()[i] += 0.05 * rng.normal();
    const int B = 2;
    auto images = test::random_vector(static_cast<std::size_t>(B) * kToy.image_numel(), 8);
    std::vector<double> mask(static_cast<std::size_t>(B) * kToy.mask_tokens());
    model.draw_mask(4, 0, B, mask.data());
    REQUIRE(std::count(mask.begin(), mask.end(), 1.0) == B * 8);  // 2 of 4 mask patches, 4 cells each
    model.zero_grad();
    std::vector<double> dimages(images.size(), 0.0);
    const double loss = model.forward(images.data(), mask.data(), B);
    REQUIRE(std::isfinite(loss));
    REQUIRE(loss > 0);
    model.backward(dimages.data());
    const std::vector<double> grads(model.params().grads(), model.params().grads() + model.params().size());
    auto f = [&] { return model.forward(images.data(), mask.data(), B); };
    for (const auto& p : model.params().params()) {
        const auto numeric = test::numeric_gradient(model.params().values() + p.offset, p.size, f);
        const double err = test::relative_error(grads.data() + p.offset, numeric, p.size);
        INFO(p.name << " relative error " << err);
        CHECK(err < 1e-6);
    }
    const auto numeric_img = test::numeric_gradient(images.data(), images.size(), f);
    INFO("input image");
    CHECK(test::relative_error(dimages, numeric_img, images.size()) < 1e-6);

    // encode() on the const model gives the training forward's features
    std::vector<double> features(static_cast<std::size_t>(B) * kToy.out_tokens() * kToy.out_dim), trained(features.size());
    model.encoder().forward(trained.data(), images.data(), mask.data(), B);
    const auto& const_model = model;
    const_model.encoder().encode(features.data(), images.data(), mask.data(), B);
    CHECK(features == trained);
}

TEMPLATE_TEST_CASE("encode() gives the training forward's features, masked or not, on a const encoder", "[model][encode]", float, double) {
    constexpr ViTConfig C = presets::vit_tiny_test;
    auto check = [&]<class Model>(Model& model) {
        Rng rng(17);
        for (std::size_t i = 0; i < model.params().size(); ++i) model.params().values()[i] += TestType(0.05 * rng.normal());
        const int B = 5;
        std::vector<TestType> images(static_cast<std::size_t>(B) * C.image_numel()), mask(static_cast<std::size_t>(B) * Model::mask_tokens);
        for (auto& v : images) v = TestType(rng.normal());
        model.draw_mask(2, 0, B, mask.data());
        const std::vector<TestType> no_mask(mask.size(), TestType(0));
        const std::vector<TestType>* masks[] = {&mask, &no_mask};
        for (const std::vector<TestType>* m : masks) {
            std::vector<TestType> trained(static_cast<std::size_t>(B) * Model::L * Model::D), inferred(trained.size(), TestType(-1));
            model.encoder().forward(trained.data(), images.data(), m->data(), B);
            const Model& const_model = model;
            const_model.encoder().encode(inferred.data(), images.data(), m == &no_mask ? nullptr : m->data(), B);
            CHECK(inferred == trained);  // the same ops on the same rows: the same bits
        }
        // one sample at a time (as encode's chunks of a large batch) gives the same features up to rounding: the
        // matrix products round differently for another row count (seen: 7e-16 in double)
        std::vector<TestType> all(static_cast<std::size_t>(B) * Model::L * Model::D), one(all.size());
        model.encoder().encode(all.data(), images.data(), mask.data(), B);
        for (int b = 0; b < B; ++b)
            model.encoder().encode(one.data() + static_cast<std::ptrdiff_t>(b) * Model::L * Model::D,
                                   images.data() + static_cast<std::ptrdiff_t>(b) * C.image_numel(), mask.data() + b * Model::mask_tokens, 1);
        CHECK(test::relative_error(one, all, all.size()) < (std::is_same_v<TestType, float> ? 1e-5 : 1e-12));
    };
    ViTSimMIM<TestType, C> common(random_mask_patch<C, presets::mask_of<C>()>(), 1);
    check(common);
    OfficialViTSimMIM<TestType, C> official(random_mask_patch<C, presets::mask_of<C>()>(), 1);
    auto images = test::random_vector(2 * C.image_numel(), 4);
    const std::vector<TestType> x(images.begin(), images.end());
    std::vector<TestType> a(2 * C.num_patches() * C.embed_dim), b(a.size()), dropped(a.size());
    official.encoder().set_drop_path(0.5, 3, 1);  // training draws drop branches; encode never does
    official.encoder().encode(a.data(), x.data(), nullptr, 2);
    official.encoder().forward(dropped.data(), x.data(), nullptr, 2);
    official.encoder().set_drop_path(0.0, 0, 0);
    official.encoder().encode(b.data(), x.data(), nullptr, 2);
    CHECK(a == b);
    CHECK(a != dropped);  // the training forward did drop branches
    check(official);
}

TEST_CASE("activation_bytes(B) is what a training step allocates", "[model][memory]") {
    // the oracle is the allocator: aligned_bytes_in_use() counts every AlignedVector / BatchTensor block
    auto check = [&]<class Model>(int B) {
        constexpr EncoderGeometry G = Model::geometry;
        using T = typename Model::scalar_type;
        std::vector<T> images(static_cast<std::size_t>(B) * G.image_numel(), T(0.5)), mask(static_cast<std::size_t>(B) * G.mask_tokens());
        std::vector<T> dimages(images.size());
        const auto policy = RandomMaskPatch(G.image_size, G.image_size / 2, G.mask_cell(), 0.5);
        auto step = [&](Model& m) {
            m.draw_mask(1, 0, B, mask.data());
            m.zero_grad();
            m.forward(images.data(), mask.data(), B);
            m.backward(dimages.data());
        };
        {
            Model warm(policy, 1);  // the kernels' per-thread scratch, kept across calls, is sized here
            step(warm);
        }
        Model model(policy, 2);
        const std::int64_t before = aligned_bytes_in_use();
        step(model);
        const std::int64_t allocated = aligned_bytes_in_use() - before;
        INFO("allocated " << allocated << " bytes, activation_bytes " << Model::activation_bytes(B));
        CHECK(allocated == static_cast<std::int64_t>(Model::activation_bytes(B)));
    };
    constexpr ViTConfig C = presets::vit_tiny_test;
    check.operator()<ViTSimMIM<float, C>>(3);
    check.operator()<OfficialViTSimMIM<double, C>>(2);
    check.operator()<SimMIM<ViTEncoder<float, C>, MLPHead<float, C, 24, 8>,
                            ReconstructionLoss<float, C, LossSpec{.target = LossTarget::Normalized, .resolution = 8}>, RandomMaskPatch>>(2);
    check.operator()<SimMIM<OfficialViTEncoder<float, C>, LinearHead<float, C, 8>, ReconstructionLoss<float, C, LossSpec{.resolution = 8}>,
                            RandomMaskPatch>>(4);
    // and it grows linearly with the batch
    CHECK(ViTSimMIM<float, presets::vit_b16_224>::activation_bytes(64) == 64 * ViTSimMIM<float, presets::vit_b16_224>::activation_bytes(1));
}
