// Classification pieces of fine-tuning and linear probing: mean pooling, cross-entropy with label smoothing
// (against PyTorch's values), the head and the whole classifier (finite differences), the frozen-encoder probe,
// and a tiny fine-tuning run whose loss must go down.
#include <catch2/catch.hpp>

#include "gradcheck.hpp"
#include "simmim/model/classifier.hpp"
#include "simmim/optim/adamw.hpp"

using namespace simmim;

TEST_CASE("cross-entropy with label smoothing 0.1 equals torch.nn.functional.cross_entropy", "[classifier]") {
    // torch 1.13: cross_entropy(z, y, label_smoothing=0.1) and its gradient, float64
    const std::vector<double> z = {1.5, -0.3, 0.2, 2.0, 0.1, 0.1, -1.0, 0.4, -2.0, 3.0, 0.5, 0.0};
    const int y[3] = {3, 0, 1};
    const std::vector<double> torch_grad = {0.09966204096196203,   0.009518181970753102, 0.021098839662742824, -0.13027906259545802,
                                            -0.21782076706472414,  0.08217923293527588,  0.02179568268879286,  0.11384585144065545,
                                            -0.006360768271169263, -0.015578720922193322, 0.01569742862357512,  0.006242060569787607};
    std::vector<double> dz(12);
    int hits = -1;
    const double loss = ops::cross_entropy_forward_backward(dz.data(), z.data(), y, 3, 4, 0.1, &hits);
    CHECK(loss == Approx(0.8193390408854617).epsilon(1e-14));
    CHECK(test::relative_error(dz, torch_grad, 12) < 1e-13);
    CHECK(hits == 2);  // argmax 3 (y 3: hit), 3 (y 0: miss), 1 (y 1: hit)
    CHECK_THROWS_WITH(ops::cross_entropy_forward_backward<double>(nullptr, z.data(), std::vector<int>{4, 0, 1}.data(), 3, 4, 0.1),
                      Catch::Contains("label 4 out of range"));
}

TEST_CASE("mean pooling: closed form forward, adjoint backward", "[classifier]") {
    const int B = 2, L = 3, D = 4;
    auto x = test::random_vector(B * L * D, 1), r = test::random_vector(B * D, 2);
    std::vector<double> pooled(B * D);
    ops::mean_pool_forward(pooled.data(), x.data(), B, L, D);
    CHECK(pooled[D + 2] == Approx((x[(L + 0) * D + 2] + x[(L + 1) * D + 2] + x[(L + 2) * D + 2]) / 3).epsilon(1e-15));
    auto f = [&] {
        ops::mean_pool_forward(pooled.data(), x.data(), B, L, D);
        return test::dot(pooled, r);
    };
    std::vector<double> dx(x.size(), 0);
    ops::mean_pool_backward(dx.data(), r.data(), B, L, D);
    CHECK(test::relative_error(dx, test::numeric_gradient(x.data(), x.size(), f), dx.size()) < 1e-8);
}

TEST_CASE("classifier: gradients of the smoothed cross-entropy w.r.t. every parameter match finite differences", "[classifier][gradcheck]") {
    constexpr ViTConfig cfg{8, 1, 4, 8, 1, 2, 2};
    ViTClassifier<double, cfg, 3> model(5);
    Rng rng(3);
    for (std::size_t i = 0; i < model.params().size(); ++i) model.params().values()[i] += 0.05 * rng.normal();
    const int B = 2;
    auto images = test::random_vector(B * cfg.image_numel(), 7);
    const int labels[B] = {2, 0};
    std::vector<double> dlogits(B * 3);
    auto f = [&] {
        const auto& logits = model.forward(images.data(), B);
        return ops::cross_entropy_forward_backward<double>(nullptr, logits.data(), labels, B, 3, 0.1);
    };
    model.params().zero_grad();
    const auto& logits = model.forward(images.data(), B);
    ops::cross_entropy_forward_backward(dlogits.data(), logits.data(), labels, B, 3, 0.1);
    model.backward(dlogits.data());
    const std::vector<double> grads(model.params().grads(), model.params().grads() + model.params().size());
    for (const auto& p : model.params().params()) {
        const auto numeric = test::numeric_gradient(model.params().values() + p.offset, p.size, f);
        INFO(p.name);
        CHECK(test::relative_error(grads.data() + p.offset, numeric, p.size) < 1e-6);
    }
    CHECK(ViTClassifier<double, cfg, 3>::layer_id("encoder.pos_embed") == 0);
    CHECK(ViTClassifier<double, cfg, 3>::layer_id("encoder.blocks.0.norm1.weight") == 1);
    CHECK(ViTClassifier<double, cfg, 3>::layer_id("head.weight") == 2);
}

TEST_CASE("linear probe on frozen features: standardisation and gradients", "[classifier]") {
    LinearProbe<double, 3, 2> probe;
    auto feats = test::random_vector(20 * 3, 4, 5.0);
    probe.fit_standardization(feats.data(), 20);
    probe.standardize(feats.data(), 20);
    for (int d = 0; d < 3; ++d) {
        double s = 0, s2 = 0;
        for (int i = 0; i < 20; ++i) s += feats[i * 3 + d], s2 += feats[i * 3 + d] * feats[i * 3 + d];
        CHECK(s / 20 == Approx(0).margin(1e-12));
        CHECK(s2 / 20 == Approx(1).epsilon(1e-6));
    }
    auto w = test::random_vector(8, 5);
    std::copy(w.begin(), w.end(), probe.params().values());
    std::vector<int> y(20);
    for (int i = 0; i < 20; ++i) y[i] = i % 2;
    std::vector<double> logits(40), dlogits(40);
    auto f = [&] {
        probe.forward(logits.data(), feats.data(), 20);
        return ops::cross_entropy_forward_backward<double>(nullptr, logits.data(), y.data(), 20, 2, 0.0);
    };
    probe.params().zero_grad();
    probe.forward(logits.data(), feats.data(), 20);
    ops::cross_entropy_forward_backward(dlogits.data(), logits.data(), y.data(), 20, 2, 0.0);
    probe.backward(dlogits.data(), feats.data(), 20);
    const std::vector<double> g(probe.params().grads(), probe.params().grads() + 8);
    CHECK(test::relative_error(g, test::numeric_gradient(probe.params().values(), 8, f), 8) < 1e-8);
}

TEST_CASE("a tiny classifier fine-tuned for a few steps on separable generated data lowers its loss", "[classifier]") {
    constexpr ViTConfig cfg{8, 1, 4, 16, 1, 2, 2};
    ViTClassifier<float, cfg, 2> model(1);
    AdamW<float> opt(model.params());
    const int B = 16;
    std::vector<float> images(B * cfg.image_numel());
    std::vector<int> labels(B);
    Rng rng(9);
    for (int b = 0; b < B; ++b) {  // class 1: bright images, class 0: dark
        labels[b] = b % 2;
        for (int i = 0; i < cfg.image_numel(); ++i) images[b * cfg.image_numel() + i] = float(rng.normal() * 0.3 + (labels[b] ? 1.0 : -1.0));
    }
    std::vector<float> dlogits(B * 2);
    float first = 0, last = 0;
    int hits = 0;
    for (int step = 0; step < 30; ++step) {
        model.params().zero_grad();
        const auto& logits = model.forward(images.data(), B);
        last = ops::cross_entropy_forward_backward(dlogits.data(), logits.data(), labels.data(), B, 2, 0.1f, &hits);
        if (step == 0) first = last;
        model.backward(dlogits.data());
        opt.step(3e-3);
    }
    CHECK(last < 0.5f * first);
    CHECK(hits == B);
}
