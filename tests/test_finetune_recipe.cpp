// The pieces of the fine-tuning recipe (examples/simmim_finetune.cpp), each against an independent oracle:
//  - drop path in the common ViT (ViTEncoder::set_drop_path): rate 0 is the plain encoder bit for bit, encode()
//    never drops, a sample whose two branches are dropped passes through the block unchanged, and the whole
//    classifier's gradients match finite differences with drop path on (fixed draws);
//  - the soft-target cross-entropy against a long-double closed form, its gradient against finite differences,
//    and with un-mixed smoothed targets against the (PyTorch-checked) label-smoothing cross-entropy;
//  - mix_targets against the "mix then smooth" formula; apply_mix against a scalar reference; the Beta draws'
//    moments, the CutMix box and the corrected lam;
//  - RandomCrop with zero padding and the flip against a scalar pipeline on the same draws; random erasing's
//    rectangle, area and frequency.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <vector>

#include "gradcheck.hpp"
#include "simmim/data/augment.hpp"
#include "simmim/data/mixup.hpp"
#include "simmim/model/classifier.hpp"

using namespace simmim;

namespace {

constexpr ViTConfig kCfg{8, 1, 4, 8, 3, 2, 2};  // 8 px, patch 4: 4 patches + cls, 3 blocks

template <class Model>
void perturb(Model& model, std::uint64_t seed, double scale) {
    Rng rng(seed);
    for (std::size_t i = 0; i < model.params().size(); ++i) model.params().values()[i] += scale * rng.normal();
}

/// The first seed whose draws at `step` drop some and keep other branches of blocks 1 and 2 (rate `rate`).
std::uint64_t mixed_draw_seed(double rate, std::int64_t step, int B, int depth) {
    for (std::uint64_t seed = 0;; ++seed) {
        int dropped = 0, total = 0;
        for (int block = 1; block < depth; ++block)
            for (int branch = 0; branch < 2; ++branch)
                for (int b = 0; b < B; ++b) {
                    dropped += ops::drop_path_scale(ops::drop_path_block_rate(rate, block, depth), seed, step, block, branch, b) == 0.0;
                    ++total;
                }
        if (dropped >= 2 && dropped <= total - 2) return seed;
    }
}

/// A grey test image (h x w), pixel values from a seed.
data::RawImage grey_image(int h, int w, std::uint64_t seed) {
    data::RawImage img;
    img.width = w;
    img.height = h;
    img.channels = 1;
    img.label = 3;
    Rng rng(seed);
    img.pixels.resize(static_cast<std::size_t>(h) * w);
    for (auto& p : img.pixels) p = static_cast<std::uint8_t>(rng.below(256));
    return img;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Drop path in the common ViT
// ---------------------------------------------------------------------------------------------

TEST_CASE("ViT drop path: rate 0 is the plain encoder bit for bit, encode() never drops", "[finetune][drop_path]") {
    ViTClassifier<double, kCfg, 3> plain(5), dropped(5);
    perturb(plain, 9, 0.05);
    perturb(dropped, 9, 0.05);
    const int B = 4;
    const auto images = test::random_vector(static_cast<std::size_t>(B) * kCfg.image_numel(), 2);
    const auto logits0 = plain.forward(images.data(), B);
    const std::vector<double> dlogits = test::random_vector(static_cast<std::size_t>(B) * 3, 3);
    plain.params().zero_grad();
    plain.backward(dlogits.data());
    const std::vector<double> grads0(plain.params().grads(), plain.params().grads() + plain.params().size());

    dropped.encoder().set_drop_path(0.0, 123, 7);
    CHECK(dropped.forward(images.data(), B) == logits0);
    dropped.params().zero_grad();
    dropped.backward(dlogits.data());
    CHECK(std::vector<double>(dropped.params().grads(), dropped.params().grads() + dropped.params().size()) == grads0);
    for (int i = 0; i < kCfg.depth; ++i)
        for (int br = 0; br < 2; ++br)
            for (double s : dropped.encoder().drop_path_factors(i, br)) CHECK(s == 1.0);

    // on: the logits change, and encode() (inference) still gives the plain features
    dropped.encoder().set_drop_path(0.5, mixed_draw_seed(0.5, 7, B, kCfg.depth), 7);
    CHECK(dropped.forward(images.data(), B) != logits0);
    std::vector<double> features(static_cast<std::size_t>(B) * kCfg.num_patches() * kCfg.embed_dim), plain_features(features.size());
    dropped.encoder().encode(features.data(), images.data(), nullptr, B);
    plain.encoder().encode(plain_features.data(), images.data(), nullptr, B);
    CHECK(features == plain_features);
    CHECK_THROWS_AS(dropped.encoder().set_drop_path(1.0, 0, 0), std::invalid_argument);
    CHECK_THROWS_AS(dropped.encoder().set_drop_path(std::nan(""), 0, 0), std::invalid_argument);
}

TEST_CASE("ViT drop path: factors are 0 or 1/(1 - r_i) with r_i linear in the block; dropped branches leave a sample unchanged",
          "[finetune][drop_path]") {
    ViTEncoder<double, kCfg>* enc = nullptr;
    ParamArena<double> arena;
    ViTEncoder<double, kCfg> encoder(arena);
    arena.allocate();
    arena.initialize(1);
    enc = &encoder;
    const int B = 64, last = kCfg.depth - 1;
    const auto images = test::random_vector(static_cast<std::size_t>(B) * kCfg.image_numel(), 4);
    const std::vector<double> mask(static_cast<std::size_t>(B) * kCfg.num_patches(), 0.0);
    const double rate = 0.6;
    enc->set_drop_path(rate, 11, 2);
    const double* before_ptr = enc->forward_tokens(images.data(), mask.data(), B, last);
    const std::size_t row = static_cast<std::size_t>(kCfg.num_tokens()) * kCfg.embed_dim;
    const std::vector<double> before(before_ptr, before_ptr + B * row);
    const double* after = enc->forward_tokens(images.data(), mask.data(), B, kCfg.depth);
    int both = 0, kept = 0;
    for (int i = 0; i < kCfg.depth; ++i) {
        const double r = rate * i / (kCfg.depth - 1);  // linspace(0, rate, depth)[i]
        for (int br = 0; br < 2; ++br)
            for (double f : enc->drop_path_factors(i, br)) {
                if (i == 0) CHECK(f == 1.0);
                else CHECK((f == 0.0 || f == Approx(1.0 / (1.0 - r)).epsilon(1e-15)));
            }
    }
    for (int b = 0; b < B; ++b) {
        const bool dropped = enc->drop_path_factors(last, 0)[b] == 0.0 && enc->drop_path_factors(last, 1)[b] == 0.0;
        const bool same = std::equal(before.begin() + b * row, before.begin() + (b + 1) * row, after + b * row);
        CHECK(same == dropped);
        both += dropped;
        kept += !same;
    }
    CHECK(both > 0);
    CHECK(kept > 0);
    // the same (seed, step) draws the same factors; the next step others
    const auto f0 = enc->drop_path_factors(last, 0);
    enc->forward_tokens(images.data(), mask.data(), B, kCfg.depth);
    CHECK(enc->drop_path_factors(last, 0) == f0);
    enc->set_drop_path(rate, 11, 3);
    enc->forward_tokens(images.data(), mask.data(), B, kCfg.depth);
    CHECK(enc->drop_path_factors(last, 0) != f0);
}

TEST_CASE("ViT drop path: the classifier's gradients match finite differences with drop path on", "[finetune][drop_path][gradcheck]") {
    ViTClassifier<double, kCfg, 3> model(5);
    perturb(model, 3, 0.05);
    const int B = 3;
    const std::int64_t step = 4;
    const double rate = 0.5;
    const std::uint64_t seed = mixed_draw_seed(rate, step, B, kCfg.depth);
    model.encoder().set_drop_path(rate, seed, step);  // the draws are fixed by (seed, step): every f() below uses them
    const auto images = test::random_vector(static_cast<std::size_t>(B) * kCfg.image_numel(), 7);
    const int labels[B] = {2, 0, 1};
    auto f = [&] {
        const auto& logits = model.forward(images.data(), B);
        return ops::cross_entropy_forward_backward<double>(nullptr, logits.data(), labels, B, 3, 0.1);
    };
    model.params().zero_grad();
    const auto& logits = model.forward(images.data(), B);
    std::vector<double> dlogits(static_cast<std::size_t>(B) * 3);
    ops::cross_entropy_forward_backward(dlogits.data(), logits.data(), labels, B, 3, 0.1);
    model.backward(dlogits.data());
    int dropped = 0;
    for (int i = 1; i < kCfg.depth; ++i)
        for (int br = 0; br < 2; ++br)
            for (double s : model.encoder().drop_path_factors(i, br)) dropped += s == 0.0;
    CHECK(dropped >= 2);
    const std::vector<double> grads(model.params().grads(), model.params().grads() + model.params().size());
    for (const auto& p : model.params().params()) {
        const auto numeric = test::numeric_gradient(model.params().values() + p.offset, p.size, f);
        INFO(p.name);
        CHECK(test::relative_error(grads.data() + p.offset, numeric, p.size) < 1e-6);
    }
}

// ---------------------------------------------------------------------------------------------
// Soft targets: label smoothing + Mixup / CutMix
// ---------------------------------------------------------------------------------------------

TEST_CASE("mix_targets: timm's smooth-then-mix equals mix-then-smooth, rows sum to 1", "[finetune][mixup]") {
    const int B = 5, K = 4;
    const int labels[B] = {0, 3, 1, 1, 2};
    for (const double lam : {1.0, 0.7, 0.31, 0.0})
        for (const double eps : {0.0, 0.1, 0.25}) {
            std::vector<double> q(B * K);
            data::mix_targets(q.data(), labels, B, K, lam, eps);
            for (int b = 0; b < B; ++b) {
                long double sum = 0;
                for (int k = 0; k < K; ++k) {
                    const long double mixed = lam * (k == labels[b]) + (1 - lam) * (k == labels[B - 1 - b]);  // mix the one-hot labels
                    const long double expected = (1 - eps) * mixed + eps / K;                               // then smooth
                    CHECK(std::abs(q[b * K + k] - expected) < 1e-15);
                    sum += q[b * K + k];
                }
                CHECK(std::abs(sum - 1) < 1e-15);
            }
        }
    std::vector<double> q(B * K);
    CHECK_THROWS_AS(data::mix_targets(q.data(), std::vector<int>{0, 1, 2, 3, 4}.data(), B, K, 0.5, 0.1), std::invalid_argument);
}

TEST_CASE("soft-target cross-entropy: long-double closed form, finite differences, and the smoothed cross-entropy", "[finetune][mixup]") {
    const int B = 4, K = 6;
    auto z = test::random_vector(B * K, 21, 2.0);
    const int labels[B] = {5, 0, 2, 2};
    std::vector<double> q(B * K);
    data::mix_targets(q.data(), labels, B, K, 0.37, 0.1);
    std::vector<double> dz(B * K);
    const double loss = ops::soft_target_cross_entropy_forward_backward(dz.data(), z.data(), q.data(), B, K);
    long double expected = 0;
    for (int b = 0; b < B; ++b) {
        long double s = 0;
        for (int k = 0; k < K; ++k) s += std::exp(static_cast<long double>(z[b * K + k]));
        for (int k = 0; k < K; ++k) expected -= q[b * K + k] * (z[b * K + k] - std::log(s));
    }
    expected /= B;
    CHECK(std::abs(loss - static_cast<double>(expected)) < 1e-14 * std::abs(static_cast<double>(expected)));
    const auto numeric = test::numeric_gradient(z.data(), z.size(), [&] {
        return ops::soft_target_cross_entropy_forward_backward<double>(nullptr, z.data(), q.data(), B, K);
    });
    CHECK(test::relative_error(dz, numeric, dz.size()) < 1e-8);

    // lam = 1: the smoothed one-hot targets give the label-smoothing cross-entropy and its gradient
    data::mix_targets(q.data(), labels, B, K, 1.0, 0.1);
    std::vector<double> dz_soft(B * K), dz_ls(B * K);
    const double soft = ops::soft_target_cross_entropy_forward_backward(dz_soft.data(), z.data(), q.data(), B, K);
    const double ls = ops::cross_entropy_forward_backward(dz_ls.data(), z.data(), labels, B, K, 0.1);
    CHECK(soft == Approx(ls).epsilon(1e-14));
    CHECK(test::relative_error(dz_soft, dz_ls, dz_ls.size()) < 1e-14);
}

TEST_CASE("apply_mix: Mixup and CutMix against a scalar reference; CutMix's lam is the kept area", "[finetune][mixup]") {
    const int B = 5, C = 2, S = 8;
    const std::size_t numel = static_cast<std::size_t>(C) * S * S;
    const auto x = test::random_vector(B * numel, 5);
    data::MixDraw mix;
    mix.mixed = true;
    mix.lam = 0.3;
    auto y = x;
    data::apply_mix(y.data(), B, C, S, S, mix);
    for (int b = 0; b < B; ++b)
        for (std::size_t i = 0; i < numel; ++i) CHECK(y[b * numel + i] == Approx(0.3 * x[b * numel + i] + 0.7 * x[(B - 1 - b) * numel + i]).epsilon(1e-15));

    data::MixupConfig cfg;
    cfg.cutmix_alpha = 1.0;
    for (std::uint64_t seed = 0; seed < 200; ++seed) {
        Rng rng(seed);
        const auto d = data::draw_mix(cfg, S, S, rng);
        REQUIRE(d.mixed);
        REQUIRE(d.cutmix);
        REQUIRE(0 <= d.y0);
        REQUIRE(d.y0 <= d.y1);
        REQUIRE(d.y1 <= S);
        REQUIRE(0 <= d.x0);
        REQUIRE(d.x0 <= d.x1);
        REQUIRE(d.x1 <= S);
        CHECK(d.lam == Approx(1.0 - double((d.y1 - d.y0) * (d.x1 - d.x0)) / (S * S)).epsilon(1e-15));
        auto z = x;
        data::apply_mix(z.data(), B, C, S, S, d);
        for (int b = 0; b < B; ++b)
            for (int c = 0; c < C; ++c)
                for (int r = 0; r < S; ++r)
                    for (int col = 0; col < S; ++col) {
                        const bool in_box = r >= d.y0 && r < d.y1 && col >= d.x0 && col < d.x1;
                        const std::size_t at = (static_cast<std::size_t>(c) * S + r) * S + col;
                        REQUIRE(z[b * numel + at] == x[(in_box ? B - 1 - b : b) * numel + at]);
                    }
    }
    // off: nothing changes, lam 1
    Rng rng(1);
    const auto off = data::draw_mix(data::MixupConfig{}, S, S, rng);
    CHECK(!off.mixed);
    CHECK(off.lam == 1.0);
}

TEST_CASE("draw_mix: Beta(alpha, alpha) moments, the switch and the mix probability", "[finetune][mixup]") {
    for (const double alpha : {0.2, 0.8, 1.0, 3.0}) {
        CAPTURE(alpha);
        data::MixupConfig cfg;
        cfg.mixup_alpha = alpha;
        const int n = 20000;
        double sum = 0, sum2 = 0;
        for (int i = 0; i < n; ++i) {
            Rng rng(derive_seed(42, static_cast<std::uint64_t>(i)));
            const double lam = data::draw_mix(cfg, 8, 8, rng).lam;
            REQUIRE(lam >= 0.0);
            REQUIRE(lam <= 1.0);
            sum += lam;
            sum2 += lam * lam;
        }
        const double mean = sum / n, var = sum2 / n - mean * mean, var_exact = 1.0 / (4.0 * (2.0 * alpha + 1.0));
        CHECK(std::abs(mean - 0.5) < 5 * std::sqrt(var_exact / n));
        CHECK(std::abs(var - var_exact) < 0.05 * var_exact);
    }
    data::MixupConfig both;
    both.mixup_alpha = 0.8;
    both.cutmix_alpha = 1.0;
    both.prob = 0.6;
    both.switch_prob = 0.25;
    int mixed = 0, cut = 0;
    const int n = 20000;
    for (int i = 0; i < n; ++i) {
        Rng rng(derive_seed(7, static_cast<std::uint64_t>(i)));
        const auto d = data::draw_mix(both, 8, 8, rng);
        mixed += d.mixed;
        cut += d.cutmix;
    }
    CHECK(std::abs(mixed / double(n) - 0.6) < 5 * std::sqrt(0.24 / n));
    CHECK(std::abs(cut / double(mixed) - 0.25) < 5 * std::sqrt(0.1875 / mixed));
}

// ---------------------------------------------------------------------------------------------
// Crop with zero padding, flip, random erasing
// ---------------------------------------------------------------------------------------------

TEST_CASE("finetune augmentation: random crop with zero padding and flip equal a scalar pipeline on the same draws", "[finetune][augment]") {
    data::AugmentConfig cfg;
    cfg.out_size = 32;
    cfg.out_channels = 1;
    cfg.canvas = 32;  // a 28 px image centred on a 32 px canvas (Fashion-MNIST)
    cfg.random_resized_crop = false;
    cfg.crop_padding = 4;
    cfg.hflip = true;
    cfg.hflip_prob = 0.5;
    cfg.norm = data::kFashionMnistNorm;
    const auto img = grey_image(28, 28, 3);
    std::set<std::pair<int, int>> offsets;
    int flips = 0;
    const int runs = 2000;
    std::vector<float> out(32 * 32);
    for (int run = 0; run < runs; ++run) {
        const std::uint64_t seed = derive_seed(5, static_cast<std::uint64_t>(run));
        Rng rng(seed);
        data::augment(img, cfg, rng, out.data());
        // the documented draws: top, left uniform in [0, 2P], then the flip
        Rng draws(seed);
        const int top = static_cast<int>(draws.below(9)), left = static_cast<int>(draws.below(9));
        const bool flip = draws.uniform() < 0.5;
        offsets.insert({top, left});
        flips += flip;
        for (int y = 0; y < 32; ++y)
            for (int x = 0; x < 32; ++x) {
                const int px = flip ? 31 - x : x;
                // padded image row top + y = canvas row top + y - 4 = image row top + y - 4 - 2
                const int iy = top + y - 6, ix = left + px - 6;
                const float v = iy >= 0 && iy < 28 && ix >= 0 && ix < 28 ? img.pixels[iy * 28 + ix] / 255.0f : 0.0f;
                REQUIRE(out[y * 32 + x] == (v - 0.2860f) / 0.3530f);
            }
    }
    CHECK(offsets.size() == 81);  // every offset in [0, 8]^2 occurs
    CHECK(std::abs(flips / double(runs) - 0.5) < 5 * std::sqrt(0.25 / runs));
    // all off: the eval transform
    data::AugmentConfig eval = cfg;
    eval.crop_padding = 0;
    eval.hflip = false;
    std::vector<float> a(32 * 32), b(32 * 32);
    Rng r1(1), r2(2);
    data::augment(img, eval, r1, a.data());
    data::augment(img, eval, r2, b.data());
    CHECK(a == b);
    CHECK(a[0] == (0.0f - 0.2860f) / 0.3530f);
    CHECK(a[2 * 32 + 2] == (img.pixels[0] / 255.0f - 0.2860f) / 0.3530f);
    cfg.random_resized_crop = true;
    CHECK_THROWS_AS(data::augment(img, cfg, r1, a.data()), data::DataError);  // crop_padding needs random_resized_crop off
}

TEST_CASE("finetune augmentation: random erasing zeroes one rectangle of 2-33% of the image, with probability p", "[finetune][augment]") {
    data::AugmentConfig cfg;
    cfg.out_size = 32;
    cfg.out_channels = 1;
    cfg.random_resized_crop = false;
    cfg.hflip = false;
    cfg.erase_prob = 0.3;
    cfg.norm = data::kFashionMnistNorm;
    data::AugmentConfig plain = cfg;
    plain.erase_prob = 0;
    auto img = grey_image(32, 32, 8);
    for (auto& p : img.pixels) p = static_cast<std::uint8_t>(std::max<int>(p, 1));  // no pixel normalises to 0 by itself
    std::vector<float> ref(32 * 32), out(32 * 32);
    Rng unused(0);
    data::augment(img, plain, unused, ref.data());
    const int runs = 3000;
    int erased = 0;
    for (int run = 0; run < runs; ++run) {
        Rng rng(derive_seed(9, static_cast<std::uint64_t>(run)));
        data::augment(img, cfg, rng, out.data());
        int y0 = 32, y1 = -1, x0 = 32, x1 = -1, zeros = 0;
        for (int y = 0; y < 32; ++y)
            for (int x = 0; x < 32; ++x) {
                if (out[y * 32 + x] == ref[y * 32 + x]) continue;
                REQUIRE(out[y * 32 + x] == 0.0f);
                ++zeros;
                y0 = std::min(y0, y), y1 = std::max(y1, y), x0 = std::min(x0, x), x1 = std::max(x1, x);
            }
        if (zeros == 0) continue;
        ++erased;
        const int h = y1 - y0 + 1, w = x1 - x0 + 1;
        REQUIRE(zeros == h * w);  // one filled rectangle
        REQUIRE(h < 32);
        REQUIRE(w < 32);
        // area = round(sqrt(A a)) round(sqrt(A / a)) with A in [0.02, 0.33] * 1024: within rounding of the range
        const double area = double(h * w) / 1024.0;
        REQUIRE(area >= 0.02 * 0.6);
        REQUIRE(area <= 0.33 * 1.4);
        REQUIRE(double(h) / w <= 3.3 * 1.6);
        REQUIRE(double(h) / w >= 0.3 / 1.6);
    }
    CHECK(std::abs(erased / double(runs) - 0.3) < 5 * std::sqrt(0.21 / runs));
}
