// examples/pretrain_options.hpp: simmim_pretrain's options and its parse step (examples/cli_errors.hpp),
// separate from the training in simmim_pretrain.cpp so that tests/test_cli_parse.cpp and
// fuzz/fuzz_cli_pretrain.cpp call parse() directly.
//
// parse() checks every value CLI11 can check (validators, excludes) and then validate() the combinations;
// what needs the preset's types or the data (the mask patch against the image and model patch, --batch
// against the dataset, --warmup against the run length, a --resume of another configuration) and the
// output directory are checked by train() before any work, as usage errors too.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>

#include "cli_checks.hpp"
#include "cli_errors.hpp"
#include "model_variants.hpp"

namespace simmim::examples::pretrain {

struct Options {
    std::string data = "fashion-mnist", model = "vit-t4-32-c1", out = "runs/pretrain", resume;
    std::int64_t steps = 0;
    double epochs = 0;
    int batch = 64;
    double base_lr = 2e-3, warmup_lr = 1e-6, min_lr = 1e-5, weight_decay = 0.05, clip = 5.0;  // lrs per batch 512
    std::int64_t warmup = -1;  // steps; -1: 10% of the run
    double mask_ratio = 0;     // 0: the preset's
    int mask_patch = 0;        // 0: the preset's
    std::uint64_t seed = 0;
    int threads = 0;           // 0: all cores
    std::string precision = "fp32";  // matrix products: fp32, or bf16 (kernels/gemm_bf16.hpp)
    std::int64_t save_every = 500, log_every = 10, vis_every = 0, stop_after = 0;
    int vis_count = 8;
    bool skip_nonfinite = false;
    bool strict_images = false;  // a damaged or unreadable file in an image folder is an error, not skipped
    std::int64_t inject_nan_at = -1;  // testing: poison one gradient element at this step
    // distributed runs (mpirun / srun; docs/distributed.md)
    std::int64_t check_sync = 0;      // every K steps, compare the parameters of the ranks (0: never)
    double bucket_mb = 4;             // size of the gradient buckets reduced while backward runs
    std::int64_t inject_desync_at = -1;  // testing: change one parameter of the last rank after this step
    simmim::examples::ModelChoice variant;  // ablations: ViT form, head, loss, target, resolution
};

/// The checks of a combination of options that CLI11 cannot express (UsageError): one of --steps and
/// --epochs is needed (CLI11 refuses both), --drop-path needs --vit official, and this binary must offer
/// the model variant for the preset (model_variants.hpp: dispatch_model without building a model).
inline void validate(const Options& o) {
    if (o.steps == 0 && o.epochs == 0) throw UsageError("give one of --steps N or --epochs E");
    o.variant.validate();
    simmim::examples::dispatch_preset_model(o.model, o.variant, []<auto, class>() {});
}

/// Parses and checks simmim_pretrain's command line (see cli_errors.hpp for the outcome).
inline Parsed<Options> parse(int argc, const char* const* argv) {
    using namespace simmim::examples::checks;
    using i64 = std::int64_t;
    Options o;
    CLI::App app{"SimMIM pretraining of a ViT on real images (Fashion-MNIST/MNIST IDX, CIFAR binary, or a folder of JPEG/PNG)."};
    app.add_option("--data", o.data, "Dataset: 'fashion-mnist' (Debian package), or a directory of IDX files, CIFAR batches or images")
        ->check(dataset())->capture_default_str();
    app.add_option("--model", o.model, "Model preset (simmim_reconstruct --list-models)")->check(preset())->capture_default_str();
    auto* steps = app.add_option("--steps", o.steps, "Training steps (iterations); or use --epochs")->check(greater_than<i64>(0));
    auto* epochs = app.add_option("--epochs", o.epochs, "Training epochs (fractions allowed); or use --steps")->check(in_range<double>(0, 1e9, "(]"));
    steps->excludes(epochs);
    epochs->excludes(steps);
    app.add_option("--batch", o.batch, "Images per step")->check(at_least<int>(1))->capture_default_str();
    app.add_option("--base-lr", o.base_lr, "Peak learning rate per batch 512 (scaled by batch/512)")->check(greater_than<double>(0))->capture_default_str();
    app.add_option("--warmup-lr", o.warmup_lr, "Initial warmup learning rate per batch 512")->check(at_least<double>(0))->capture_default_str();
    app.add_option("--min-lr", o.min_lr, "Final cosine learning rate per batch 512")->check(at_least<double>(0))->capture_default_str();
    app.add_option("--warmup", o.warmup, "Linear warmup steps (default: 10% of the run)")->check(at_least<i64>(0));
    app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay (not on 1-D tensors, biases, tokens, position embedding)")
        ->check(at_least<double>(0))->capture_default_str();
    app.add_option("--clip-grad", o.clip, "Gradient-norm clipping threshold")->check(greater_than<double>(0))->capture_default_str();
    app.add_option("--mask-ratio", o.mask_ratio, "Fraction of mask patches masked, in (0, 1) (default: the preset's 0.6)")->check(in_range<double>(0, 1, "()"));
    app.add_option("--mask-patch", o.mask_patch, "Side of a mask patch in pixels (default: the preset's)")->check(at_least<int>(1));
    app.add_option("--seed", o.seed, "Seed of initialisation, data order, augmentation and masks")->capture_default_str();
    app.add_option("--threads", o.threads, "OpenMP threads (default: all cores)")->check(at_least<int>(0));
    app.add_option("--precision", o.precision,
                   "Matrix products: fp32, or bf16 (bfloat16 operands, FP32 accumulation, on CPUs with AVX512-BF16; "
                   "weights, optimiser state and checkpoints stay FP32)")
        ->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
    app.add_option("--out", o.out, "Output directory: checkpoint, metrics, pictures")->capture_default_str();
    app.add_option("--resume", o.resume, "Continue from this checkpoint (bit-identical with the same thread count)")->check(CLI::ExistingFile);
    app.add_option("--save-every", o.save_every, "Checkpoint every N steps (and at the end; 0: only at the end)")->check(at_least<i64>(0))->capture_default_str();
    app.add_option("--log-every", o.log_every, "Log a metrics line every N steps")->check(at_least<i64>(1))->capture_default_str();
    app.add_option("--vis-every", o.vis_every, "Write a reconstruction picture every N steps (0: only at the end)")->check(at_least<i64>(0))->capture_default_str();
    app.add_option("--vis-count", o.vis_count, "Validation images in the reconstruction picture")->check(at_least<int>(1))->capture_default_str();
    app.add_option("--stop-after", o.stop_after, "Stop (saving a checkpoint) after N steps of this invocation, as if interrupted")->check(at_least<i64>(0));
    app.add_option("--inject-nan-at", o.inject_nan_at, "Testing: make one gradient element NaN at this step")->group("");
    const char* distributed = "Distributed (under mpirun or srun; docs/distributed.md)";
    app.add_option("--check-sync", o.check_sync, "Every K steps, check that every rank holds the same parameters (0: never)")
        ->check(at_least<i64>(0))->capture_default_str()->group(distributed);
    app.add_option("--bucket-mb", o.bucket_mb, "Size in MB of the gradient buckets summed over the ranks while backward runs")
        ->check(in_range<double>(0, 1024, "(]"))->capture_default_str()->group(distributed);
    app.add_option("--inject-desync-at", o.inject_desync_at, "Testing: change one parameter of the last rank after this step")->group("");
    auto& v = o.variant;
    const char* ablation = "Ablations (docs/ablations.md)";
    app.add_option("--vit", v.vit, "ViT form: common (timm) or official (SimMIM/BEiT: relative position bias, layer scale, q/v bias)")
        ->check(CLI::IsMember({"common", "official"}))->capture_default_str()->group(ablation);
    app.add_option("--drop-path", v.drop_path, "Stochastic depth rate of the official ViT (default 0.1 as its pretraining)")
        ->check(in_range<double>(0, 1, "[)"))->group(ablation);
    app.add_option("--head", v.head, "Prediction head: linear (official) or mlp (2 layers, GELU)")
        ->check(CLI::IsMember({"linear", "mlp"}))->capture_default_str()->group(ablation);
    app.add_option("--pred-resolution", v.pred_resolution, "Prediction resolution R (default: the image size); the target is the image area-averaged to R x R")
        ->check(at_least<int>(1))->group(ablation);
    app.add_option("--loss", v.loss, "Pixel loss: l1 (official) or l2")->check(CLI::IsMember({"l1", "l2"}))->capture_default_str()->group(ablation);
    app.add_option("--loss-region", v.region, "Pixels in the loss: masked (official) or all")
        ->check(CLI::IsMember({"masked", "all"}))->capture_default_str()->group(ablation);
    app.add_option("--target", v.target, "Target: raw (normalised image, official) or norm (SwinV2 per-pixel normalised, 47x47 window)")
        ->check(CLI::IsMember({"raw", "norm"}))->capture_default_str()->group(ablation);
    app.add_flag("--skip-nonfinite", o.skip_nonfinite, "Skip (and count) steps whose loss or gradient is not finite instead of stopping");
    app.add_flag("--strict-images", o.strict_images, "An image folder's unreadable or damaged (cut short, corrupt) files are an error (exit 1) instead of being skipped and listed");
    return parse_options(app, argc, argv, o, validate);
}

}  // namespace simmim::examples::pretrain
