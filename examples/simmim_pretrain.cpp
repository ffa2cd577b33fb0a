// simmim_pretrain: SimMIM pretraining of a ViT or Swin preset on real images (see docs/pretraining.md).
//
// Every random draw (data order, augmentation, masks) is a function of (seed, step), and the
// checkpoint holds weights, AdamW moments and the step, so --resume continues bit-identically.
#include <CLI/CLI.hpp>
#include <omp.h>
#include <fcntl.h>
#include <unistd.h>

#include <Eigen/Core>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
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
#include "distributed.hpp"
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

/// The processes of this run (examples/distributed.hpp): one, or the ranks of an MPI job.
simmim::examples::Cluster* g_cluster = nullptr;

/// C is the preset's ViTConfig or SwinConfig, Model the SimMIM type built from it.
///
/// With several ranks (docs/distributed.md) every rank builds the same model and loader order; rank r computes
/// the samples [first, first + count) of every global batch of --batch (Cluster::slice), with the masks and
/// augmentation draws of those samples in the whole batch, and the gradients are summed over the ranks during
/// backward; clipping, the non-finite check and AdamW then see the same gradient on every rank. Rank 0 alone
/// writes the output directory, and the checkpoint it reads on --resume is sent to the others.
template <auto C, class Model>
int train(const Options& o) {
    using namespace simmim;
    const examples::Cluster& cluster = *g_cluster;
    const bool root = cluster.root();
    constexpr int R = Model::pred_size;
    // ---- everything that can be checked is checked before any work ----
    const MaskSpec preset_mask = preset_mask_of(o.model);  // the preset's default masking
    const int mask_patch = o.mask_patch > 0 ? o.mask_patch : preset_mask.patch_size;
    const double ratio = o.mask_ratio > 0 ? o.mask_ratio : preset_mask.ratio;
    constexpr EncoderGeometry G = Model::geometry;
    if (G.image_size % mask_patch != 0 || mask_patch % G.mask_cell() != 0)
        throw UsageError("--mask-patch " + std::to_string(mask_patch) + " must divide the image size " + std::to_string(G.image_size) +
                         " and be a multiple of the model patch " + std::to_string(G.mask_cell()));
    if (o.batch < cluster.size())
        throw UsageError("--batch " + std::to_string(o.batch) + " is smaller than the " + std::to_string(cluster.size()) +
                         " ranks of this run: every rank needs at least one image of each batch");
    RandomMaskPatch masking(G.image_size, mask_patch, G.mask_cell(), ratio);
    // one run per output directory (examples/output_lock.hpp): held by rank 0 until train() returns or the process dies
    std::optional<examples::OutputLock> out_lock;
    data::OpenedDataset data;
    cluster.agree([&] {
        if (root) {
            examples::prepare_output_dir(o.out);
            out_lock.emplace(examples::OutputLock::acquire(o.out, "simmim_pretrain"));
            // temporaries of checkpoint writes that a killed run left behind (io::remove_stale_temporaries)
            for (const auto& stale : io::remove_stale_temporaries(fs::path(o.out) / "checkpoint.safetensors"))
                std::printf("removed %s, left by an interrupted checkpoint write of a process that no longer runs\n", stale.c_str());
        }
        data = data::open_dataset(o.data);  // every rank reads the data (on its own machine)
        if (root) examples::report_image_scan(data, o.data, o.strict_images);
        else if (o.strict_images && data.skipped > 0)
            throw std::runtime_error("--strict-images: " + std::to_string(data.skipped) + " image files in " + o.data + " are damaged or unreadable");
    });
    const auto aug = data::pretrain_augmentation(data, C.image_size, C.in_chans);
    const std::int64_t steps_per_epoch = static_cast<std::int64_t>(data.train->size() / static_cast<std::size_t>(o.batch));
    if (steps_per_epoch < 1)
        throw UsageError("--batch " + std::to_string(o.batch) + " is larger than the dataset (" + std::to_string(data.train->size()) + " images)");
    const std::int64_t total = o.steps > 0 ? o.steps : static_cast<std::int64_t>(std::ceil(o.epochs * double(steps_per_epoch)));
    const std::int64_t warmup = o.warmup >= 0 ? o.warmup : total / 10;
    if (warmup > total) throw UsageError("--warmup " + std::to_string(warmup) + " exceeds the run's " + std::to_string(total) + " steps");
    const auto schedule = CosineSchedule::scaled(o.base_lr, o.min_lr, o.warmup_lr, o.batch, warmup, total);
    const nlohmann::json config = run_config(o, total, warmup, ratio, mask_patch);

    const auto mine = cluster.slice(o.batch);  // this rank's samples of every batch
    auto model = std::make_unique<Model>(masking, o.seed);
    model->loss_function().select(o.variant);
    const double drop_path = o.variant.drop_path_rate();
    auto set_drop_path = [&](double rate, std::int64_t step) {
        if constexpr (requires { model->encoder().set_drop_path(0.0, std::uint64_t{0}, std::int64_t{0}, 0); })
            model->encoder().set_drop_path(rate, derive_seed(o.seed, 0x44726F7050617468), step, mine.first);
    };
    AdamW<float> opt(model->params(), {0.9, 0.999, 1e-8, o.weight_decay});
    std::int64_t start = 0;
    const fs::path ckpt_path = fs::path(o.out) / "checkpoint.safetensors";
    const fs::path metrics_path = fs::path(o.out) / "metrics.jsonl";
    examples::MetricsLog history;
    cluster.agree([&] {
        if (!root) return;
        if (!o.resume.empty()) {
            // the configuration is compared first (from the header alone), so a checkpoint of another model
            // variant is reported as such rather than as a missing tensor
            const auto header_meta = io::read_safetensors_metadata(o.resume);
            examples::check_resume_config(header_meta, config, o.resume);
            io::check_model_kind(header_meta, *model, "--resume " + o.resume);
            const auto meta = io::load_checkpoint(o.resume, model->params(), opt);
            start = io::metadata_count(meta, "step", "--resume " + o.resume);
            if (start > total) throw UsageError("--resume " + o.resume + ": step " + std::to_string(start) + " is beyond the run's " + std::to_string(total) + " steps");
        }
        history = examples::MetricsLog::open(metrics_path, start);
    });
    if (cluster.distributed()) {  // rank 0's state (the checkpoint it read, or the same initialisation) on every rank
        std::int64_t opt_steps = opt.steps();
        cluster.broadcast(&start, 1);
        cluster.broadcast(&opt_steps, 1);
        opt.set_steps(opt_steps);
        cluster.broadcast(model->params().values(), model->params().size());
        cluster.broadcast(opt.exp_avg().data(), opt.exp_avg().size());
        cluster.broadcast(opt.exp_avg_sq().data(), opt.exp_avg_sq().size());
    }

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

    const std::string processes = (cluster.distributed() ? std::to_string(cluster.size()) + " ranks x " + std::to_string(omp_get_max_threads()) + " threads"
                                                         : std::to_string(omp_get_max_threads()) + " threads") +
                                  ", " + simmim::examples::precision_description();
    if (root) {
        std::printf("simmim_pretrain: %s on %s (%zu images, %s), %lld steps of %d (%lld per epoch), %s, %s\n", o.model.c_str(),
                    data.train->description().c_str(), data.train->size(), data.format.c_str(), static_cast<long long>(total), o.batch,
                    static_cast<long long>(steps_per_epoch), processes.c_str(), start > 0 ? ("resuming at step " + std::to_string(start)).c_str() : "from scratch");
        if (const std::string warning = simmim::examples::isa_mismatch_warning(); !warning.empty())
            std::fprintf(stderr, "%s\n", warning.c_str());
        std::printf("  memory: %s of parameters, gradients and AdamW moments, %s of activations at batch %d (Model::activation_bytes)\n",
                    simmim::format_bytes(4 * sizeof(float) * model->params().size()).c_str(),
                    simmim::format_bytes(Model::activation_bytes(mine.count)).c_str(), mine.count);
        std::fflush(stdout);
    }

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    // a closed stdout or stderr (mpirun stops forwarding output when it forwards a SIGTERM; a pipe to a pager that
    // was quit) must not kill the run before it writes its checkpoint: writes then fail, the run goes on
    std::signal(SIGPIPE, SIG_IGN);
    data::BatchLoader loader(data.train, aug, o.batch, o.seed, start, 4, 1, mine);
    examples::Cluster::Reducer<float> reducer(cluster, model->params(), static_cast<std::size_t>(o.bucket_mb * 1e6));
    if (root && cluster.distributed())
        std::printf("  distributed: %d ranks, %d images of each batch per rank (rank 0: %d), gradients summed in %zu buckets of up to %g MB\n",
                    cluster.size(), o.batch / cluster.size(), mine.count, reducer.buckets(), o.bucket_mb);
    std::vector<float> batch_mask(static_cast<std::size_t>(o.batch) * Model::mask_tokens);  // every sample's mask
    const float* mask = batch_mask.data() + static_cast<std::ptrdiff_t>(mine.first) * Model::mask_tokens;  // this rank's
    examples::Progress progress(total, start, o.log_every, root, /*live=*/!cluster.launched());
    if (cluster.distributed()) progress.set_tag(processes);
    std::int64_t skipped_steps = 0, step = start;
    double wait_seconds = 0, step_seconds = 0;  // summed over the steps of this invocation after its first (warm-up)
    std::int64_t timed_steps = 0;
    const std::int64_t stop_at = o.stop_after > 0 ? std::min(total, start + o.stop_after) : total;
    while (step < stop_at) {
        const auto t0 = std::chrono::steady_clock::now();
        data::Batch batch;
        try {
            batch = loader.next();  // a data error of this rank's slice stops every rank
        } catch (const std::exception& e) {
            cluster.abort_with("simmim_pretrain", e, 1);
        }
        model->draw_mask(o.seed, step, o.batch, batch_mask.data());
        // this rank's share of the batch loss: its loss denominator over the batch's (1 for one process)
        const double weight = cluster.distributed() ? model->loss_denominator(mask, mine.count) / model->loss_denominator(batch_mask.data(), o.batch) : 1.0;
        model->zero_grad();
        set_drop_path(drop_path, step);
        const float local_loss = model->forward(batch.images.data(), mask, mine.count);
        reducer.start();
        model->backward(nullptr, static_cast<float>(weight));
        const double waited = reducer.finish();
        if (step == o.inject_nan_at) {
            const auto* p = model->params().find(model->params().find("encoder.blocks.0.attn.proj.weight") ? "encoder.blocks.0.attn.proj.weight"
                                                                                                        : "encoder.layers.0.blocks.0.attn.proj.weight");
            model->params().grads()[p->offset + 7] = std::numeric_limits<float>::quiet_NaN();
        }
        // the batch loss and whether any rank was asked to stop, summed over the ranks
        double shared[2] = {weight * double(local_loss), g_signal.load() != 0 ? 1.0 : 0.0};
        cluster.sum(shared, 2);
        const float loss = cluster.distributed() ? static_cast<float>(shared[0]) : local_loss;
        const int stop_signal = shared[1] > 0 ? cluster.max(g_signal.load()) : 0;
        const double gnorm = clip_grad_norm(model->params(), o.clip);
        const double lr = schedule(step);
        if (!std::isfinite(loss) || !std::isfinite(gnorm)) {
            const std::string what = examples::first_nonfinite(model->params(), loss);
            if (!o.skip_nonfinite)  // every rank sees the same summed gradient and loss, so all stop here
                throw std::runtime_error("non-finite " + what + " at step " + std::to_string(step) +
                                         "; the last good checkpoint is " + ckpt_path.string() +
                                         " (use --skip-nonfinite to skip such steps)");
            ++skipped_steps;
            if (root) std::fprintf(stderr, "warning: skipped step %lld: non-finite %s\n", static_cast<long long>(step), what.c_str());
        } else {
            opt.step(lr);
        }
        if (step == o.inject_desync_at && cluster.rank() == cluster.size() - 1) model->params().values()[model->params().size() - 1] += 1e-3f;
        ++step;
        if (step > start + 1) {
            step_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            wait_seconds += waited;
            ++timed_steps;
        }
        if (o.check_sync > 0 && (step % o.check_sync == 0 || step == stop_at))
            if (const auto unsynced = cluster.first_unsynced(model->params()))
                throw std::runtime_error("--check-sync: after step " + std::to_string(step) + " the ranks hold different values of " +
                                         *unsynced + " (the first differing tensor); the last checkpoint is " + ckpt_path.string());
        const bool log_now = progress.update(step, batch.epoch, loss, lr, gnorm, o.batch);
        try {  // rank 0's outputs; a failure stops every rank
            if (root && log_now) history.append(step - 1, batch.epoch, loss, lr, gnorm, progress.images_per_second());
            if (root && o.vis_every > 0 && step % o.vis_every == 0)
                write_vis(fs::path(o.out) / ("reconstruction_step" + std::to_string(step) + ".png"));
            if (root && ((o.save_every > 0 && step % o.save_every == 0) || step == stop_at || stop_signal != 0)) save(step);
        } catch (const std::exception& e) {
            cluster.abort_with("simmim_pretrain", e, 1);
        }
        if (stop_signal != 0) {
            cluster.barrier();  // no rank ends before rank 0 has written the checkpoint
            progress.finish();
            if (root)
                std::printf("interrupted by signal %d after step %lld%s: checkpoint saved to %s; continue with --resume %s\n", stop_signal,
                            static_cast<long long>(step), cluster.distributed() ? " (on every rank)" : "", ckpt_path.string().c_str(),
                            ckpt_path.string().c_str());
            return 128 + stop_signal;
        }
    }
    progress.finish();
    cluster.barrier();
    if (!root) return 0;
    const fs::path vis_path = fs::path(o.out) / "reconstruction.png";
    const fs::path curve_path = fs::path(o.out) / "loss_curve.svg";
    write_vis(vis_path);
    history.write_svg(curve_path, o.model + " on " + o.data);
    std::printf("done: %lld steps%s, final loss %.4f (mean of the last %d logged)\n", static_cast<long long>(step),
                skipped_steps ? (", " + std::to_string(skipped_steps) + " skipped as non-finite").c_str() : "", history.recent_mean(10), 10);
    if (timed_steps > 0) {
        std::printf("  speed: %.1f ms per step of %d images, %.1f img/s (%s; mean of the %lld steps after the first of this run)\n",
                    1e3 * step_seconds / double(timed_steps), o.batch, double(o.batch) * double(timed_steps) / step_seconds, processes.c_str(),
                    static_cast<long long>(timed_steps));
        if (cluster.distributed())
            std::printf("  allreduce: rank 0 waited %.2f ms per step (%.1f%% of the step) for the gradient sum after backward; %zu of %zu buckets started during backward\n",
                        1e3 * wait_seconds / double(timed_steps), 100 * wait_seconds / step_seconds, reducer.launched_early(), reducer.buckets());
    }
    std::printf("  checkpoint      %s (weights under the official names + AdamW state)\n", ckpt_path.string().c_str());
    std::printf("  metrics         %s\n", metrics_path.string().c_str());
    std::printf("  reconstructions %s (original | masked | reconstruction | prediction)\n", vis_path.string().c_str());
    std::printf("  loss curve      %s\n", curve_path.string().c_str());
    return 0;
}

/// The work of a parsed command line: the model type of the preset and variant, then train().
int run(const Options& o) {
    g_cluster->check_launch();
    simmim::examples::set_threads(o.threads);
    simmim::examples::set_precision(o.precision);
    int rc = 0;
    const bool found = simmim::examples::dispatch_preset_model(o.model, o.variant, [&]<auto C, class Model>() { rc = train<C, Model>(o); });
    if (!found) throw UsageError("unknown model preset '" + o.model + "' (see simmim_reconstruct --list-models)");
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    // MPI is initialised (when an MPI launcher started this process) before the command line is parsed, so that
    // only rank 0 reports a bad option; MPI_Finalize runs when `cluster` goes out of scope
    simmim::examples::Cluster cluster(argc, argv);
    g_cluster = &cluster;
    // mpirun stops reading its ranks' output when it ends a job (a SIGTERM, Ctrl-C): a blocking write to the full pipe
    // would hold a rank inside a progress line, the other ranks in the next collective, until mpirun's SIGKILL one
    // second later, before any checkpoint. Under a launcher, stdout does not block: a line that does not fit is lost.
    if (cluster.launched())
        if (const int flags = ::fcntl(STDOUT_FILENO, F_GETFL); flags >= 0) ::fcntl(STDOUT_FILENO, F_SETFL, flags | O_NONBLOCK);
    simmim::examples::report_errors() = cluster.reports_errors();
    const auto parse = [&](int n, const char* const* args) { return cluster.agree_parse("simmim_pretrain", simmim::examples::pretrain::parse(n, args)); };
    return simmim::examples::run_main("simmim_pretrain", argc, argv, parse, run);
}
