// examples/finetune_options.hpp: simmim_finetune's options and its parse step (examples/cli_errors.hpp),
// separate from the training in simmim_finetune.cpp so that tests/test_cli_parse.cpp and
// fuzz/fuzz_cli_finetune.cpp call parse() directly.
//
// parse() checks every value CLI11 can check and then validate() the combinations; what needs the --init
// checkpoint (its ViT form under --vit auto), the preset's types or the data (classes, --batch against
// the training set) is checked by run<C>() before any work, as usage errors too.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "cli_checks.hpp"
#include "cli_errors.hpp"
#include "simmim/core/config.hpp"

namespace simmim::examples::finetune {

struct Options {
    std::string data = "fashion-mnist", model = "vit-t4-32-c1", mode = "finetune", init, out = "runs/finetune", vit = "auto";
    int epochs = 0, batch = 64, probe_block = -1, threads = 0;
    std::string precision = "fp32";  // matrix products: fp32 or bf16 (kernels/gemm_bf16.hpp)
    double base_lr = 0, warmup_epochs = -1, warmup_lr = 2.5e-7, min_lr = 2.5e-7, weight_decay = 0.05, layer_decay = 0.65,
           label_smoothing = 0.1, clip = 5.0;
    double label_fraction = 1.0;   // train on a class-balanced fraction of the labelled images (data/subset.hpp)
    double val_fraction = 0.0;     // >0: hold out this class-balanced fraction of the training images and evaluate on it
    // the fine-tuning augmentation (data/augment.hpp, data/mixup.hpp) and regularisation; -1: the preset's default
    int crop_padding = -1;         // RandomCrop padding in pixels; default image_size / 8 (4 at 32 px)
    double hflip = 0.5, random_erase = 0.25, mixup = 0.0, cutmix = 0.0, mix_prob = 1.0, mix_switch = 0.5;
    double drop_path = -1;         // stochastic depth rate of the last block; default 0.1 (ViT), 0 (Swin: not implemented)
    std::string resume;            // continue from this fine-tuning checkpoint
    std::int64_t stop_after = 0;   // stop (with a checkpoint) after N steps of this invocation
    int eval_every = 1;            // evaluate on the test split every N epochs and after the last one
    std::uint64_t seed = 0, label_seed = 0, val_seed = 0;
    std::int64_t log_every = 50, max_train = 0, max_test = 0;
    bool strict_images = false;  // a damaged or unreadable file in an image folder is an error, not skipped
    std::vector<std::string> finetune_only;  // the options given that only --mode finetune uses (validate())
};

/// The checks of a combination of options that CLI11 cannot express (UsageError): --epochs is needed,
/// --probe-block within the preset's depth, and --vit official with --mode finetune (fine-tuning is built
/// for the common ViT). (--epochs is not CLI11's required(): CLI11 reports a missing required option
/// before an unknown one, so a mistyped "--epoch 3" would be reported as a missing --epochs.)
inline void validate(const Options& o) {
    if (o.epochs == 0) throw UsageError("--epochs is required");
    if (o.mode == "linprobe" && !o.finetune_only.empty())
        throw UsageError(o.finetune_only.front() + " is an option of --mode finetune (the linear probe trains on fixed, unaugmented features)");
    if (o.vit == "official" && o.mode == "finetune")
        throw UsageError("--mode finetune is built for the common ViT only; --mode linprobe takes official-ViT encoders");
    for (const auto& p : presets::all)
        if (p.name == o.model && o.probe_block > p.config.depth)
            throw UsageError("--probe-block must lie in [1, " + std::to_string(p.config.depth) + "]");
}

/// Parses and checks simmim_finetune's command line (see cli_errors.hpp for the outcome).
inline Parsed<Options> parse(int argc, const char* const* argv) {
    using namespace simmim::examples::checks;
    using i64 = std::int64_t;
    Options o;
    CLI::App app{"Fine-tune or linearly probe a SimMIM-pretrained (or random) ViT encoder; top-1 on the test split."};
    app.add_option("--mode", o.mode, "finetune or linprobe")->check(CLI::IsMember({"finetune", "linprobe"}))->capture_default_str();
    app.add_option("--data", o.data, "Dataset with labels (as simmim_pretrain --data)")->check(dataset())->capture_default_str();
    app.add_option("--model", o.model, "Model preset (32-px presets and vit-tiny-test)")
        ->check(preset([](const EncoderGeometry& g) { return g.image_size <= 32; }, "simmim_finetune is built for the 32-px presets and vit-tiny-test"))
        ->capture_default_str();
    app.add_option("--vit", o.vit, "ViT form of the encoder: common, official, or auto (from the --init checkpoint's configuration)")
        ->check(CLI::IsMember({"auto", "common", "official"}))->capture_default_str();
    app.add_option("--init", o.init, "Pretraining checkpoint or weights to start the encoder from (default: random init)")->check(CLI::ExistingFile);
    app.add_option("--epochs", o.epochs, "Training epochs (required)")->check(at_least<int>(1));
    app.add_option("--batch", o.batch, "Images (or feature rows) per step")->check(at_least<int>(1))->capture_default_str();
    app.add_option("--base-lr", o.base_lr, "Peak lr per batch 512 (default 1.25e-3 fine-tuning, 0.1 probing)")->check(greater_than<double>(0));
    app.add_option("--warmup-epochs", o.warmup_epochs, "Warmup epochs (default 20% of the run fine-tuning, 10% probing)")->check(at_least<double>(0));
    app.add_option("--warmup-lr", o.warmup_lr, "Warmup start lr per batch 512")->check(at_least<double>(0))->capture_default_str();
    app.add_option("--min-lr", o.min_lr, "Final lr per batch 512")->check(at_least<double>(0))->capture_default_str();
    app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->check(at_least<double>(0))->capture_default_str();
    app.add_option("--layer-decay", o.layer_decay, "Layer-wise lr decay (fine-tuning)")->check(in_range<double>(0, 1, "(]"))->capture_default_str();
    app.add_option("--label-smoothing", o.label_smoothing, "Label smoothing (fine-tuning)")->check(in_range<double>(0, 1, "[)"))->capture_default_str();
    app.add_option("--probe-block", o.probe_block, "Block whose output is probed (default 2/3 of the depth)")->check(at_least<int>(1));
    app.add_option("--label-fraction", o.label_fraction,
                   "Train on this class-balanced fraction of the labelled training images (e.g. 0.1, 0.01), drawn by --label-seed")
        ->check(in_range<double>(0, 1, "(]"))->capture_default_str();
    app.add_option("--label-seed", o.label_seed, "Seed of the --label-fraction subset (fixed apart from --seed)")->capture_default_str();
    app.add_option("--val-fraction", o.val_fraction,
                   "Hold out this class-balanced fraction of the training images (drawn by --val-seed, before --label-fraction) and "
                   "evaluate on it instead of the test split (for choosing hyper-parameters without looking at the test split)")
        ->check(in_range<double>(0, 1, "[)"))->capture_default_str();
    app.add_option("--val-seed", o.val_seed, "Seed of the --val-fraction subset")->capture_default_str();
    app.add_option("--seed", o.seed, "Seed of head init, data order and augmentation")->capture_default_str();
    app.add_option("--threads", o.threads, "OpenMP threads (default: all cores)")->check(at_least<int>(0));
    app.add_option("--precision", o.precision,
                   "Matrix products: fp32, or bf16 (bfloat16 operands, FP32 accumulation, on CPUs with AVX512-BF16)")
        ->check(CLI::IsMember({"fp32", "bf16"}))->capture_default_str();
    app.add_option("--out", o.out, "Output directory")->capture_default_str();
    app.add_option("--log-every", o.log_every, "Progress line every N steps when not on a terminal")->check(at_least<i64>(1))->capture_default_str();
    app.add_option("--max-train", o.max_train, "Use only the first N training images (quick runs)")->check(at_least<i64>(0));
    app.add_option("--max-test", o.max_test, "Evaluate on the first N test (or --val-fraction validation) images only")->check(at_least<i64>(0));
    std::vector<CLI::Option*> finetune_only;
    finetune_only.push_back(app.add_option("--crop-padding", o.crop_padding,
                                           "Random crop with this many pixels of zero padding per side (0: no crop; default image size / 8, 4 at 32 px)")
                                ->check(in_range<int>(0, 64, "[]")));
    finetune_only.push_back(app.add_option("--hflip", o.hflip, "Probability of the horizontal flip (0: off)")->check(in_range<double>(0, 1, "[]"))->capture_default_str());
    finetune_only.push_back(app.add_option("--random-erase", o.random_erase, "Probability of random erasing (0: off)")
                                ->check(in_range<double>(0, 1, "[]"))->capture_default_str());
    finetune_only.push_back(app.add_option("--mixup", o.mixup, "Mixup alpha (0: off; the official fine-tuning uses 0.8)")->check(at_least<double>(0))->capture_default_str());
    finetune_only.push_back(app.add_option("--cutmix", o.cutmix, "CutMix alpha (0: off; the official fine-tuning uses 1.0)")->check(at_least<double>(0))->capture_default_str());
    finetune_only.push_back(app.add_option("--mix-prob", o.mix_prob, "Probability that a batch is mixed (with --mixup or --cutmix)")
                                ->check(in_range<double>(0, 1, "[]"))->capture_default_str());
    finetune_only.push_back(app.add_option("--mix-switch", o.mix_switch, "Probability of CutMix rather than Mixup when both are on")
                                ->check(in_range<double>(0, 1, "[]"))->capture_default_str());
    finetune_only.push_back(app.add_option("--drop-path", o.drop_path, "Stochastic depth rate of the last block, linear from 0 (default 0.1 for the ViT presets)")
                                ->check(in_range<double>(0, 1, "[)")));
    finetune_only.push_back(app.add_option("--resume", o.resume, "Continue from this fine-tuning checkpoint (bit-identical with the same thread count)")
                                ->check(CLI::ExistingFile));
    finetune_only.push_back(app.add_option("--stop-after", o.stop_after, "Stop (saving a checkpoint) after N steps of this invocation, as if interrupted")
                                ->check(at_least<i64>(0)));
    finetune_only.push_back(app.add_option("--eval-every", o.eval_every, "Evaluate on the test split (or the --val-fraction validation images) every N epochs and after the last one (metrics rows of other epochs have no test_top1 / val_top1)")
                                ->check(at_least<int>(1))->capture_default_str());
    app.add_flag("--strict-images", o.strict_images, "An image folder's unreadable or damaged (cut short, corrupt) files are an error (exit 1) instead of being skipped and listed");
    return parse_options(app, argc, argv, o, [&](const Options& parsed) {
        o.finetune_only.clear();
        for (const CLI::Option* opt : finetune_only)
            if (opt->count() > 0) o.finetune_only.push_back(opt->get_name());
        validate(parsed);
    });
}

}  // namespace simmim::examples::finetune
