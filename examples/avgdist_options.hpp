// examples/avgdist_options.hpp: simmim_avgdist's options and its parse step (examples/cli_errors.hpp),
// separate from the measurement in simmim_avgdist.cpp so that tests/test_cli_parse.cpp and
// fuzz/fuzz_cli_avgdist.cpp call parse() directly. A --csv file that cannot be opened is a runtime
// error (exit 1), found before the work.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "cli_checks.hpp"
#include "cli_errors.hpp"

namespace simmim::examples::avgdist {

struct Options {
    int image_size = 224;
    int samples = 200;
    std::uint64_t seed = 0;
    int model_patch = 16;
    std::vector<int> mask_patches{4, 8, 16, 32, 64};
    std::string csv;
};

/// The check CLI11 cannot express (UsageError): the image is a whole number of --model-patch tokens.
/// (A mask patch size that does not divide the image is skipped with a note, not an error.)
inline void validate(const Options& o) {
    if (o.image_size % o.model_patch != 0)
        throw UsageError("--image-size " + std::to_string(o.image_size) + " is not a multiple of --model-patch " + std::to_string(o.model_patch));
}

/// Parses and checks simmim_avgdist's command line (see cli_errors.hpp for the outcome).
inline Parsed<Options> parse(int argc, const char* const* argv) {
    using namespace simmim::examples::checks;
    Options opt;
    CLI::App app{"AvgDist (mean distance from masked to nearest visible pixel) versus mask ratio for each masking policy."};
    app.add_option("--image-size", opt.image_size, "Image side in pixels (at most 4096)")->check(in_range<int>(1, 4096, "[]"))->capture_default_str();
    app.add_option("--samples", opt.samples, "Masks averaged per policy and ratio")->check(at_least<int>(1))->capture_default_str();
    app.add_option("--seed", opt.seed, "Seed of the masks")->capture_default_str();
    app.add_option("--model-patch", opt.model_patch, "Token size in pixels for random tokens, central square and block-wise masking")
        ->check(at_least<int>(1))
        ->capture_default_str();
    app.add_option("--mask-patches", opt.mask_patches, "Mask patch sizes of the official random generator")
        ->delimiter(',')
        ->check(at_least<int>(1))
        ->capture_default_str();
    app.add_option("--csv", opt.csv, "Also write the results as CSV to this file");
    return parse_options(app, argc, argv, opt, validate);
}

}  // namespace simmim::examples::avgdist
