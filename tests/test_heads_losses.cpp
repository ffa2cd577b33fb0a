// The head / prediction-resolution / target / loss ablations (model/mlp_head.hpp, linear_head.hpp,
// reconstruction_loss.hpp, ops/pixel_targets.hpp, ops/pixel_loss.hpp), each against an independent oracle:
//   1. the PyTorch float64 fixture tests/fixtures/losses_tiny.safetensors (tests/pytorch/make_loss_fixture.py):
//      loss and d loss / d pred for every L1/L2 x masked/all x raw/normalised(5, 47) x R in {16, 8, 4},
//      the targets, d loss / d image through the area averaging, one MLP head forward/backward;
//   2. central finite differences (double) for the MLP head, the linear head at R < S, and whole models
//      with an MLP head and each kind of loss;
//   3. the brute-force window statistics against the O(1)-per-pixel ones (borders, window > plane);
//   4. the default types against today's ViTSimMIM, bit for bit.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "gradcheck.hpp"
#include "simmim/io/safetensors.hpp"
#include "simmim/simmim.hpp"

#ifndef SIMMIM_SOURCE_DIR
#error "SIMMIM_SOURCE_DIR must point at the source tree (set by tests/CMakeLists.txt)"
#endif

using namespace simmim;

namespace {

// ---------------------------------------------------------------------------------------------------
// 1. the PyTorch fixture

// The fixture's shapes: B = 2, C = 2, 16x16 images, model patch 4 (token grid 4); D = 8 for the head case.
constexpr ViTConfig kFix{16, 2, 4, 8, 1, 2, 4};
constexpr MaskSpec kFixMask{8, 0.5};
constexpr int kFixB = 2;

const io::TensorFile& loss_fixture() {
    static const io::TensorFile f = io::read_safetensors(SIMMIM_SOURCE_DIR "/tests/fixtures/losses_tiny.safetensors");
    return f;
}

template <class T>
std::vector<T> fixture_tensor(const std::string& name) {
    INFO("fixture tensor " << name);
    REQUIRE(loss_fixture().contains(name));
    return loss_fixture().at(name).template to<T>();
}

constexpr int kResolutions[] = {16, 8, 4};
constexpr int kWindows[] = {0, 5, 47};  // 0: raw target
constexpr LossNorm kNorms[] = {LossNorm::L1, LossNorm::L2};
constexpr LossRegion kRegions[] = {LossRegion::Masked, LossRegion::All};

/// Case i of the 36 (R, target, norm, region), in the fixture's loop order.
constexpr LossSpec fixture_spec(std::size_t i) {
    const int window = kWindows[(i / 4) % 3];
    return LossSpec{kNorms[(i / 2) % 2], kRegions[i % 2], window == 0 ? LossTarget::Raw : LossTarget::Normalized,
                    kResolutions[i / 12], window == 0 ? 47 : window};
}

std::string case_name(const LossSpec& s) {
    std::string n = s.norm == LossNorm::L1 ? "l1" : "l2";
    n += s.region == LossRegion::Masked ? ".masked" : ".all";
    n += s.target == LossTarget::Raw ? std::string(".raw") : ".norm" + std::to_string(s.norm_window);
    return n + ".R" + std::to_string(s.resolution);
}

struct CaseResult {
    int checked = 0, with_dimage = 0;
};

/// Loss, d loss / d pred, the derived target and (raw targets) d loss / d image against the fixture.
template <class T, LossSpec Spec>
void check_fixture_case(double tol, CaseResult& result) {
    using Loss = ReconstructionLoss<T, kFix, Spec>;
    constexpr int R = Loss::resolution;
    const std::string name = case_name(Spec);
    INFO("case " << name);
    const auto images = fixture_tensor<T>("images");
    const auto mask = fixture_tensor<T>("mask");
    const auto pred = fixture_tensor<T>("pred.R" + std::to_string(R));
    const Loss loss;
    const T value = loss.forward(pred.data(), images.data(), mask.data(), kFixB);
    const double ref = fixture_tensor<double>("loss." + name).at(0);
    CHECK(std::abs(double(value) - ref) <= tol * std::abs(ref));

    std::vector<T> dpred(pred.size(), T(0)), dimage(images.size(), T(0));
    loss.backward(dpred.data(), dimage.data(), T(1), pred.data(), images.data(), mask.data(), kFixB);
    const auto ref_dpred = fixture_tensor<double>("dpred." + name);
    CHECK(test::relative_error(dpred, ref_dpred, ref_dpred.size()) <= tol);

    if constexpr (Loss::derived_target) {
        const std::string tname = "target." + name.substr(name.find('.', 3) + 1);  // target.<raw|normW>.R<R>
        const auto ref_target = fixture_tensor<double>(tname);
        std::vector<T> target(ref_target.size());
        Loss::make_target(target.data(), images.data(), kFixB);
        CHECK(test::relative_error(target, ref_target, ref_target.size()) <= tol);
    }
    if constexpr (Spec.target == LossTarget::Normalized) {
        STATIC_REQUIRE_FALSE(Loss::target_gradient);
        for (const T v : dimage) REQUIRE(v == T(0));  // the target is a constant: dimage untouched
    } else if constexpr (R == kFix.image_size) {
        for (std::size_t i = 0; i < dpred.size(); ++i) REQUIRE(dimage[i] == -dpred[i]);  // target = image
    } else if (loss_fixture().contains("dimage." + name)) {
        const auto ref_dimage = fixture_tensor<double>("dimage." + name);
        CHECK(test::relative_error(dimage, ref_dimage, ref_dimage.size()) <= tol);
        ++result.with_dimage;
    }
    ++result.checked;
}

template <class T, std::size_t... I>
CaseResult check_all_fixture_cases(double tol, std::index_sequence<I...>) {
    CaseResult result;
    (check_fixture_case<T, fixture_spec(I)>(tol, result), ...);
    return result;
}

/// The fixture's MLP head (B = 1, D = 8, Hidden = 6, R = 8: r = 2) against nn.Sequential.
template <class T>
void check_fixture_head(double tol) {
    using HeadT = MLPHead<T, kFix, 6, 8>;
    ParamArena<T> arena;
    HeadT head(arena);
    arena.allocate();
    for (const auto& p : arena.params()) {  // decoder.<i>.<w|b> <- head.<i>.<w|b>
        const auto v = fixture_tensor<T>("head." + p.name.substr(std::string("decoder.").size()));
        REQUIRE(v.size() == p.size);
        REQUIRE(loss_fixture().at("head." + p.name.substr(8)).shape == p.shape);
        std::copy(v.begin(), v.end(), arena.values() + p.offset);
    }
    const auto features = fixture_tensor<T>("head.features");
    const auto weights = fixture_tensor<T>("head.out_weights");
    const auto out_ref = fixture_tensor<double>("head.out");
    std::vector<T> out(out_ref.size());
    head.forward(out.data(), features.data(), 1);
    CHECK(test::relative_error(out, out_ref, out_ref.size()) <= tol);
    std::vector<T> dfeatures(features.size());
    arena.zero_grad();
    head.backward(dfeatures.data(), weights.data());
    const auto dref = fixture_tensor<double>("head.dfeatures");
    CHECK(test::relative_error(dfeatures, dref, dref.size()) <= tol);
    for (const auto& p : arena.params()) {
        const auto g = fixture_tensor<double>("head.grad." + p.name.substr(8));
        INFO(p.name);
        CHECK(test::relative_error(arena.grads() + p.offset, g, p.size) <= tol);
    }
}

}  // namespace

TEST_CASE("losses, their gradients and targets match PyTorch float64 for every ablation (double 1e-12)", "[heads][fixture]") {
    const auto r = check_all_fixture_cases<double>(1e-12, std::make_index_sequence<36>{});
    CHECK(r.checked == 36);
    CHECK(r.with_dimage == 2);  // the fixture's d loss / d image cases at R < S
    check_fixture_head<double>(1e-12);
}

TEST_CASE("losses, their gradients and targets match PyTorch in float (1e-5)", "[heads][fixture]") {
    const auto r = check_all_fixture_cases<float>(1e-5, std::make_index_sequence<36>{});
    CHECK(r.checked == 36);
    check_fixture_head<float>(1e-5);
}

// ---------------------------------------------------------------------------------------------------
// 2. finite differences

namespace {
// The small model of test_model.cpp: 8x8 images, 2 channels, patch 2 (token grid 4), D = 8, 2 blocks.
constexpr ViTConfig kSmall{8, 2, 2, 8, 2, 2, 4};
constexpr MaskSpec kSmallMask{4, 0.5};

/// Every parameter gradient and d features of a head against central differences of sum(pred * v).
template <class HeadT>
void check_head_gradients(std::uint64_t seed) {
    constexpr int B = 2, L = kSmall.num_patches(), D = kSmall.embed_dim, R = HeadT::out_size;
    ParamArena<double> arena;
    HeadT head(arena);
    arena.allocate();
    arena.initialize(seed);
    Rng rng(seed + 1);
    for (std::size_t i = 0; i < arena.size(); ++i) arena.values()[i] += 0.3 * rng.normal();  // non-trivial biases
    auto features = test::random_vector(static_cast<std::size_t>(B) * L * D, seed + 2);
    const auto v = test::random_vector(static_cast<std::size_t>(B) * kSmall.in_chans * R * R, seed + 3);
    std::vector<double> pred(v.size());
    auto f = [&] {
        head.forward(pred.data(), features.data(), B);
        return test::dot(pred, v);
    };
    f();
    arena.zero_grad();
    std::vector<double> dfeatures(features.size());
    head.backward(dfeatures.data(), v.data());
    const std::vector<double> grads(arena.grads(), arena.grads() + arena.size());
    for (const auto& p : arena.params()) {
        const auto numeric = test::numeric_gradient(arena.values() + p.offset, p.size, f);
        const double err = test::relative_error(grads.data() + p.offset, numeric, p.size);
        INFO(p.name << " relative error " << err);
        CHECK(err < 1e-7);
    }
    const auto numeric = test::numeric_gradient(features.data(), features.size(), f);
    INFO("features");
    CHECK(test::relative_error(dfeatures, numeric, features.size()) < 1e-7);
}

template <LossSpec Spec, int Hidden = 5>
using SmallMLPModel = SimMIM<ViTEncoder<double, kSmall>, MLPHead<double, kSmall, Hidden, ReconstructionLoss<double, kSmall, Spec>::resolution>,
                             ReconstructionLoss<double, kSmall, Spec>, RandomMaskPatch>;

/// d f along a random direction and for up to 8 entries (the largest |grad| and random ones) of the tensor
/// x (n) against central differences: a whole-model check that stays cheap (the full one is test_model.cpp's).
void check_tensor_gradient(double* x, const double* grad, std::size_t n, const std::function<double()>& f, std::uint64_t seed) {
    const double h = 1e-6;
    const auto dir = test::random_vector(n, seed);
    double analytic = 0, gnorm = 0;
    for (std::size_t i = 0; i < n; ++i) analytic += grad[i] * dir[i], gnorm += grad[i] * grad[i];
    const std::vector<double> saved(x, x + n);
    for (std::size_t i = 0; i < n; ++i) x[i] = saved[i] + h * dir[i];
    const double fp = f();
    for (std::size_t i = 0; i < n; ++i) x[i] = saved[i] - h * dir[i];
    const double fm = f();
    std::copy(saved.begin(), saved.end(), x);
    const double scale = std::sqrt(gnorm) * std::sqrt(test::dot(dir, dir));  // |<grad, dir>| <= scale
    CHECK(std::abs((fp - fm) / (2 * h) - analytic) <= 1e-6 * scale + 1e-12);
    std::vector<std::size_t> picks{static_cast<std::size_t>(std::max_element(grad, grad + n, [](double a, double b) {
                                                                  return std::abs(a) < std::abs(b);
                                                              }) - grad)};
    Rng rng(seed + 1);
    for (int k = 0; k < 7 && picks.size() < n; ++k) picks.push_back(static_cast<std::size_t>(rng.uniform() * double(n)) % n);
    std::vector<double> numeric, analytic_picks;
    for (const std::size_t i : picks) {
        numeric.push_back(test::numeric_gradient(x + i, 1, f, h)[0]);
        analytic_picks.push_back(grad[i]);
    }
    CHECK(test::relative_error(analytic_picks, numeric, picks.size()) < 1e-6);
}

/// Whole-model gradients (every parameter tensor; the input image when the target has a gradient).
template <LossSpec Spec>
void check_model_gradients() {
    using Model = SmallMLPModel<Spec>;
    INFO("loss " << case_name(LossSpec{Spec.norm, Spec.region, Spec.target, Model::pred_size, Spec.norm_window}));
    auto model = std::make_unique<Model>(random_mask_patch<kSmall, kSmallMask>(), 7);
    // Perturb every parameter, the head's strongly: with 0.02-scale head weights the encoder's gradients
    // would be too small for finite differences to resolve.
    Rng rng(99);
    for (const auto& p : model->params().params()) {
        const double noise = p.name.starts_with("decoder.") ? 0.4 : 0.05;
        for (std::size_t i = 0; i < p.size; ++i) model->params().values()[p.offset + i] += noise * rng.normal();
    }
    const int B = 2;
    auto images = test::random_vector(B * kSmall.image_numel(), 3);
    std::vector<double> mask(B * kSmall.num_patches());
    model->draw_mask(11, 0, B, mask.data());
    model->zero_grad();
    std::vector<double> dimages(images.size(), 0.0);
    model->forward(images.data(), mask.data(), B);
    REQUIRE(model->pred().size() == static_cast<std::size_t>(B) * kSmall.in_chans * Model::pred_size * Model::pred_size);
    model->backward(dimages.data());
    const std::vector<double> grads(model->params().grads(), model->params().grads() + model->params().size());
    auto f = [&] { return model->forward(images.data(), mask.data(), B); };
    std::uint64_t seed = 1000;
    for (const auto& p : model->params().params()) {
        INFO(p.name);
        check_tensor_gradient(model->params().values() + p.offset, grads.data() + p.offset, p.size, f, seed++);
    }
    if constexpr (ReconstructionLoss<double, kSmall, Spec>::target_gradient) {
        const auto numeric = test::numeric_gradient(images.data(), images.size(), f);
        INFO("input image");
        CHECK(test::relative_error(dimages, numeric, images.size()) < 1e-6);
    }
}
}  // namespace

TEST_CASE("MLP head: registered names and shapes, initialisation like the linear head", "[heads]") {
    ParamArena<float> arena;
    MLPHead<float, presets::vit_tiny_test, 20, 8> head(arena);  // D 32 -> 20 -> r*r*C = 2*2*3
    arena.allocate();
    arena.initialize(3);
    REQUIRE(arena.params().size() == 4);
    CHECK(arena.find("decoder.0.weight")->shape == std::vector<std::int64_t>{20, 32, 1, 1});
    CHECK(arena.find("decoder.0.bias")->shape == std::vector<std::int64_t>{20});
    CHECK(arena.find("decoder.2.weight")->shape == std::vector<std::int64_t>{12, 20, 1, 1});
    CHECK(arena.find("decoder.2.bias")->shape == std::vector<std::int64_t>{12});
    for (const auto& p : arena.params()) {
        INFO(p.name);
        const bool weight = p.shape.size() == 4;
        CHECK(p.weight_decay == weight);
        CHECK(p.init == (weight ? Init::TruncNormal002 : Init::Zeros));
    }
    STATIC_REQUIRE(MLPHead<float, presets::vit_tiny_test>::out_size == 16);
    STATIC_REQUIRE(MLPHead<float, presets::vit_tiny_test>::H == 32);
    STATIC_REQUIRE(LinearHead<float, presets::vit_tiny_test, 4>::P == 3);  // R = g: one pixel per token
}

TEST_CASE("MLP head and linear head at R < S: gradients match finite differences", "[heads][gradcheck]") {
    check_head_gradients<MLPHead<double, kSmall, 5>>(1);      // R = S = 8, r = 2
    check_head_gradients<MLPHead<double, kSmall, 6, 4>>(2);   // R = g = 4, r = 1
    check_head_gradients<LinearHead<double, kSmall, 4>>(3);   // R = g
    check_head_gradients<LinearHead<double, kSmall, 8>>(4);   // the official head, for comparison
}

TEST_CASE("whole models with an MLP head and each loss: gradients match finite differences", "[heads][gradcheck]") {
    check_model_gradients<LossSpec{LossNorm::L1, LossRegion::Masked, LossTarget::Raw, 4}>();
    check_model_gradients<LossSpec{LossNorm::L2, LossRegion::All, LossTarget::Raw, 8}>();
    check_model_gradients<LossSpec{LossNorm::L2, LossRegion::Masked, LossTarget::Raw, 8}>();
    check_model_gradients<LossSpec{LossNorm::L1, LossRegion::All, LossTarget::Normalized, 8, 3}>();
    check_model_gradients<LossSpec{LossNorm::L2, LossRegion::Masked, LossTarget::Normalized, 4, 5}>();
    check_model_gradients<LossSpec{LossNorm::L1, LossRegion::Masked, LossTarget::Normalized, 8, 47}>();
}

TEST_CASE("area downsampling: block means, and the backward is its adjoint", "[heads]") {
    const int B = 2, C = 3, S = 12;
    for (const int R : {12, 6, 4, 3, 1}) {
        INFO("R " << R);
        const int k = S / R;
        const auto x = test::random_vector(static_cast<std::size_t>(B) * C * S * S, 5);
        std::vector<double> y(static_cast<std::size_t>(B) * C * R * R);
        ops::area_downsample_forward(y.data(), x.data(), B, C, S, R);
        double worst = 0;
        for (int pc = 0; pc < B * C; ++pc)
            for (int oy = 0; oy < R; ++oy)
                for (int ox = 0; ox < R; ++ox) {
                    double s = 0;
                    for (int i = 0; i < k; ++i)
                        for (int j = 0; j < k; ++j) s += x[(static_cast<std::size_t>(pc) * S + oy * k + i) * S + ox * k + j];
                    worst = std::max(worst, std::abs(s / (k * k) - y[(static_cast<std::size_t>(pc) * R + oy) * R + ox]));
                }
        CHECK(worst < 1e-14);
        // <down(x), w> == <x, down^T(w)>
        const auto w = test::random_vector(y.size(), 6);
        std::vector<double> dx(x.size(), 0.0);
        ops::area_downsample_backward(dx.data(), w.data(), B, C, S, R);
        CHECK(test::dot(y, w) == Approx(test::dot(x, dx)).epsilon(1e-13));
    }
    std::vector<float> img(2 * 3 * 10 * 10), out(2 * 3 * 4 * 4);
    CHECK_THROWS_WITH(ops::area_downsample_forward(out.data(), img.data(), 2, 3, 10, 4),
                      Catch::Contains("multiple of the target size R") && Catch::Contains("S=10 R=4"));
}

// ---------------------------------------------------------------------------------------------------
// 3. window statistics

TEST_CASE("window mean / variance: the O(1)-per-pixel version equals the brute-force one", "[heads]") {
    for (const double offset : {0.0, 1000.0})
        for (const int R : {2, 3, 5, 16, 23})
            for (const int window : {3, 5, 7, 47}) {
                INFO("R " << R << " window " << window << " offset " << offset);
                auto plane = test::random_vector(static_cast<std::size_t>(R) * R, 100 + R + window);
                for (auto& v : plane) v += offset;
                const std::size_t n = plane.size();
                std::vector<double> mean(n), var(n), mean_ref(n), var_ref(n);
                ops::window_mean_var(mean.data(), var.data(), plane.data(), R, window);
                ops::window_mean_var_reference(mean_ref.data(), var_ref.data(), plane.data(), R, window);
                double worst_mean = 0, worst_var = 0;
                for (std::size_t i = 0; i < n; ++i) {
                    worst_mean = std::max(worst_mean, std::abs(mean[i] - mean_ref[i]) / (1 + std::abs(mean_ref[i])));
                    worst_var = std::max(worst_var, std::abs(var[i] - var_ref[i]) / var_ref[i]);
                }
                CHECK(worst_mean < 1e-14);
                CHECK(worst_var < 1e-12);
                if (window >= 2 * R - 1) {  // every window covers the plane: one mean and variance everywhere
                    for (std::size_t i = 1; i < n; ++i) REQUIRE(mean_ref[i] == Approx(mean_ref[0]).epsilon(1e-14));
                }
            }
    // a float plane is read exactly and its statistics computed in double
    std::vector<float> fplane(49);
    for (std::size_t i = 0; i < fplane.size(); ++i) fplane[i] = float(1000 + 0.001 * double((i * 37) % 11));
    std::vector<double> m(49), v(49), mr(49), vr(49);
    ops::window_mean_var(m.data(), v.data(), fplane.data(), 7, 3);
    ops::window_mean_var_reference(mr.data(), vr.data(), fplane.data(), 7, 3);
    for (std::size_t i = 0; i < 49; ++i) REQUIRE(std::abs(v[i] - vr[i]) <= 1e-9 * vr[i]);
}

TEST_CASE("normalised target: fast equals the brute-force statistics; bad windows are rejected", "[heads]") {
    const int B = 2, C = 3, R = 9;
    const auto x = test::random_vector(static_cast<std::size_t>(B) * C * R * R, 8, 2.0);
    for (const int window : {3, 5, 47}) {
        std::vector<double> out(x.size()), ref(x.size());
        ops::normalize_target(out.data(), x.data(), B, C, R, window);
        std::vector<double> mean(R * R), var(R * R);
        for (int pc = 0; pc < B * C; ++pc) {
            ops::window_mean_var_reference(mean.data(), var.data(), x.data() + pc * R * R, R, window);
            for (int i = 0; i < R * R; ++i) ref[pc * R * R + i] = (x[pc * R * R + i] - mean[i]) / std::sqrt(var[i] + 1e-6);
        }
        CHECK(test::relative_error(out, ref, ref.size()) < 1e-13);
        std::vector<double> inplace = x;  // out may be in
        ops::normalize_target(inplace.data(), inplace.data(), B, C, R, window);
        CHECK(inplace == out);
        std::vector<float> xf(x.begin(), x.end()), outf(x.size());
        ops::normalize_target(outf.data(), xf.data(), B, C, R, window);
        CHECK(test::relative_error(outf, ref, ref.size()) < 1e-6);
    }
    std::vector<double> out(x.size());
    CHECK_THROWS_WITH(ops::normalize_target(out.data(), x.data(), B, C, R, 4),
                      Catch::Contains("odd window >= 3") && Catch::Contains("window=4"));
    CHECK_THROWS_WITH(ops::normalize_target(out.data(), x.data(), B, C, 1, 3), Catch::Contains("R=1"));
}

TEST_CASE("generic pixel loss: masked L1 equals ops::masked_l1; results do not depend on the thread count", "[heads]") {
    const int B = 4, C = 3, R = 96, r = 8, g = R / r;  // 110k values: the parallel path
    const auto pred = test::random_vector(static_cast<std::size_t>(B) * C * R * R, 21);
    const auto target = test::random_vector(pred.size(), 22);
    std::vector<double> mask(static_cast<std::size_t>(B) * g * g);
    Rng rng(23);
    for (auto& m : mask) m = rng.uniform() < 0.4 ? 1.0 : 0.0;
    const double a = ops::pixel_loss_forward<false, true>(pred.data(), target.data(), mask.data(), B, C, R, r);
    const double b = ops::masked_l1_forward(pred.data(), target.data(), mask.data(), B, C, R, r);
    CHECK(a == Approx(b).epsilon(1e-13));
    std::vector<double> da(pred.size(), 0.0), db(pred.size(), 0.0), dta(pred.size(), 0.0), dtb(pred.size(), 0.0);
    ops::pixel_loss_backward<false, true>(da.data(), dta.data(), 0.7, pred.data(), target.data(), mask.data(), B, C, R, r);
    ops::masked_l1_backward(db.data(), dtb.data(), 0.7, pred.data(), target.data(), mask.data(), B, C, R, r);
    CHECK(test::relative_error(da, db, db.size()) < 1e-14);
    CHECK(test::relative_error(dta, dtb, dtb.size()) < 1e-14);

    std::vector<float> pf(pred.begin(), pred.end()), tf(target.begin(), target.end()), mf(mask.begin(), mask.end());
    auto run = [&](int threads) {
#ifdef _OPENMP
        const int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
#else
        (void)threads;
#endif
        std::vector<float> out(pf.size()), d(pf.size(), 0.0f);
        const float l2 = ops::pixel_loss_forward<true, false>(pf.data(), tf.data(), mf.data(), B, C, R, r);
        ops::pixel_loss_backward<true, false>(d.data(), static_cast<float*>(nullptr), 1.0f, pf.data(), tf.data(), mf.data(), B, C, R, r);
        ops::normalize_target(out.data(), pf.data(), B, C, R, 47);
        const float l1 = ops::pixel_loss_forward<false, false>(pf.data(), out.data(), mf.data(), B, C, R, r);
#ifdef _OPENMP
        omp_set_num_threads(saved);
#endif
        out.push_back(l2);
        out.push_back(l1);
        out.insert(out.end(), d.begin(), d.end());
        return out;
    };
    const auto one = run(1), three = run(3);
    CHECK(std::memcmp(one.data(), three.data(), one.size() * sizeof(float)) == 0);
}

// ---------------------------------------------------------------------------------------------------
// 4. the defaults are today's model, bit for bit

namespace {
template <class T>
void check_default_types_bit_identical() {
    constexpr ViTConfig C = presets::vit_tiny_test;
    using Today = ViTSimMIM<T, C>;
    using Spelled = SimMIM<ViTEncoder<T, C>, LinearHead<T, C, C.image_size>, ReconstructionLoss<T, C, LossSpec{}>, RandomMaskPatch>;
    STATIC_REQUIRE_FALSE(std::is_same_v<Today, Spelled>);  // MaskedL1Loss is its own (unchanged) type
    STATIC_REQUIRE(Spelled::pred_size == C.image_size);
    auto today = std::make_unique<Today>(random_mask_patch<C, presets::mask_of<C>()>(), 5);
    auto spelled = std::make_unique<Spelled>(random_mask_patch<C, presets::mask_of<C>()>(), 5);
    const int B = 3;
    std::vector<T> images, mask(static_cast<std::size_t>(B) * C.num_patches());
    std::vector<T> d1(static_cast<std::size_t>(B) * C.image_numel(), T(0)), d2(d1.size(), T(0));
    for (int step = 0; step < 4; ++step) {  // new images and masks each step, gradients accumulated
        const auto img = test::random_vector(static_cast<std::size_t>(B) * C.image_numel(), 9 + step);
        images.assign(img.begin(), img.end());
        today->draw_mask(4, step, B, mask.data());
        today->zero_grad();
        spelled->zero_grad();
        const T l1 = today->forward(images.data(), mask.data(), B);
        const T l2 = spelled->forward(images.data(), mask.data(), B);
        today->backward(d1.data());
        spelled->backward(d2.data());
        CHECK(std::memcmp(&l1, &l2, sizeof(T)) == 0);
    }
    REQUIRE(today->pred().size() == spelled->pred().size());
    CHECK(std::memcmp(today->pred().data(), spelled->pred().data(), today->pred().size() * sizeof(T)) == 0);
    REQUIRE(today->params().size() == spelled->params().size());
    CHECK(std::memcmp(today->params().grads(), spelled->params().grads(), today->params().size() * sizeof(T)) == 0);
    CHECK(std::memcmp(d1.data(), d2.data(), d1.size() * sizeof(T)) == 0);
}
}  // namespace

TEST_CASE("default head and loss types reproduce ViTSimMIM bit for bit", "[heads]") {
    check_default_types_bit_identical<float>();
    check_default_types_bit_identical<double>();
}

TEST_CASE("the default ReconstructionLoss is MaskedL1Loss bit for bit, forward and backward", "[heads]") {
    constexpr ViTConfig C = presets::vit_t16_224;  // 224 px, 3 channels, patch 16: long rows and planes
    const int B = 2;
    const MaskedL1Loss<float, C> today;
    const ReconstructionLoss<float, C> spelled;
    for (std::uint64_t seed = 0; seed < 4; ++seed) {
        INFO("seed " << seed);
        const auto p = test::random_vector(static_cast<std::size_t>(B) * C.image_numel(), 30 + seed);
        const auto t = test::random_vector(p.size(), 40 + seed);
        const std::vector<float> pred(p.begin(), p.end()), target(t.begin(), t.end());
        std::vector<float> mask(static_cast<std::size_t>(B) * C.num_patches());
        Rng rng(50 + seed);
        for (auto& m : mask) m = rng.uniform() < 0.6 ? 1.0f : 0.0f;
        const float l1 = today.forward(pred.data(), target.data(), mask.data(), B);
        const float l2 = spelled.forward(pred.data(), target.data(), mask.data(), B);
        CHECK(std::memcmp(&l1, &l2, sizeof(float)) == 0);
        std::vector<float> dp1(pred.size(), 0.5f), dp2 = dp1, dt1(pred.size(), 0.25f), dt2 = dt1;
        today.backward(dp1.data(), dt1.data(), 0.75f, pred.data(), target.data(), mask.data(), B);
        spelled.backward(dp2.data(), dt2.data(), 0.75f, pred.data(), target.data(), mask.data(), B);
        CHECK(std::memcmp(dp1.data(), dp2.data(), dp1.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(dt1.data(), dt2.data(), dt1.size() * sizeof(float)) == 0);
    }
}

TEST_CASE("backward without a forward of the same batch is a clear error", "[heads]") {
    using Loss = ReconstructionLoss<double, kFix, LossSpec{.resolution = 8}>;
    const Loss loss;
    std::vector<double> pred(2 * 2 * 8 * 8), img(2 * 2 * 16 * 16), mask(2 * 16), d(pred.size());
    CHECK_THROWS_WITH(loss.backward(d.data(), nullptr, 1.0, pred.data(), img.data(), mask.data(), 2),
                      Catch::Contains("expected a forward() with batch 2 first, found none"));
}
