// simmim_pretrain: SimMIM pretraining of a ViT or Swin preset on real images (see docs/pretraining.md).
//
// Every random draw (data order, augmentation, masks) is a function of (seed, step), and the
// checkpoint holds weights, AdamW moments and the step, so --resume continues bit-identically.
#include <CLI/CLI.hpp>
#include <omp.h>
#include <unistd.h>

#include <Eigen/Core>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "simmim/data/loader.hpp"
#include "simmim/data/open.hpp"
#include "simmim/io/checkpoint.hpp"
#include "simmim/io/png_grid.hpp"
#include "simmim/optim/schedule.hpp"
#include "simmim/simmim.hpp"
#include "model_variants.hpp"
#include "pretrain_options.hpp"
#include "training_common.hpp"

namespace {

using simmim::examples::UsageError;
namespace fs = std::filesystem;

using simmim::examples::pretrain::Options;

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

/// The configuration a resumed run must share with the checkpoint (everything that changes results).
nlohmann::json run_config(const Options& o, std::int64_t total_steps, std::int64_t warmup, double ratio, int mask_patch) {
    nlohmann::json config{{"data", o.data},         {"model", o.model},           {"batch", o.batch},
            {"total_steps", total_steps}, {"base_lr", o.base_lr},   {"warmup_lr", o.warmup_lr},
            {"min_lr", o.min_lr},     {"warmup_steps", warmup},     {"weight_decay", o.weight_decay},
            {"clip_grad", o.clip},    {"mask_ratio", ratio},        {"mask_patch", mask_patch},
            {"seed", o.seed}};
    // the model variant (docs/ablations.md), recorded only when it is not the core model, so checkpoints of the
    // core model keep the configuration they always had
    if (!o.variant.is_default()) config["variant"] = o.variant.to_json();
    return config;
}

/// The default masking of the preset called `name` (ViT or Swin).
simmim::MaskSpec preset_mask_of(const std::string& name) {
    if (const auto* p = simmim::presets::find(name)) return p->mask;
    return simmim::presets::find_swin(name)->mask;
}

/// C is the preset's ViTConfig or SwinConfig, Model the SimMIM type built from it.
template <auto C, class Model>
int train(const Options& o) {
    using namespace simmim;
    constexpr int R = Model::pred_size;
    // ---- everything that can be checked is checked before any work ----
    const MaskSpec preset_mask = preset_mask_of(o.model);  // the preset's default masking
    const int mask_patch = o.mask_patch > 0 ? o.mask_patch : preset_mask.patch_size;
    const double ratio = o.mask_ratio > 0 ? o.mask_ratio : preset_mask.ratio;
    constexpr EncoderGeometry G = Model::geometry;
    if (G.image_size % mask_patch != 0 || mask_patch % G.mask_cell() != 0)
        throw UsageError("--mask-patch " + std::to_string(mask_patch) + " must divide the image size " + std::to_string(G.image_size) +
                         " and be a multiple of the model patch " + std::to_string(G.mask_cell()));
    RandomMaskPatch masking(G.image_size, mask_patch, G.mask_cell(), ratio);
    examples::prepare_output_dir(o.out);
    // one run per output directory (examples/output_lock.hpp): held until train() returns or the process dies
    const auto out_lock = examples::OutputLock::acquire(o.out, "simmim_pretrain");
    // temporaries of checkpoint writes that a killed run left behind (io::remove_stale_temporaries)
    for (const auto& stale : io::remove_stale_temporaries(fs::path(o.out) / "checkpoint.safetensors"))
        std::printf("removed %s, left by an interrupted checkpoint write of a process that no longer runs\n", stale.c_str());

    auto data = data::open_dataset(o.data);
    examples::report_image_scan(data, o.data, o.strict_images);
    const auto aug = data::pretrain_augmentation(data, C.image_size, C.in_chans);
    const std::int64_t steps_per_epoch = static_cast<std::int64_t>(data.train->size() / static_cast<std::size_t>(o.batch));
    if (steps_per_epoch < 1)
        throw UsageError("--batch " + std::to_string(o.batch) + " is larger than the dataset (" + std::to_string(data.train->size()) + " images)");
    const std::int64_t total = o.steps > 0 ? o.steps : static_cast<std::int64_t>(std::ceil(o.epochs * double(steps_per_epoch)));
    const std::int64_t warmup = o.warmup >= 0 ? o.warmup : total / 10;
    if (warmup > total) throw UsageError("--warmup " + std::to_string(warmup) + " exceeds the run's " + std::to_string(total) + " steps");
    const auto schedule = CosineSchedule::scaled(o.base_lr, o.min_lr, o.warmup_lr, o.batch, warmup, total);
    const nlohmann::json config = run_config(o, total, warmup, ratio, mask_patch);

    auto model = std::make_unique<Model>(masking, o.seed);
    model->loss_function().select(o.variant);
    const double drop_path = o.variant.drop_path_rate();
    auto set_drop_path = [&](double rate, std::int64_t step) {
        if constexpr (requires { model->encoder().set_drop_path(0.0, std::uint64_t{0}, std::int64_t{0}); })
            model->encoder().set_drop_path(rate, derive_seed(o.seed, 0x44726F7050617468), step);
    };
    AdamW<float> opt(model->params(), {0.9, 0.999, 1e-8, o.weight_decay});
    std::int64_t start = 0;
    if (!o.resume.empty()) {
        // the configuration is compared first (from the header alone), so a checkpoint of another model
        // variant is reported as such rather than as a missing tensor
        const auto header_meta = io::read_safetensors_metadata(o.resume);
        const auto cfg_it = header_meta.find("config");
        if (cfg_it == header_meta.end()) throw std::runtime_error("--resume " + o.resume + ": checkpoint metadata has no 'config'");
        const auto saved = nlohmann::json::parse(cfg_it->second, nullptr, /*allow_exceptions=*/false);
        if (saved.is_discarded()) throw std::runtime_error("--resume " + o.resume + ": checkpoint metadata 'config' is not JSON");
        if (saved != config) {
            std::string diff;
            for (const auto* side : {&saved, &config})
                for (const auto& [key, value] : side->items())
                    if (diff.find("'" + key + "'") == std::string::npos && saved.value(key, nlohmann::json()) != config.value(key, nlohmann::json()))
                        diff += (diff.empty() ? "" : "; ") + ("'" + key + "' checkpoint " + saved.value(key, nlohmann::json()).dump() +
                                                              ", this run " + config.value(key, nlohmann::json()).dump());
            throw UsageError("--resume " + o.resume + " was written with a different configuration: " + diff);
        }
        io::check_model_kind(header_meta, *model, "--resume " + o.resume);
        const auto meta = io::load_checkpoint(o.resume, model->params(), opt);
        start = io::metadata_count(meta, "step", "--resume " + o.resume);
        if (start > total) throw UsageError("--resume " + o.resume + ": step " + std::to_string(start) + " is beyond the run's " + std::to_string(total) + " steps");
    }
    const fs::path ckpt_path = fs::path(o.out) / "checkpoint.safetensors";
    const fs::path metrics_path = fs::path(o.out) / "metrics.jsonl";
    auto history = examples::MetricsLog::open(metrics_path, start);

    // validation images for the pictures: the first K of the held-out split, fixed masks
    const int K = std::min<int>(o.vis_count, static_cast<int>(data.eval->size()));
    std::vector<float> vis_images(static_cast<std::size_t>(K) * C.image_numel()), vis_mask(static_cast<std::size_t>(K) * Model::mask_tokens);
    {
        const auto eval_cfg = data::eval_transform(data, C.image_size, C.in_chans);
        Rng unused(0);
        for (int k = 0; k < K; ++k) data::augment(data.eval->get(static_cast<std::size_t>(k)), eval_cfg, unused, vis_images.data() + k * C.image_numel());
        masking.generate(derive_seed(o.seed, 0x5669734D61736B), 0, K, vis_mask.data());
    }
    const io::ReconstructionPanels panels{C.in_chans, C.image_size, G.mask_cell(), aug.norm.mean, aug.norm.std, 0};
    std::vector<float> vis_pred(vis_images.size());
    auto write_vis = [&](const fs::path& path) {
        set_drop_path(0.0, 0);
        model->forward(vis_images.data(), vis_mask.data(), K);
        // a prediction at a lower resolution R is shown with each predicted pixel repeated S / R times per side
        constexpr int S = C.image_size, up = S / R;
        for (std::size_t plane = 0; plane < static_cast<std::size_t>(K) * C.in_chans; ++plane)
            for (int y = 0; y < S; ++y)
                for (int x = 0; x < S; ++x)
                    vis_pred[(plane * S + y) * S + x] = model->pred()[(plane * R + y / up) * R + x / up];
        io::write_reconstruction_png(path, panels, K, vis_images.data(), vis_pred.data(), vis_mask.data());
    };
    auto save = [&](std::int64_t next_step) {
        auto metadata = model->metadata();  // what the model is (model/model_kind.hpp), then the run's state
        metadata.insert({{"step", std::to_string(next_step)}, {"config", config.dump()}, {"model", o.model},
                         {"epoch", std::to_string(next_step / steps_per_epoch)}, {"simmim.preset", o.model}});
        io::save_checkpoint(ckpt_path, model->params(), opt, std::move(metadata));
    };

    std::printf("simmim_pretrain: %s on %s (%zu images, %s), %lld steps of %d (%lld per epoch), %d threads, %s\n", o.model.c_str(),
                data.train->description().c_str(), data.train->size(), data.format.c_str(), static_cast<long long>(total), o.batch,
                static_cast<long long>(steps_per_epoch), omp_get_max_threads(), start > 0 ? ("resuming at step " + std::to_string(start)).c_str() : "from scratch");
    std::printf("  memory: %s of parameters, gradients and AdamW moments, %s of activations at batch %d (Model::activation_bytes)\n",
                simmim::format_bytes(4 * sizeof(float) * model->params().size()).c_str(), simmim::format_bytes(Model::activation_bytes(o.batch)).c_str(), o.batch);
    std::fflush(stdout);

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    data::BatchLoader loader(data.train, aug, o.batch, o.seed, start, 4, 1);
    std::vector<float> mask(static_cast<std::size_t>(o.batch) * Model::mask_tokens);
    examples::Progress progress(total, start, o.log_every);
    std::int64_t skipped_steps = 0, step = start;
    const std::int64_t stop_at = o.stop_after > 0 ? std::min(total, start + o.stop_after) : total;
    while (step < stop_at) {
        const data::Batch batch = loader.next();
        model->draw_mask(o.seed, step, o.batch, mask.data());
        model->zero_grad();
        set_drop_path(drop_path, step);
        const float loss = model->forward(batch.images.data(), mask.data(), o.batch);
        model->backward();
        if (step == o.inject_nan_at) {
            const auto* p = model->params().find(model->params().find("encoder.blocks.0.attn.proj.weight") ? "encoder.blocks.0.attn.proj.weight"
                                                                                                        : "encoder.layers.0.blocks.0.attn.proj.weight");
            model->params().grads()[p->offset + 7] = std::numeric_limits<float>::quiet_NaN();
        }
        const double gnorm = clip_grad_norm(model->params(), o.clip);
        const double lr = schedule(step);
        if (!std::isfinite(loss) || !std::isfinite(gnorm)) {
            const std::string what = examples::first_nonfinite(model->params(), loss);
            if (!o.skip_nonfinite)
                throw std::runtime_error("non-finite " + what + " at step " + std::to_string(step) +
                                         "; the last good checkpoint is " + ckpt_path.string() +
                                         " (use --skip-nonfinite to skip such steps)");
            ++skipped_steps;
            std::fprintf(stderr, "warning: skipped step %lld: non-finite %s\n", static_cast<long long>(step), what.c_str());
        } else {
            opt.step(lr);
        }
        ++step;
        const bool log_now = progress.update(step, batch.epoch, loss, lr, gnorm, o.batch);
        if (log_now) history.append(step - 1, batch.epoch, loss, lr, gnorm, progress.images_per_second());
        if (o.vis_every > 0 && step % o.vis_every == 0)
            write_vis(fs::path(o.out) / ("reconstruction_step" + std::to_string(step) + ".png"));
        if ((o.save_every > 0 && step % o.save_every == 0) || step == stop_at || g_signal.load() != 0) save(step);
        if (g_signal.load() != 0) {
            progress.finish();
            std::printf("interrupted by signal %d after step %lld: checkpoint saved to %s; continue with --resume %s\n", g_signal.load(),
                        static_cast<long long>(step), ckpt_path.string().c_str(), ckpt_path.string().c_str());
            return 128 + g_signal.load();
        }
    }
    progress.finish();
    const fs::path vis_path = fs::path(o.out) / "reconstruction.png";
    const fs::path curve_path = fs::path(o.out) / "loss_curve.svg";
    write_vis(vis_path);
    history.write_svg(curve_path, o.model + " on " + o.data);
    std::printf("done: %lld steps%s, final loss %.4f (mean of the last %d logged)\n", static_cast<long long>(step),
                skipped_steps ? (", " + std::to_string(skipped_steps) + " skipped as non-finite").c_str() : "", history.recent_mean(10), 10);
    std::printf("  checkpoint      %s (weights under the official names + AdamW state)\n", ckpt_path.string().c_str());
    std::printf("  metrics         %s\n", metrics_path.string().c_str());
    std::printf("  reconstructions %s (original | masked | reconstruction | prediction)\n", vis_path.string().c_str());
    std::printf("  loss curve      %s\n", curve_path.string().c_str());
    return 0;
}

/// The work of a parsed command line: the model type of the preset and variant, then train().
int run(const Options& o) {
    simmim::examples::set_threads(o.threads);
    int rc = 0;
    const bool found = simmim::examples::dispatch_preset_model(o.model, o.variant, [&]<auto C, class Model>() { rc = train<C, Model>(o); });
    if (!found) throw UsageError("unknown model preset '" + o.model + "' (see simmim_reconstruct --list-models)");
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    return simmim::examples::run_main("simmim_pretrain", argc, argv, simmim::examples::pretrain::parse, run);
}
