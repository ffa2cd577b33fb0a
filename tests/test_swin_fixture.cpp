// The Swin SimMIM model against the PyTorch float64 reference written from the official code
// (tests/pytorch/swin_reference.py, make_swin_fixture.py): prediction, loss, every parameter gradient and
// the image gradient, in double (1e-10) and float (1e-4); the official buffers (relative_position_index,
// attn_mask) in the state dict checked against ours; and simmim_reconstruct's CLI contract on swin-tiny-test
// (PyTorch-written weights) and swin-d32 (weights from the fixture's hash formula).
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

#include "gradcheck.hpp"
#include "simmim/io/model_io.hpp"
#include "simmim/model/swin_encoder.hpp"

using namespace simmim;
namespace fs = std::filesystem;

namespace {

const io::TensorFile& fixture(const std::string& name) {
    static std::map<std::string, io::TensorFile> files;
    auto it = files.find(name);
    if (it == files.end()) it = files.emplace(name, io::read_safetensors(SIMMIM_SOURCE_DIR "/tests/fixtures/" + name)).first;
    return it->second;
}

/// The fixtures' hash weights (tests/pytorch/README.md): parameter k of the official state-dict order,
/// flat entry i: z = splitmix64((k + 1) << 32 + i), v = 2 (z >> 11) 2^-53 - 1; 1 + 0.1 v for LayerNorm
/// weights, `scale` v for the rest (plus `table_scale` for tables and the mask token when given).
std::uint64_t splitmix64(std::uint64_t x) {
    std::uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
template <class T>
void fill_hash_weights(ParamArena<T>& arena, double scale, double table_scale) {
    const auto ends_with = [](const std::string& s, const std::string& e) { return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0; };
    std::uint64_t k = 0;
    for (const auto& p : arena.params()) {
        const bool ln = ends_with(p.name, "norm.weight") || ends_with(p.name, "norm1.weight") || ends_with(p.name, "norm2.weight");
        const bool table = ends_with(p.name, "relative_position_bias_table") || p.name == "encoder.mask_token";
        for (std::size_t i = 0; i < p.size; ++i) {
            const double u = static_cast<double>(splitmix64(((k + 1) << 32) + i) >> 11) * 0x1.0p-53;
            const double v = 2.0 * u - 1.0;
            const double value = ln ? 1.0 + 0.1 * v : (table ? table_scale : scale) * v;
            arena.values()[p.offset + i] = T(value);
        }
        ++k;
    }
}

template <class T, SwinConfig C>
std::unique_ptr<SwinSimMIM<T, C>> make_model() {
    constexpr EncoderGeometry G = SwinEncoder<T, C>::geometry;
    return std::make_unique<SwinSimMIM<T, C>>(RandomMaskPatch(G.image_size, 4, G.mask_cell(), 0.6), 0);
}

/// Loads a full fixture (weights under the official names, buffers checked) into a model of type T.
template <class T, SwinConfig C>
std::unique_ptr<SwinSimMIM<T, C>> fixture_model(const io::TensorFile& f) {
    auto model = make_model<T, C>();
    const auto buffers = model->buffers();
    for (const auto& b : buffers) REQUIRE(f.contains(b.name));  // the state dict holds every official buffer
    io::LoadOptions opt;
    opt.allow_unexpected = true;  // the fixture also holds inputs, outputs and gradients
    io::import_params(model->params(), io::checked_without_buffers(f, buffers), opt);
    return model;
}

template <class T, SwinConfig C>
void check_against(const io::TensorFile& f, double tol) {
    std::unique_ptr<SwinSimMIM<T, C>> model_ptr;
    if (f.contains("encoder.norm.weight")) {
        model_ptr = fixture_model<T, C>(f);
    } else {  // weights from the hash formula; the buffers are still in the file
        model_ptr = make_model<T, C>();
        fill_hash_weights(model_ptr->params(), 0.2, 0.2);
        const auto buffers = model_ptr->buffers();
        for (const auto& b : buffers) REQUIRE(f.contains(b.name));
        (void)io::checked_without_buffers(f, buffers);
    }
    auto& m = *model_ptr;
    const auto images = f.at("images").to<T>();
    const auto mask = f.at("mask").to<T>();
    const int B = static_cast<int>(f.at("images").shape[0]);
    m.zero_grad();
    std::vector<T> dimages(images.size(), T(0));
    const double loss = m.forward(images.data(), mask.data(), B);
    m.backward(dimages.data());
    const bool is_double = std::is_same_v<T, double>;
    const double ref_loss = f.at(is_double ? "loss" : "loss32").to<double>().at(0);
    CHECK(std::abs(loss - ref_loss) <= tol * std::abs(ref_loss));
    const auto pred = f.at(is_double ? "pred" : "pred32").to<double>();
    CHECK(test::relative_error(m.pred(), pred, pred.size()) < tol);
    for (const auto& p : m.params().params()) {
        const auto ref = f.at("grad." + p.name).template to<double>();
        const double err = test::relative_error(m.params().grads() + p.offset, ref, p.size);
        INFO(p.name << " relative error " << err);
        CHECK(err < tol);
    }
    const auto ref_dimages = f.at("grad.images").to<double>();
    INFO("grad.images");
    CHECK(test::relative_error(dimages, ref_dimages, ref_dimages.size()) < tol);
}

}  // namespace

TEST_CASE("swin-tiny-test matches PyTorch float64: prediction, loss, every gradient (rel. 1e-10)", "[swin][fixture]") {
    check_against<double, presets::swin_tiny_test>(fixture("swin_tiny.safetensors"), 1e-10);
}

TEST_CASE("swin-tiny-test in float matches PyTorch float32 prediction and loss and float64 gradients (rel. 1e-4)", "[swin][fixture]") {
    check_against<float, presets::swin_tiny_test>(fixture("swin_tiny.safetensors"), 1e-4);
}

TEST_CASE("swin-clamp-test (1 channel, a window clamped to 2x2) matches PyTorch float64 (rel. 1e-10)", "[swin][fixture]") {
    check_against<double, presets::swin_clamp_test>(fixture("swin_clamp.safetensors"), 1e-10);
}

TEST_CASE("swin-clamp-test in float (rel. 1e-4)", "[swin][fixture]") {
    check_against<float, presets::swin_clamp_test>(fixture("swin_clamp.safetensors"), 1e-4);
}

TEST_CASE("the official buffers in a state dict are checked against ours, and written for PyTorch's strict load", "[swin][io]") {
    const auto& f = fixture("swin_tiny.safetensors");
    auto model = make_model<double, presets::swin_tiny_test>();
    const auto buffers = model->buffers();
    REQUIRE(buffers.size() == 5);  // 4 relative_position_index + 1 attn_mask (stage 0, block 1)
    // a state dict with a wrong attn_mask entry is refused, naming the buffer
    io::TensorFile bad;
    for (const auto& n : f.names()) bad.set(n, f.at(n));
    auto m = f.at("encoder.layers.0.blocks.1.attn_mask").to<double>();
    m[17] = m[17] == 0.0 ? -100.0 : 0.0;
    bad.set<double>("encoder.layers.0.blocks.1.attn_mask", std::span<const double>(m), f.at("encoder.layers.0.blocks.1.attn_mask").shape);
    CHECK_THROWS_WITH(io::checked_without_buffers(bad, buffers), Catch::Contains("encoder.layers.0.blocks.1.attn_mask"));
    // save_weights writes the buffers (I64 indices), and the file loads back
    const fs::path path = fs::temp_directory_path() / ("simmim_swin_" + std::to_string(::getpid()) + ".safetensors");
    auto model32 = make_model<float, presets::swin_tiny_test>();  // save_weights writes F32
    io::save_weights(*model32, path);
    const auto written = io::read_safetensors(path);
    CHECK(written.at("encoder.layers.1.blocks.1.attn.relative_position_index").dtype == io::DType::I64);
    CHECK(!written.contains("encoder.layers.1.blocks.1.attn_mask"));  // the clamped stage does not shift
    auto again = make_model<float, presets::swin_tiny_test>();
    again->init(99);
    io::load_weights(*again, path);
    CHECK(std::equal(model32->params().values(), model32->params().values() + model32->params().size(), again->params().values()));
    fs::remove(path);
}

namespace {

const fs::path kReconstruct = fs::path(SIMMIM_BINARY_DIR) / "examples" / "simmim_reconstruct";

int run_cli(const std::string& args, std::string& output) {
    REQUIRE(fs::exists(kReconstruct));
    const fs::path log = fs::temp_directory_path() / ("simmim_swin_cli_" + std::to_string(::getpid()) + ".log");
    const int status = std::system((kReconstruct.string() + " " + args + " > " + log.string() + " 2>&1").c_str());
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    output = ss.str();
    fs::remove(log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// Writes IN (images, mask as F32) from a fixture.
void write_input(const io::TensorFile& f, const fs::path& path) {
    io::TensorFile in;
    const auto images = f.at("images").to<float>();
    const auto mask = f.at("mask").to<float>();
    in.set<float>("images", std::span<const float>(images), f.at("images").shape);
    in.set<float>("mask", std::span<const float>(mask), f.at("mask").shape);
    io::write_safetensors(path, in);
}

}  // namespace

TEST_CASE("simmim_reconstruct: PyTorch-written swin-tiny-test weights give PyTorch's prediction, loss and gradients", "[swin][cli]") {
    const auto& f = fixture("swin_tiny.safetensors");
    const fs::path dir = fs::temp_directory_path() / ("simmim_swin_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    io::TensorFile weights;  // the state dict as PyTorch holds it, buffers included, in F32
    for (const auto& name : f.names())
        if (name.starts_with("encoder.") || name.starts_with("decoder.")) {
            if (f.at(name).dtype == io::DType::I64) weights.set(name, f.at(name));
            else {
                const auto v = f.at(name).to<float>();
                weights.set<float>(name, std::span<const float>(v), f.at(name).shape);
            }
        }
    io::write_safetensors(dir / "w.safetensors", weights);
    write_input(f, dir / "in.safetensors");
    std::string log;
    REQUIRE(run_cli("--model swin-tiny-test --weights " + (dir / "w.safetensors").string() + " --input " + (dir / "in.safetensors").string() +
                        " --output " + (dir / "out.safetensors").string() + " --grads",
                    log) == 0);
    INFO(log);
    const auto out = io::read_safetensors(dir / "out.safetensors");
    CHECK(out.at("mask").shape == std::vector<std::int64_t>{2, 8, 8});
    const double loss = out.at("loss").to<double>().at(0), ref = f.at("loss").to<double>().at(0);
    CHECK(std::abs(loss - ref) < 1e-5 * ref);
    const auto pred = out.at("pred").to<double>();
    CHECK(test::relative_error(pred, f.at("pred").to<double>(), pred.size()) < 1e-5);
    for (const auto& name : f.names())
        if (name.starts_with("grad.encoder") || name.starts_with("grad.decoder")) {
            const auto g = out.at(name).to<double>();
            INFO(name);
            CHECK(test::relative_error(g, f.at(name).to<double>(), g.size()) < 1e-4);
        }
    fs::remove_all(dir);
}

TEST_CASE("simmim_reconstruct: swin-d32 with the fixture's hash weights gives PyTorch's prediction, loss and gradients", "[swin][cli]") {
    const auto& f = fixture("swin_d32_ref.safetensors");
    const fs::path dir = fs::temp_directory_path() / ("simmim_swin_d32_" + std::to_string(::getpid()));
    fs::create_directories(dir);
    {
        auto model = make_model<float, presets::swin_d32>();
        fill_hash_weights(model->params(), 0.02, 0.02);
        io::save_weights(*model, dir / "w.safetensors");
    }
    write_input(f, dir / "in.safetensors");
    std::string log;
    REQUIRE(run_cli("--model swin-d32 --weights " + (dir / "w.safetensors").string() + " --input " + (dir / "in.safetensors").string() +
                        " --output " + (dir / "out.safetensors").string() + " --grads",
                    log) == 0);
    INFO(log);
    const auto out = io::read_safetensors(dir / "out.safetensors");
    const double loss = out.at("loss").to<double>().at(0), ref = f.at("loss").to<double>().at(0);
    CHECK(std::abs(loss - ref) < 1e-5 * ref);
    const auto pred = out.at("pred").to<double>();
    CHECK(test::relative_error(pred, f.at("pred").to<double>(), pred.size()) < 1e-5);
    int checked = 0;
    for (const auto& name : f.names()) {
        if (!name.starts_with("gradsum.")) continue;
        const std::string param = name.substr(8);
        const auto g = out.at("grad." + param).to<double>();
        double sum = 0;
        for (const double x : g) sum += std::abs(x);
        const double ref_sum = f.at(name).to<double>().at(0);
        INFO(param << ": sum |grad| " << sum << " vs " << ref_sum);
        CHECK(std::abs(sum - ref_sum) <= 1e-4 * ref_sum);
        const auto idx = f.at("gradidx." + param).to<std::int64_t>();
        const auto pick = f.at("gradpick." + param).to<double>();
        double num = 0, den = 0;
        for (std::size_t k = 0; k < idx.size(); ++k) {
            const double d = g[static_cast<std::size_t>(idx[k])] - pick[k];
            num += d * d;
            den += pick[k] * pick[k];
        }
        CHECK(std::sqrt(num) <= 1e-4 * std::sqrt(den) + 1e-12);
        ++checked;
    }
    CHECK(checked == 145);
    fs::remove_all(dir);
}
