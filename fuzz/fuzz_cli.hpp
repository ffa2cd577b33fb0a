// fuzz/fuzz_cli.hpp: the bodies of the command-line fuzz targets, one function per example program, so
// that the libFuzzer binaries (fuzz/fuzz_cli_<program>.cpp) and the tests (tests/test_cli_parse.cpp)
// run exactly the same code on an input.
//
// Each function builds an argv from the input (split at '\n', at most kMaxArgs arguments, preceded by
// the program name) and calls the program's parse() (examples/<program>_options.hpp) on it: only the
// parse step runs, never the work, so every input costs microseconds. The outcome must be one of
//   - options: then validate(options) passes again and the oracle holds: every field lies in the range
//     the program documents (written here independently of the validators, so a value a validator lets
//     through, NaN for instance, is a finding);
//   - --help: exit code 0, a help text, no error;
//   - a usage error: exit code 2, a non-empty message on one line, no help.
// Anything else (an exception leaving parse(), a broken oracle, a sanitizer report) is a finding.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "../examples/avgdist_options.hpp"
#include "../examples/finetune_options.hpp"
#include "../examples/pretrain_options.hpp"
#include "../examples/reconstruct_options.hpp"
#include "fuzz_util.hpp"

namespace simmim::fuzz {

inline constexpr std::size_t kMaxArgs = 64;

/// The argv of an input: the program name, then the input split at '\n'; nullopt when the input has
/// more than kMaxArgs arguments.
inline std::optional<std::vector<std::string>> cli_args(const char* program, const std::uint8_t* data, std::size_t size) {
    std::vector<std::string> args{program};
    if (size > 0) args.emplace_back();
    for (std::size_t i = 0; i < size; ++i) {
        if (data[i] == '\n') args.emplace_back();
        else args.back().push_back(static_cast<char>(data[i]));
    }
    if (args.size() > kMaxArgs + 1) return std::nullopt;
    return args;
}

/// parse() on `args` (args[0] is the program name), with the checks above; returns the options, if any.
template <class Parse, class Validate, class Oracle>
auto check_parse(const std::vector<std::string>& args, Parse&& parse, Validate&& validate, Oracle&& oracle) {
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    argv.push_back(nullptr);
    const auto parsed = parse(static_cast<int>(args.size()), argv.data());
    const std::string program = args.at(0);
    if (parsed) {
        require(parsed.exit_code == 0 && parsed.error.empty() && parsed.help.empty(), program + ": options together with an exit code, error or help");
        try {
            validate(*parsed.options);
        } catch (const examples::UsageError& e) {
            oracle_failure(program + ": parse() returned options that validate() refuses: " + e.what());
        }
        oracle(*parsed.options);
    } else if (parsed.exit_code == examples::kExitSuccess) {
        require(!parsed.help.empty() && parsed.error.empty(), program + ": exit 0 without options must be --help");
    } else {
        require(parsed.exit_code == examples::kExitUsage, program + ": parse() gave exit code " + std::to_string(parsed.exit_code) + ", expected 0 or 2");
        require(!parsed.error.empty() && parsed.error.find('\n') == std::string::npos, program + ": a usage error must be one non-empty line");
        require(parsed.help.empty(), program + ": a usage error with a help text");
    }
    return parsed.options;
}

namespace detail {

inline bool finite_in(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }
inline bool is_preset(const std::string& name) {
    for (const auto& p : presets::all)
        if (p.name == name) return true;
    return false;
}
inline bool is_directory(const std::string& path) {
    std::error_code ec;
    return std::filesystem::is_directory(path, ec);
}
inline bool is_file(const std::string& path) {
    std::error_code ec;
    return std::filesystem::is_regular_file(path, ec);
}
inline bool one_of(const std::string& v, std::initializer_list<const char*> names) {
    for (const char* n : names)
        if (v == n) return true;
    return false;
}

}  // namespace detail

/// simmim_pretrain's ranges (docs/pretraining.md).
inline void pretrain_oracle(const examples::pretrain::Options& o) {
    using namespace detail;
    auto need = [](bool ok, const std::string& what) { require(ok, "simmim_pretrain: parse() accepted " + what); };
    need((o.steps > 0) != (o.epochs > 0) && o.steps >= 0, "not exactly one positive --steps or --epochs");
    need(finite_in(o.epochs, 0, 1e9), "--epochs " + std::to_string(o.epochs));
    need(o.batch >= 1, "--batch " + std::to_string(o.batch));
    need(std::isfinite(o.base_lr) && o.base_lr > 0, "--base-lr " + std::to_string(o.base_lr));
    for (const double v : {o.warmup_lr, o.min_lr, o.weight_decay}) need(finite_in(v, 0, HUGE_VAL), "a learning rate or weight decay " + std::to_string(v));
    need(std::isfinite(o.clip) && o.clip > 0, "--clip-grad " + std::to_string(o.clip));
    need(o.warmup >= -1, "--warmup " + std::to_string(o.warmup));
    need(o.mask_ratio == 0 || (o.mask_ratio > 0 && o.mask_ratio < 1), "--mask-ratio " + std::to_string(o.mask_ratio));
    need(o.mask_patch >= 0 && o.threads >= 0, "a negative --mask-patch or --threads");
    need(o.precision == "fp32" || o.precision == "bf16", "--precision " + o.precision);
    need(o.save_every >= 0 && o.vis_every >= 0 && o.stop_after >= 0 && o.log_every >= 1 && o.vis_count >= 1, "a step count out of range");
    need(o.check_sync >= 0 && finite_in(o.bucket_mb, 0, 1024) && o.bucket_mb > 0, "--check-sync " + std::to_string(o.check_sync) +
                                                                                     " --bucket-mb " + std::to_string(o.bucket_mb));
    need(o.data == "fashion-mnist" || is_directory(o.data), "--data " + o.data);
    need(o.resume.empty() || is_file(o.resume), "--resume " + o.resume);
    need(is_preset(o.model), "--model " + o.model);
    const auto& v = o.variant;
    need(one_of(v.vit, {"common", "official"}) && one_of(v.head, {"linear", "mlp"}) && one_of(v.loss, {"l1", "l2"}) &&
             one_of(v.region, {"masked", "all"}) && one_of(v.target, {"raw", "norm"}),
         "a model choice not offered");
    need(v.pred_resolution >= 0, "--pred-resolution " + std::to_string(v.pred_resolution));
    need(v.drop_path == -1 || (v.drop_path >= 0 && v.drop_path < 1), "--drop-path " + std::to_string(v.drop_path));
    need(!(v.drop_path > 0) || v.vit == "official", "--drop-path without --vit official");
}

/// simmim_finetune's ranges.
inline void finetune_oracle(const examples::finetune::Options& o) {
    using namespace detail;
    auto need = [](bool ok, const std::string& what) { require(ok, "simmim_finetune: parse() accepted " + what); };
    need(one_of(o.mode, {"finetune", "linprobe"}) && one_of(o.vit, {"auto", "common", "official"}), "--mode " + o.mode + " --vit " + o.vit);
    need(!(o.mode == "finetune" && o.vit == "official"), "--mode finetune --vit official");
    need(o.data == "fashion-mnist" || is_directory(o.data), "--data " + o.data);
    need(o.init.empty() || is_file(o.init), "--init " + o.init);
    bool small_preset = false;
    for (const auto& p : presets::all)
        if (p.name == o.model) {
            small_preset = p.config.image_size <= 32;
            need(o.probe_block == -1 || (o.probe_block >= 1 && o.probe_block <= p.config.depth), "--probe-block " + std::to_string(o.probe_block));
        }
    need(small_preset, "--model " + o.model);
    need(o.epochs >= 1 && o.batch >= 1 && o.log_every >= 1 && o.max_train >= 0 && o.max_test >= 0, "a count out of range");
    need(finite_in(o.base_lr, 0, HUGE_VAL) && (o.warmup_epochs == -1 || finite_in(o.warmup_epochs, 0, HUGE_VAL)), "a negative or non-finite --base-lr or --warmup-epochs");
    for (const double v : {o.warmup_lr, o.min_lr, o.weight_decay}) need(finite_in(v, 0, HUGE_VAL), "a learning rate or weight decay " + std::to_string(v));
    need(std::isfinite(o.layer_decay) && o.layer_decay > 0 && o.layer_decay <= 1, "--layer-decay " + std::to_string(o.layer_decay));
    need(std::isfinite(o.label_smoothing) && o.label_smoothing >= 0 && o.label_smoothing < 1, "--label-smoothing " + std::to_string(o.label_smoothing));
    need(std::isfinite(o.label_fraction) && o.label_fraction > 0 && o.label_fraction <= 1, "--label-fraction " + std::to_string(o.label_fraction));
    need(o.threads >= 0, "--threads " + std::to_string(o.threads));
    need(o.precision == "fp32" || o.precision == "bf16", "--precision " + o.precision);
    need(o.crop_padding >= -1 && o.crop_padding <= 64, "--crop-padding " + std::to_string(o.crop_padding));
    for (const double p : {o.hflip, o.random_erase, o.mix_prob, o.mix_switch}) need(finite_in(p, 0, 1), "a probability " + std::to_string(p));
    need(finite_in(o.mixup, 0, HUGE_VAL) && finite_in(o.cutmix, 0, HUGE_VAL), "--mixup or --cutmix out of range");
    need(o.drop_path == -1 || (o.drop_path >= 0 && o.drop_path < 1), "--drop-path " + std::to_string(o.drop_path));
    need(o.resume.empty() || is_file(o.resume), "--resume " + o.resume);
    need(o.stop_after >= 0, "--stop-after " + std::to_string(o.stop_after));
    need(o.mode == "finetune" || o.finetune_only.empty(), "a fine-tuning option with --mode linprobe");
}

/// simmim_reconstruct's requirements.
inline void reconstruct_oracle(const examples::reconstruct::Options& o) {
    using namespace detail;
    auto need = [](bool ok, const std::string& what) { require(ok, "simmim_reconstruct: parse() accepted " + what); };
    if (o.list_models) return;
    need(is_preset(o.model), "--model '" + o.model + "'");
    need(is_file(o.weights) && is_file(o.input), "--weights " + o.weights + " --input " + o.input);
    need(!o.output.empty(), "no --output");
}

/// simmim_avgdist's ranges.
inline void avgdist_oracle(const examples::avgdist::Options& o) {
    auto need = [](bool ok, const std::string& what) { require(ok, "simmim_avgdist: parse() accepted " + what); };
    need(o.image_size >= 1 && o.image_size <= 4096, "--image-size " + std::to_string(o.image_size));
    need(o.samples >= 1 && o.model_patch >= 1 && o.image_size % o.model_patch == 0, "--samples or --model-patch out of range");
    for (const int p : o.mask_patches) need(p >= 1, "--mask-patches with " + std::to_string(p));
}

inline void cli_pretrain_input(const std::uint8_t* data, std::size_t size) {
    if (const auto args = cli_args("simmim_pretrain", data, size))
        check_parse(*args, examples::pretrain::parse, examples::pretrain::validate, pretrain_oracle);
}
inline void cli_finetune_input(const std::uint8_t* data, std::size_t size) {
    if (const auto args = cli_args("simmim_finetune", data, size))
        check_parse(*args, examples::finetune::parse, examples::finetune::validate, finetune_oracle);
}
inline void cli_reconstruct_input(const std::uint8_t* data, std::size_t size) {
    if (const auto args = cli_args("simmim_reconstruct", data, size))
        check_parse(*args, examples::reconstruct::parse, examples::reconstruct::validate, reconstruct_oracle);
}
inline void cli_avgdist_input(const std::uint8_t* data, std::size_t size) {
    if (const auto args = cli_args("simmim_avgdist", data, size))
        check_parse(*args, examples::avgdist::parse, examples::avgdist::validate, avgdist_oracle);
}

}  // namespace simmim::fuzz
