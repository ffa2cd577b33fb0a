// The official SimMIM ViT (BEiT-derived: shared relative position bias, q/v bias, layer scale, drop path):
// the biased attention op against its scalar reference and finite differences, the whole model's
// gradients against finite differences (drop path off and on), the PyTorch float64/float32 fixture of
// tests/pytorch/make_official_fixture.py, initialisation statistics against closed forms, drop path
// statistics and determinism, and the weights round trip.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <filesystem>
#include <map>
#include <numbers>
#include <set>
#include <sstream>

#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "gradcheck.hpp"
#include "simmim/io/model_io.hpp"
#include "simmim/model/vit_official.hpp"
#include "simmim/ops/attention_bias.hpp"
#include "skip.hpp"

#ifndef SIMMIM_SOURCE_DIR
#error "SIMMIM_SOURCE_DIR must point at the source tree (set by tests/CMakeLists.txt)"
#endif

using namespace simmim;

namespace {
// Small enough for exhaustive finite differences (as tests/test_model.cpp): 2 channels, 2 heads,
// 2 blocks sharing the bias table, mask patch larger than the model patch.
constexpr ViTConfig kSmall{8, 2, 2, 8, 2, 2, 4};
constexpr MaskSpec kSmallMask{4, 0.5};
// The configuration of tests/fixtures/vit_official_tiny.safetensors (3 heads of 8).
constexpr ViTConfig kFix{16, 3, 4, 24, 2, 3, 4};
constexpr MaskSpec kFixMask{8, 0.6};
// Four blocks for the drop path statistics: r_i = 0, r/3, 2r/3, r.
constexpr ViTConfig kDeep{8, 2, 2, 8, 4, 2, 4};
constexpr MaskSpec kDeepMask{4, 0.5};

static_assert(Encoder<OfficialViTEncoder<float, presets::vit_t4_32>>);
static_assert(Encoder<OfficialViTEncoder<double, kSmall>>);

const io::TensorFile& fixture() {
    static const io::TensorFile f = io::read_safetensors(SIMMIM_SOURCE_DIR "/tests/fixtures/vit_official_tiny.safetensors");
    return f;
}

template <class T>
struct FixtureModel {
    OfficialViTSimMIM<T, kFix> model{random_mask_patch<kFix, kFixMask>(), 0};
    std::vector<T> images, mask;
    FixtureModel() {
        io::LoadOptions options;
        options.allow_unexpected = true;  // inputs, outputs and gradients share the file
        io::import_params(model.params(), fixture(), options);
        images = fixture().at("images").template to<T>();
        mask = fixture().at("mask").template to<T>();
        REQUIRE(images.size() == 2 * kFix.image_numel());
        REQUIRE(mask.size() == 2 * kFix.num_patches());
    }
};

/// Perturbs every parameter so that biases, the table and the LayerNorms are all non-trivial; the layer
/// scales become 0.5 + N(0, 0.2) and the table N(0, 0.5), so that the attention gradients are not
/// dwarfed by the residual path (as in the PyTorch fixture).
template <class Model>
void perturb(Model& model, std::uint64_t seed, double scale) {
    Rng rng(seed);
    auto& arena = model.params();
    for (std::size_t i = 0; i < arena.size(); ++i) arena.values()[i] += scale * rng.normal();
    for (const auto& p : arena.params()) {
        const bool gamma = p.name.find("gamma_") != std::string::npos, table = p.name.find("bias_table") != std::string::npos;
        if (!gamma && !table) continue;
        for (std::size_t i = 0; i < p.size; ++i) arena.values()[p.offset + i] = (gamma ? 0.5 : 0.0) + (gamma ? 0.2 : 0.5) * rng.normal();
    }
}

template <class Model>
void check_whole_model_gradients(Model& model, int B) {
    constexpr ViTConfig C = Model::encoder_type::config;
    auto images = test::random_vector(static_cast<std::size_t>(B) * C.image_numel(), 3);
    std::vector<double> mask(static_cast<std::size_t>(B) * C.num_patches());
    model.draw_mask(11, 0, B, mask.data());
    model.zero_grad();
    std::vector<double> dimages(images.size(), 0.0);
    model.forward(images.data(), mask.data(), B);
    model.backward(dimages.data());
    const std::vector<double> grads(model.params().grads(), model.params().grads() + model.params().size());
    auto f = [&] { return model.forward(images.data(), mask.data(), B); };
    // h = 1e-4: q_bias and the table have gradients of norm ~1e-4 (softmax is nearly shift-invariant
    // for small weights), where the default h = 1e-6 leaves ~1e-6 relative rounding noise; the
    // truncation error at 1e-4 stays below 1e-9 relative.
    constexpr double h = 1e-4;
    for (const auto& p : model.params().params()) {
        double* v = model.params().values() + p.offset;
        const auto numeric = test::numeric_gradient(v, p.size, f, h);
        const double err = test::relative_error(grads.data() + p.offset, numeric, p.size);
        INFO(p.name << " relative error " << err);
        CHECK(err < 1e-6);
    }
    const auto numeric_img = test::numeric_gradient(images.data(), images.size(), f, h);
    INFO("input image");
    CHECK(test::relative_error(dimages, numeric_img, images.size()) < 1e-6);
}

/// Standard deviation of N(0, s^2) truncated to [-s, s]: s * sqrt(1 - 2 phi(1) / (2 Phi(1) - 1)).
double trunc_normal_one_sigma_std(double s) {
    const double phi1 = std::exp(-0.5) / std::sqrt(2.0 * std::numbers::pi);
    const double mass = std::erf(1.0 / std::sqrt(2.0));  // 2 Phi(1) - 1
    return s * std::sqrt(1.0 - 2.0 * phi1 / mass);
}

std::vector<std::string> split_commas(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream in(s);
    for (std::string item; std::getline(in, item, ',');) out.push_back(item);
    return out;
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// The attention op with an additive bias
// ---------------------------------------------------------------------------------------------

TEST_CASE("relative_position_index equals PyTorch's (BEiT) buffer and the closed-form corners", "[official][ops]") {
    const auto want = fixture().at("relative_position_index").to<std::int64_t>();
    const auto got = ops::relative_position_index(kFix.grid());
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == want[i]);
    const int g = 4, N = g * g + 1, R = ops::relative_position_table_rows(g);
    CHECK(R == 52);
    CHECK(got[0] == R - 1);                   // cls -> cls
    CHECK(got[5] == R - 3);                   // cls -> token
    CHECK(got[5 * N] == R - 2);               // token -> cls
    CHECK(got[1 * N + 1] == (g - 1) * (2 * g - 1) + (g - 1));  // a token to itself: offset (0, 0)
    CHECK_THROWS_AS(ops::relative_position_index(0), std::invalid_argument);
}

TEST_CASE("attention_bias: fast path equals the scalar reference (forward, backward, float and double)", "[official][ops]") {
    const int B = 3, N = 29, H = 3, Dh = 12, D = H * Dh;
    auto check = [&]<class T>(T, double tol) {
        const auto qkv_d = test::random_vector(static_cast<std::size_t>(B) * N * 3 * D, 1);
        const auto bias_d = test::random_vector(static_cast<std::size_t>(H) * N * N, 2, 0.7);
        const auto dout_d = test::random_vector(static_cast<std::size_t>(B) * N * D, 3);
        const std::vector<T> qkv(qkv_d.begin(), qkv_d.end()), bias(bias_d.begin(), bias_d.end()), dout(dout_d.begin(), dout_d.end());
        std::vector<T> out(B * N * D), out_ref(B * N * D), lse(B * H * N), lse_ref(B * H * N);
        ops::attention_bias_forward(out.data(), lse.data(), qkv.data(), bias.data(), B, N, H, Dh);
        ops::attention_bias_forward_reference(out_ref.data(), lse_ref.data(), qkv.data(), bias.data(), B, N, H, Dh);
        CHECK(test::relative_error(out, out_ref, out.size()) < tol);
        CHECK(test::relative_error(lse, lse_ref, lse.size()) < tol);
        // backward accumulates: start both from the same non-zero values
        const auto init_d = test::random_vector(qkv.size(), 4);
        const auto init_b = test::random_vector(bias.size(), 5);
        std::vector<T> dqkv(init_d.begin(), init_d.end()), dqkv_ref = dqkv;
        std::vector<T> dbias(init_b.begin(), init_b.end()), dbias_ref = dbias;
        ops::attention_bias_backward(dqkv.data(), dbias.data(), dout.data(), qkv.data(), out.data(), lse.data(), bias.data(), B, N, H, Dh);
        ops::attention_bias_backward_reference(dqkv_ref.data(), dbias_ref.data(), dout.data(), qkv.data(), out_ref.data(), lse_ref.data(),
                                               bias.data(), B, N, H, Dh);
        CHECK(test::relative_error(dqkv, dqkv_ref, dqkv.size()) < tol);
        CHECK(test::relative_error(dbias, dbias_ref, dbias.size()) < tol);
    };
    SECTION("double") { check(double{}, 1e-13); }
    SECTION("float") { check(float{}, 2e-6); }
}

TEST_CASE("attention_bias reference backward matches finite differences (qkv and bias)", "[official][ops][gradcheck]") {
    const int B = 2, N = 5, H = 2, Dh = 3, D = H * Dh;
    auto qkv = test::random_vector(static_cast<std::size_t>(B) * N * 3 * D, 7);
    auto bias = test::random_vector(static_cast<std::size_t>(H) * N * N, 8);
    const auto w = test::random_vector(static_cast<std::size_t>(B) * N * D, 9);  // loss = sum(out * w)
    std::vector<double> out(B * N * D), lse(B * H * N);
    auto f = [&] {
        ops::attention_bias_forward_reference(out.data(), lse.data(), qkv.data(), bias.data(), B, N, H, Dh);
        return test::dot(out, w);
    };
    f();
    std::vector<double> dqkv(qkv.size(), 0.0), dbias(bias.size(), 0.0);
    ops::attention_bias_backward_reference(dqkv.data(), dbias.data(), w.data(), qkv.data(), out.data(), lse.data(), bias.data(), B, N, H, Dh);
    CHECK(test::relative_error(dqkv, test::numeric_gradient(qkv.data(), qkv.size(), f), qkv.size()) < 1e-8);
    CHECK(test::relative_error(dbias, test::numeric_gradient(bias.data(), bias.size(), f), bias.size()) < 1e-8);
}

TEST_CASE("attention_bias backward: dbias and dqkv are bit-identical for 1 and several threads", "[official][ops]") {
#ifdef _OPENMP
    const int B = 11, N = 65, H = 3, Dh = 16, D = H * Dh;  // large enough to take the parallel path
    const auto qkv_d = test::random_vector(static_cast<std::size_t>(B) * N * 3 * D, 1);
    const auto bias_d = test::random_vector(static_cast<std::size_t>(H) * N * N, 2);
    const auto dout_d = test::random_vector(static_cast<std::size_t>(B) * N * D, 3);
    const std::vector<float> qkv(qkv_d.begin(), qkv_d.end()), bias(bias_d.begin(), bias_d.end()), dout(dout_d.begin(), dout_d.end());
    std::vector<float> out(B * N * D), lse(B * H * N);
    ops::attention_bias_forward(out.data(), lse.data(), qkv.data(), bias.data(), B, N, H, Dh);
    auto run = [&](int threads) {
        const int saved = omp_get_max_threads();
        omp_set_num_threads(threads);
        std::vector<float> dqkv(qkv.size(), 0.f), dbias(bias.size(), 0.f);
        ops::attention_bias_backward(dqkv.data(), dbias.data(), dout.data(), qkv.data(), out.data(), lse.data(), bias.data(), B, N, H, Dh);
        omp_set_num_threads(saved);
        dqkv.insert(dqkv.end(), dbias.begin(), dbias.end());
        return dqkv;
    };
    const auto one = run(1), three = run(3);
    CHECK(one == three);
#else
    SIMMIM_SKIP("built without OpenMP: there is only one thread count");
#endif
}

// ---------------------------------------------------------------------------------------------
// Whole model
// ---------------------------------------------------------------------------------------------

TEST_CASE("official ViT: whole-model gradients match finite differences, drop path off", "[official][gradcheck]") {
    OfficialViTSimMIM<double, kSmall> model(random_mask_patch<kSmall, kSmallMask>(), 7);
    perturb(model, 99, 0.05);
    check_whole_model_gradients(model, 2);
}

TEST_CASE("official ViT: whole-model gradients match finite differences, drop path on", "[official][gradcheck][drop_path]") {
    OfficialViTSimMIM<double, kSmall> model(random_mask_patch<kSmall, kSmallMask>(), 7);
    perturb(model, 99, 0.05);
    const int B = 3;
    // rate 0.5: block 1 drops each branch of each sample with probability 0.5. Pick the first seed whose
    // draws drop some branches and keep others (the draws are a pure function of seed, step, block, sample).
    std::uint64_t seed = 0;
    for (;; ++seed) {
        int dropped = 0;
        for (int branch = 0; branch < 2; ++branch)
            for (int b = 0; b < B; ++b) dropped += ops::drop_path_scale(0.5, seed, 5, 1, branch, b) == 0.0;
        if (dropped >= 2 && dropped <= 2 * B - 2) break;
    }
    model.encoder().set_drop_path(0.5, seed, 5);
    check_whole_model_gradients(model, B);
    int dropped = 0;
    for (int branch = 0; branch < 2; ++branch)
        for (double s : model.encoder().drop_path_factors(1, branch)) {
            CHECK((s == 0.0 || s == 2.0));
            dropped += s == 0.0;
        }
    CHECK(dropped >= 2);
    for (int branch = 0; branch < 2; ++branch)
        for (double s : model.encoder().drop_path_factors(0, branch)) CHECK(s == 1.0);  // r_0 = 0
}

TEST_CASE("official ViT: double matches the PyTorch float64 fixture (rel. L2 <= 1e-10)", "[official][fixture]") {
    FixtureModel<double> m;
    m.model.zero_grad();
    const double loss = m.model.forward(m.images.data(), m.mask.data(), 2);
    m.model.backward();
    const double ref_loss = fixture().at("loss").to<double>().at(0);
    CHECK(std::abs(loss - ref_loss) / ref_loss <= 1e-10);
    const auto pred = fixture().at("pred").to<double>();
    CHECK(test::relative_error(m.model.pred(), pred, pred.size()) <= 1e-10);
    for (const auto& p : m.model.params().params()) {
        const auto ref = fixture().at("grad." + p.name).to<double>();
        REQUIRE(ref.size() == p.size);
        const double err = test::relative_error(m.model.params().grads() + p.offset, ref, p.size);
        INFO("grad." << p.name << " relative error " << err);
        CHECK(err <= 1e-10);
    }
}

TEST_CASE("official ViT: float matches PyTorch float32 (pred, loss) and float64 (gradients) to 1e-4", "[official][fixture]") {
    FixtureModel<float> m;
    m.model.zero_grad();
    const float loss = m.model.forward(m.images.data(), m.mask.data(), 2);
    m.model.backward();
    const double ref_loss = fixture().at("loss32").to<double>().at(0);
    CHECK(std::abs(loss - ref_loss) / ref_loss <= 1e-4);
    const auto pred = fixture().at("pred32").to<double>();
    CHECK(test::relative_error(m.model.pred(), pred, pred.size()) <= 1e-4);
    for (const auto& p : m.model.params().params()) {
        const auto ref = fixture().at("grad." + p.name).to<double>();
        const double err = test::relative_error(m.model.params().grads() + p.offset, ref, p.size);
        INFO("grad." << p.name << " relative error " << err);
        CHECK(err <= 1e-4);
    }
}

TEST_CASE("official ViT: names, shapes, order and weight-decay groups equal the official PyTorch model's", "[official][fixture]") {
    OfficialViTSimMIM<float, kFix> model(random_mask_patch<kFix, kFixMask>(), 0);
    const auto& params = model.params().params();
    const auto& file_names = fixture().names();  // parameters first, in PyTorch state-dict order
    REQUIRE(file_names.size() > params.size());
    for (std::size_t i = 0; i < params.size(); ++i) {
        INFO(i);
        CHECK(params[i].name == file_names[i]);
        CHECK(params[i].shape == fixture().at(file_names[i]).shape);
    }
    const auto no_decay = split_commas(fixture().metadata.at("no_decay"));
    const auto decay = split_commas(fixture().metadata.at("decay"));
    CHECK(no_decay.size() + decay.size() == params.size());
    const std::set<std::string> no_decay_set(no_decay.begin(), no_decay.end());
    for (const auto& p : params) {
        INFO(p.name);
        CHECK(p.weight_decay == (no_decay_set.count(p.name) == 0));
    }
    CHECK(model.params().find("encoder.pos_embed") == nullptr);
    CHECK(model.params().find("encoder.blocks.0.attn.qkv.bias") == nullptr);
    CHECK(model.params().find("encoder.rel_pos_bias.relative_position_index") == nullptr);
}

TEST_CASE("official ViT: initialisation (gamma 0.1, zero table, weights within +-0.02 with the layer factors)", "[official][init]") {
    constexpr ViTConfig C = presets::vit_t4_32;  // D 192, 12 blocks: enough draws for the statistics
    using M = OfficialViTSimMIM<double, C>;
    auto a = std::make_unique<M>(random_mask_patch<C, presets::mask_of<C>()>(), 5);
    auto b = std::make_unique<M>(random_mask_patch<C, presets::mask_of<C>()>(), 5);
    auto c = std::make_unique<M>(random_mask_patch<C, presets::mask_of<C>()>(), 6);
    const auto& A = a->params();
    CHECK(std::equal(A.values(), A.values() + A.size(), b->params().values()));
    CHECK_FALSE(std::equal(A.values(), A.values() + A.size(), c->params().values()));
    const double sigma = trunc_normal_one_sigma_std(0.02);  // 0.01079...
    double s2 = 0, s = 0;
    std::size_t n = 0;
    std::map<int, std::pair<double, std::size_t>> scaled;  // layer_id -> (sum of squares, count)
    for (const auto& p : A.params()) {
        const double* v = A.values() + p.offset;
        INFO(p.name);
        const bool gamma = p.name.find("gamma_") != std::string::npos;
        std::size_t wrong = 0;  // counted, not asserted per element (millions of Catch assertions are slow)
        if (gamma) {
            for (std::size_t i = 0; i < p.size; ++i) wrong += v[i] != 0.1;
        } else if (p.init == Init::TruncNormalStd) {
            const bool layer_scaled = p.name.find("attn.proj.weight") != std::string::npos || p.name.find("mlp.fc2.weight") != std::string::npos;
            const int layer_id = layer_scaled ? std::stoi(p.name.substr(std::string("encoder.blocks.").size())) + 1 : 0;
            const double bound = 0.02 / (layer_scaled ? std::sqrt(2.0 * layer_id) : 1.0);
            for (std::size_t i = 0; i < p.size; ++i) {
                wrong += std::abs(v[i]) > bound * (1 + 1e-12);
                if (layer_scaled) {
                    scaled[layer_id].first += v[i] * v[i];
                    ++scaled[layer_id].second;
                } else if (p.name.rfind("decoder.", 0) != 0) {
                    s += v[i], s2 += v[i] * v[i], ++n;
                }
            }
        } else if (p.name.rfind("decoder.", 0) != 0) {
            const double want = p.init == Init::Ones ? 1.0 : 0.0;
            for (std::size_t i = 0; i < p.size; ++i) wrong += v[i] != want;
        }
        CHECK(wrong == 0);
        if (p.name == "encoder.rel_pos_bias.relative_position_bias_table") CHECK(p.init == Init::Zeros);
        // the official pretraining groups: decay for every tensor of rank > 1 except cls_token
        if (p.name.rfind("encoder.", 0) == 0) CHECK(p.weight_decay == (p.shape.size() > 1 && p.name != "encoder.cls_token"));
    }
    CHECK(s / n == Approx(0).margin(1e-4));
    CHECK(std::sqrt(s2 / n) == Approx(sigma).epsilon(0.01));
    REQUIRE(scaled.size() == static_cast<std::size_t>(C.depth));
    for (const auto& [layer_id, acc] : scaled) {
        INFO("layer " << layer_id);
        CHECK(std::sqrt(acc.first / acc.second) == Approx(sigma / std::sqrt(2.0 * layer_id)).epsilon(0.03));
    }
}

TEST_CASE("official ViT: drop path rates, statistics, determinism and rate 0", "[official][drop_path]") {
    constexpr ViTConfig C = kDeep;
    OfficialViTSimMIM<double, C> model(random_mask_patch<C, kDeepMask>(), 3);
    perturb(model, 4, 0.05);
    auto& enc = model.encoder();
    const int B = 128;
    const auto images = test::random_vector(static_cast<std::size_t>(B) * C.image_numel(), 8);
    std::vector<double> mask(static_cast<std::size_t>(B) * C.num_patches());
    model.draw_mask(1, 0, B, mask.data());

    SECTION("the fraction of dropped branches is r_i = linspace(0, rate, depth)[i]; kept ones are scaled by 1/(1-r_i)") {
        const double rate = 0.6;
        std::vector<std::array<int, 2>> dropped(C.depth, {0, 0});
        const int steps = 8;
        for (int step = 0; step < steps; ++step) {
            enc.set_drop_path(rate, 17, step);
            model.forward(images.data(), mask.data(), B);
            for (int i = 0; i < C.depth; ++i)
                for (int br = 0; br < 2; ++br) {
                    const double r = rate * i / (C.depth - 1);
                    for (double f : enc.drop_path_factors(i, br)) {
                        if (f == 0.0)
                            ++dropped[i][br];
                        else
                            REQUIRE(f == Approx(1.0 / (1.0 - r)).epsilon(1e-15));
                    }
                }
        }
        const double n = double(B) * steps;
        for (int i = 0; i < C.depth; ++i) {
            const double r = rate * i / (C.depth - 1);
            for (int br = 0; br < 2; ++br) {
                INFO("block " << i << " branch " << br);
                CHECK(std::abs(dropped[i][br] / n - r) <= 5 * std::sqrt(r * (1 - r) / n) + 1e-12);
            }
        }
    }
    SECTION("a dropped pair of branches leaves the sample's tokens unchanged") {
        enc.set_drop_path(0.6, 17, 3);
        const int last = C.depth - 1;
        const auto* before_ptr = enc.forward_tokens(images.data(), mask.data(), B, last);
        const std::vector<double> before(before_ptr, before_ptr + static_cast<std::size_t>(B) * C.num_tokens() * C.embed_dim);
        const double* after = enc.forward_tokens(images.data(), mask.data(), B, C.depth);
        const std::size_t row = static_cast<std::size_t>(C.num_tokens()) * C.embed_dim;
        int both = 0;
        for (int b = 0; b < B; ++b) {
            const bool dropped = enc.drop_path_factors(last, 0)[b] == 0.0 && enc.drop_path_factors(last, 1)[b] == 0.0;
            const bool same = std::equal(before.begin() + b * row, before.begin() + (b + 1) * row, after + b * row);
            CHECK(same == dropped);
            both += dropped;
        }
        CHECK(both > 0);
    }
    SECTION("same (seed, step): identical output; another step: different; rate 0 equals no drop path exactly") {
        const double plain = model.forward(images.data(), mask.data(), B);
        const auto plain_pred = model.pred();
        enc.set_drop_path(0.0, 99, 12);
        CHECK(model.forward(images.data(), mask.data(), B) == plain);
        CHECK(model.pred() == plain_pred);
        enc.set_drop_path(0.3, 99, 12);
        const double l1 = model.forward(images.data(), mask.data(), B);
        const auto p1 = model.pred();
        CHECK(l1 != plain);
        enc.set_drop_path(0.3, 99, 13);
        CHECK(model.forward(images.data(), mask.data(), B) != l1);
        enc.set_drop_path(0.3, 99, 12);
        CHECK(model.forward(images.data(), mask.data(), B) == l1);
        CHECK(model.pred() == p1);
    }
    SECTION("bad rates are rejected") {
        CHECK_THROWS_AS(enc.set_drop_path(1.0, 0, 0), std::invalid_argument);
        CHECK_THROWS_AS(enc.set_drop_path(-0.1, 0, 0), std::invalid_argument);
        CHECK_THROWS_AS(enc.set_drop_path(std::nan(""), 0, 0), std::invalid_argument);
    }
}

TEST_CASE("official ViT: weights round-trip through io::save_weights / load_weights", "[official][io]") {
    FixtureModel<float> src;
    const auto dir = std::filesystem::temp_directory_path() / ("simmim_official_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const auto path = dir / "official.safetensors";
    io::save_weights(src.model, path, {{"format", "official-vit"}});
    OfficialViTSimMIM<float, kFix> dst(random_mask_patch<kFix, kFixMask>(), 123);
    CHECK_FALSE(std::equal(dst.params().values(), dst.params().values() + dst.params().size(), src.model.params().values()));
    io::load_weights(dst, path);
    CHECK(std::equal(dst.params().values(), dst.params().values() + dst.params().size(), src.model.params().values()));
    const float a = src.model.forward(src.images.data(), src.mask.data(), 2);
    const float b = dst.forward(src.images.data(), src.mask.data(), 2);
    CHECK(a == b);
    // the file holds exactly the official parameter names: a common-form ViT model must refuse it
    ViTSimMIM<float, kFix> common(random_mask_patch<kFix, kFixMask>(), 0);
    CHECK_THROWS_AS(io::load_weights(common, path), io::SafetensorsError);
    std::filesystem::remove_all(dir);
}
