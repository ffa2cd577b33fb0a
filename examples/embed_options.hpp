// examples/embed_options.hpp: simmim_embed's options and its parse step (examples/cli_errors.hpp), separate
// from the work in simmim_embed.cpp so that tests/test_cli_parse.cpp calls parse() directly. What needs the
// weights (the encoder they hold), the data (its channels) or the output's directory is checked by run().
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <utility>

#include "cli_checks.hpp"
#include "cli_errors.hpp"

namespace simmim::examples::embed {

struct Options {
    std::string weights, data, split = "test", pool = "mean", out;
    std::int64_t limit = 0;  // 0: every image of the split
    int batch = 128, threads = 0;
    bool strict_images = false;  // a damaged or unreadable file in an image folder is an error, not skipped
};

/// The check CLI11 cannot express (UsageError): --weights, --data and --out are required. (Not CLI11's
/// required(): it reports a missing required option before an unknown one.)
inline void validate(const Options& o) {
    for (const auto& [flag, value] : {std::pair{"--weights", &o.weights}, {"--data", &o.data}, {"--out", &o.out}})
        if (value->empty()) throw UsageError(std::string(flag) + " is required (run with --help)");
}

/// Parses and checks simmim_embed's command line (see cli_errors.hpp for the outcome).
inline Parsed<Options> parse(int argc, const char* const* argv) {
    using namespace simmim::examples::checks;
    Options o;
    CLI::App app{"Encode a dataset split with a pretrained encoder (any compiled preset, either ViT form); write the features."};
    app.add_option("--weights", o.weights, "Weights or training checkpoint (safetensors) holding the encoder (required)")
        ->check(CLI::ExistingFile);
    app.add_option("--data", o.data, "fashion-mnist, or a directory of IDX / CIFAR / image files (required)")->check(dataset());
    app.add_option("--split", o.split, "Which split to encode")->check(CLI::IsMember({"test", "train"}))->capture_default_str();
    app.add_option("--limit", o.limit, "Encode only the first N images of the split (0: all)")->check(at_least<std::int64_t>(0));
    app.add_option("--batch", o.batch, "Images per encoder call")->check(at_least<int>(1))->capture_default_str();
    app.add_option("--pool", o.pool, "mean: features (N, D) averaged over the output tokens; none: (N, tokens, D)")
        ->check(CLI::IsMember({"mean", "none"}))
        ->capture_default_str();
    app.add_option("--threads", o.threads, "OpenMP threads (default: all cores)")->check(at_least<int>(0));
    app.add_option("--out", o.out, "Output safetensors: features F32, labels I64 when the data has labels (required)");
    app.add_flag("--strict-images", o.strict_images, "An image folder's unreadable or damaged (cut short, corrupt) files are an error (exit 1) instead of being skipped and listed");
    return parse_options(app, argc, argv, o, validate);
}

}  // namespace simmim::examples::embed
