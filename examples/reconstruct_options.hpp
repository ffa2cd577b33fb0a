// examples/reconstruct_options.hpp: simmim_reconstruct's options and its parse step (examples/cli_errors.hpp),
// separate from the work in simmim_reconstruct.cpp so that tests/test_cli_parse.cpp and
// fuzz/fuzz_cli_reconstruct.cpp call parse() directly. The contents of the files (tensors, shapes, dtypes)
// are checked by the run, as runtime errors (exit 1).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <utility>

#include "cli_checks.hpp"
#include "cli_errors.hpp"

namespace simmim::examples::reconstruct {

struct Options {
    std::string model, weights, input, output, png;
    bool grads = false;
    std::uint64_t seed = 0;
    bool list_models = false;  // print the presets and exit
};

/// The check CLI11 cannot express (UsageError): --model, --weights, --input and --output are required
/// unless --list-models is given.
inline void validate(const Options& o) {
    if (o.list_models) return;
    for (const auto& [flag, value] : {std::pair{"--model", &o.model}, {"--weights", &o.weights}, {"--input", &o.input}, {"--output", &o.output}})
        if (value->empty()) throw UsageError(std::string(flag) + " is required (run with --help)");
}

/// Parses and checks simmim_reconstruct's command line (see cli_errors.hpp for the outcome).
inline Parsed<Options> parse(int argc, const char* const* argv) {
    Options o;
    CLI::App app{"Run a SimMIM model on a batch of images; write prediction, mask, loss (and gradients)."};
    app.add_flag("--list-models", o.list_models, "Print the model presets with their dimensions and exit");
    app.add_option("--model", o.model, "Model preset (see --list-models)")->check(checks::preset());
    app.add_option("--weights", o.weights, "Model weights, safetensors under the official state-dict names")->check(CLI::ExistingFile);
    app.add_option("--input", o.input, "Input safetensors: `images` F32 [B,C,H,W], optional `mask` [B,h,w]")->check(CLI::ExistingFile);
    app.add_option("--output", o.output, "Output safetensors: pred, mask, loss (and grad.<name> with --grads)");
    app.add_flag("--grads", o.grads, "Also write the gradient of the loss for every parameter");
    app.add_option("--seed", o.seed, "Seed of the mask drawn when the input has none");
    app.add_option("--png", o.png, "Write a picture grid: original | masked | reconstruction | prediction");
    return parse_options(app, argc, argv, o, validate);
}

}  // namespace simmim::examples::reconstruct
