// simmim_reconstruct: run a SimMIM model on a batch of images and write its reconstruction.
//
//   simmim_reconstruct --model PRESET --weights W.safetensors --input IN.safetensors
//                      --output OUT.safetensors [--grads] [--seed N] [--png FILE]
//   simmim_reconstruct --list-models
//
// IN holds `images` F32 [B, C, H, W] (normalised) and optionally `mask` [B, h, w] at the token grid
// (F32, U8 or I64; nonzero = masked); without it a mask is drawn with the official generator from --seed.
// OUT holds `pred` F32 [B, C, H, W], `mask` F32 [B, h, w], `loss` F32 [] and, with --grads, `grad.<name>`
// for every parameter. Errors are printed on one line; the exit code is 2 for usage errors, 1 otherwise.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "simmim/io/model_io.hpp"
#include "simmim/io/png_grid.hpp"
#include "simmim/simmim.hpp"
#include "cli_errors.hpp"

namespace {

struct Options {
    std::string model, weights, input, output, png;
    bool grads = false;
    std::uint64_t seed = 0;
};

std::string shape_of(const std::vector<std::int64_t>& s) { return simmim::io::detail::shape_string(s); }

template <simmim::ViTConfig C>
void run(const Options& opt) {
    using namespace simmim;
    using Model = ViTSimMIM<float, C>;
    auto model = std::make_unique<Model>(random_mask_patch<C, presets::mask_of<C>()>(), 0);
    io::load_weights(*model, opt.weights);

    const io::TensorFile in = io::read_safetensors(opt.input);
    const io::TensorData& images_t = in.at("images");
    if (images_t.shape.size() != 4 || images_t.shape[1] != C.in_chans || images_t.shape[2] != C.image_size ||
        images_t.shape[3] != C.image_size || images_t.shape[0] < 1)
        throw std::runtime_error(opt.input + ": tensor 'images' has shape " + shape_of(images_t.shape) + ", expected [B, " +
                                 std::to_string(C.in_chans) + ", " + std::to_string(C.image_size) + ", " +
                                 std::to_string(C.image_size) + "] for model " + opt.model);
    if (images_t.dtype != io::DType::F32)
        throw std::runtime_error(opt.input + ": tensor 'images' has dtype " + std::string(io::dtype_name(images_t.dtype)) +
                                 ", expected F32");
    const int B = static_cast<int>(images_t.shape[0]);
    const int g = C.grid();
    const std::vector<float> images = images_t.to<float>();
    std::vector<float> mask(static_cast<std::size_t>(B) * g * g);
    if (in.contains("mask")) {
        const io::TensorData& m = in.at("mask");
        const std::vector<std::int64_t> want{B, g, g};
        if (m.shape != want)
            throw std::runtime_error(opt.input + ": tensor 'mask' has shape " + shape_of(m.shape) + ", expected " + shape_of(want) +
                                     " (the token grid)");
        if (m.dtype != io::DType::F32 && m.dtype != io::DType::U8 && m.dtype != io::DType::I64)
            throw std::runtime_error(opt.input + ": tensor 'mask' has dtype " + std::string(io::dtype_name(m.dtype)) +
                                     ", expected F32, U8 or I64");
        const auto raw = m.to<double>();
        for (std::size_t i = 0; i < raw.size(); ++i) mask[i] = raw[i] != 0.0 ? 1.f : 0.f;
    } else {
        model->draw_mask(opt.seed, 0, B, mask.data());
    }

    model->zero_grad();
    const float loss = model->forward(images.data(), mask.data(), B);
    if (opt.grads) model->backward();

    io::TensorFile out;
    out.metadata = {{"model", opt.model}, {"weights", opt.weights}, {"input", opt.input}};
    out.set<float>("pred", std::span<const float>(model->pred()), {B, C.in_chans, C.image_size, C.image_size});
    out.set<float>("mask", std::span<const float>(mask), {B, g, g});
    out.set<float>("loss", std::span<const float>(&loss, 1), {});
    if (opt.grads) io::export_params(out, model->params(), /*gradients=*/true, "grad.");
    io::write_safetensors(opt.output, out);
    if (!opt.png.empty())
        io::write_reconstruction_png(opt.png, {C.in_chans, C.image_size, C.patch_size, {}, {}, 0}, B, images.data(),
                                     model->pred().data(), mask.data());
    std::printf("model %s, batch %d, masked L1 loss %.6f -> %s%s%s\n", opt.model.c_str(), B, double(loss), opt.output.c_str(),
                opt.png.empty() ? "" : ", ", opt.png.c_str());
}

void list_models() {
    std::printf("%-14s %6s %5s %6s %5s %6s %6s %11s %6s\n", "preset", "image", "chans", "patch", "dim", "depth", "heads",
                "mask_patch", "ratio");
    for (const auto& p : simmim::presets::all)
        std::printf("%-14s %6d %5d %6d %5d %6d %6d %11d %6.2f\n", std::string(p.name).c_str(), p.config.image_size,
                    p.config.in_chans, p.config.patch_size, p.config.embed_dim, p.config.depth, p.config.num_heads,
                    p.mask.patch_size, p.mask.ratio);
}

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    bool list = false;
    CLI::App app{"Run a SimMIM model on a batch of images; write prediction, mask, loss (and gradients)."};
    app.add_flag("--list-models", list, "Print the model presets with their dimensions and exit");
    app.add_option("--model", opt.model, "Model preset (see --list-models)");
    app.add_option("--weights", opt.weights, "Model weights, safetensors under the official state-dict names");
    app.add_option("--input", opt.input, "Input safetensors: `images` F32 [B,C,H,W], optional `mask` [B,h,w]");
    app.add_option("--output", opt.output, "Output safetensors: pred, mask, loss (and grad.<name> with --grads)");
    app.add_flag("--grads", opt.grads, "Also write the gradient of the loss for every parameter");
    app.add_option("--seed", opt.seed, "Seed of the mask drawn when the input has none");
    app.add_option("--png", opt.png, "Write a picture grid: original | masked | reconstruction | prediction");
    if (const auto exit_code = simmim::examples::parse_command_line("simmim_reconstruct", app, argc, argv)) return *exit_code;
    if (list) {
        list_models();
        return 0;
    }
    for (const auto& [flag, value] : {std::pair{"--model", &opt.model}, {"--weights", &opt.weights}, {"--input", &opt.input},
                                      {"--output", &opt.output}})
        if (value->empty()) {
            std::fprintf(stderr, "simmim_reconstruct: error: %s is required (see --help)\n", flag);
            return 2;
        }
    try {
        const bool found = simmim::dispatch_preset(opt.model, [&]<simmim::ViTConfig C>() { run<C>(opt); });
        if (!found) {
            std::fprintf(stderr, "simmim_reconstruct: error: unknown model preset '%s' (see --list-models)\n", opt.model.c_str());
            return 2;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "simmim_reconstruct: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
