// simmim_reconstruct: run a SimMIM model on a batch of images and write its reconstruction.
//
//   simmim_reconstruct --model PRESET --weights W.safetensors --input IN.safetensors
//                      --output OUT.safetensors [--grads] [--seed N] [--png FILE]
//   simmim_reconstruct --list-models
//
// IN holds `images` F32 [B, C, H, W] (normalised) and optionally `mask` [B, h, w] at the mask grid (the patch grid)
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
#include "simmim/model/swin_encoder.hpp"
#include "simmim/simmim.hpp"
#include "cli_errors.hpp"
#include "example_presets.hpp"
#include "reconstruct_options.hpp"

namespace {

using simmim::examples::reconstruct::Options;

std::string shape_of(const std::vector<std::int64_t>& s) { return simmim::io::detail::shape_string(s); }

/// Model is the preset's core SimMIM model (ViTSimMIM or SwinSimMIM), `mask` its default masking.
template <class Model>
void run(const Options& opt, simmim::MaskSpec mask_spec) {
    using namespace simmim;
    constexpr EncoderGeometry C = Model::geometry;
    auto model = std::make_unique<Model>(RandomMaskPatch(C.image_size, mask_spec.patch_size, C.mask_cell(), mask_spec.ratio), 0);
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
    const int g = C.mask_grid;
    const std::vector<float> images = images_t.to<float>();
    std::vector<float> mask(static_cast<std::size_t>(B) * g * g);
    if (in.contains("mask")) {
        const io::TensorData& m = in.at("mask");
        const std::vector<std::int64_t> want{B, g, g};
        if (m.shape != want)
            throw std::runtime_error(opt.input + ": tensor 'mask' has shape " + shape_of(m.shape) + ", expected " + shape_of(want) +
                                     " (the mask grid: the model's patch grid)");
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
        io::write_reconstruction_png(opt.png, {C.in_chans, C.image_size, C.mask_cell(), {}, {}, 0}, B, images.data(),
                                     model->pred().data(), mask.data());
    std::printf("model %s, batch %d, masked L1 loss %.6f -> %s%s%s\n", opt.model.c_str(), B, double(loss), opt.output.c_str(),
                opt.png.empty() ? "" : ", ", opt.png.c_str());
}

void list_models() {
    std::printf("ViT presets (--vit common|official in simmim_pretrain):\n");
    std::printf("  %-16s %6s %5s %6s %5s %6s %6s %11s %6s\n", "preset", "image", "chans", "patch", "dim", "depth", "heads",
                "mask_patch", "ratio");
    for (const auto& p : simmim::presets::all)
        std::printf("  %-16s %6d %5d %6d %5d %6d %6d %11d %6.2f\n", std::string(p.name).c_str(), p.config.image_size,
                    p.config.in_chans, p.config.patch_size, p.config.embed_dim, p.config.depth, p.config.num_heads,
                    p.mask.patch_size, p.mask.ratio);
    std::printf("Swin presets (stages: grid/window[/shift]; stride = decoder stride):\n");
    std::printf("  %-16s %6s %5s %6s %7s %5s %-14s %-14s %-22s %7s %11s %6s\n", "preset", "image", "chans", "patch", "window", "dim",
                "depths", "heads", "stages", "stride", "mask_patch", "ratio");
    for (const auto& p : simmim::presets::swin_all) {
        const auto& c = p.config;
        std::string depths, heads, stages;
        for (int i = 0; i < c.num_stages; ++i) {
            const std::string sep = i ? "," : "";
            depths += sep + std::to_string(c.depth(i));
            heads += sep + std::to_string(c.heads(i));
            stages += (i ? " " : "") + std::to_string(c.resolution(i)) + "/" + std::to_string(c.window(i)) +
                      (c.shift(i) ? "/" + std::to_string(c.shift(i)) : "");
        }
        std::printf("  %-16s %6d %5d %6d %7d %5d %-14s %-14s %-22s %7d %11d %6.2f\n", std::string(p.name).c_str(), c.image_size, c.in_chans,
                    c.patch_size, c.window_size, c.embed_dim, ("[" + depths + "]").c_str(), ("[" + heads + "]").c_str(), stages.c_str(),
                    c.stride(), p.mask.patch_size, p.mask.ratio);
    }
}

/// The work of a parsed command line: the preset list, or run<C>() for the preset.
int run(const Options& opt) {
    if (opt.list_models) {
        list_models();
        return 0;
    }
    bool found = simmim::examples::dispatch_vit_preset(opt.model, [&]<simmim::ViTConfig C>() {
        run<simmim::ViTSimMIM<float, C>>(opt, simmim::presets::mask_of<C>());
    });
    found = found || simmim::examples::dispatch_swin(opt.model, [&]<simmim::SwinConfig C>() {
        run<simmim::SwinSimMIM<float, C>>(opt, simmim::presets::find_swin(opt.model)->mask);
    });
    if (!found) throw simmim::examples::UsageError("unknown model preset '" + opt.model + "' (see --list-models)");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return simmim::examples::run_main("simmim_reconstruct", argc, argv, simmim::examples::reconstruct::parse,
                                      [](const Options& opt) { return run(opt); });
}
