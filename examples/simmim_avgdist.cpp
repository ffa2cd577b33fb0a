// simmim_avgdist: AvgDist (mean distance from a masked pixel to the nearest visible pixel) against the
// mask ratio for every masking policy, as in Figure 3b of the SimMIM paper.
//
//   simmim_avgdist [--image-size 224] [--samples 200] [--seed 0] [--model-patch 16]
//                  [--mask-patches 4,8,16,32,64] [--csv FILE]
//
// Series: the official random mask-patch generator for each mask patch size (model patch 16 when it
// divides the mask patch, else 4, else the mask patch itself; a size that does not divide the image is
// skipped with a note), and at --model-patch: random single tokens, the central square and BEiT's
// block-wise masking. Ratios 0.1, 0.2, ..., 0.9. AvgDist is computed exactly at pixel resolution on the
// upsampled mask and averaged over --samples masks; sample i of every series and ratio is step i of the
// policy under --seed (common random numbers, so the curves are smooth). A mask with no visible pixel
// has no AvgDist: such a cell prints "all" (all masked) and is NaN in the CSV.
// Prints the AvgDist table and the mean masked fraction; --csv writes one row per series and ratio.
// Exit code 2 for usage errors, 1 for other errors.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "simmim/analysis/avgdist.hpp"
#include "simmim/masking/blockwise.hpp"
#include "simmim/masking/central_square.hpp"
#include "simmim/masking/masking.hpp"
#include "avgdist_options.hpp"
#include "cli_errors.hpp"

namespace {

using simmim::examples::avgdist::Options;

/// AvgDist statistics of one (series, ratio) cell over all samples.
struct Cell {
    bool valid = false;           // false: the policy rejects this ratio (reason in `note`)
    std::string note;
    double avg_dist = 0;          // mean over samples; NaN if any sample has no visible pixel
    double avg_dist_sd = 0;       // sample standard deviation over samples
    double masked_fraction = 0;   // mean fraction of masked pixels
    int all_masked = 0;           // samples with no visible pixel
};

struct Series {
    std::string name;      // e.g. "random mask patch 32"
    std::string policy;    // random_mask_patch | random_tokens | central_square | blockwise
    int mask_patch = 0;    // 0 when the policy has none
    int model_patch = 0;
    std::vector<Cell> cells;  // one per ratio
};

constexpr int kRatios = 9;
double ratio_at(int k) { return (k + 1) / 10.0; }

/// Mean AvgDist of `samples` masks of `policy` (sample i = step i under `seed`), each upsampled by model_patch.
template <simmim::MaskingPolicy Policy>
Cell measure(const Policy& policy, int model_patch, int samples, std::uint64_t seed) {
    const int g = policy.token_grid();
    const int side = g * model_patch;
    std::vector<double> dist(static_cast<std::size_t>(samples));      // (samples,)
    std::vector<double> fraction(static_cast<std::size_t>(samples));  // (samples,)
#pragma omp parallel
    {
        std::vector<float> tokens(static_cast<std::size_t>(g) * g);  // (g, g)
#pragma omp for schedule(static)
        for (int i = 0; i < samples; ++i) {
            policy.generate(seed, i, 1, tokens.data());
            const std::vector<std::uint8_t> pixels = simmim::analysis::upsample_token_mask(tokens.data(), g, model_patch);
            std::size_t masked = 0;
            for (const std::uint8_t m : pixels) masked += m;
            fraction[i] = static_cast<double>(masked) / static_cast<double>(pixels.size());
            dist[i] = simmim::analysis::avg_dist(pixels.data(), side, side);
        }
    }
    Cell cell;
    cell.valid = true;
    double sum = 0, sum_fraction = 0;
    for (int i = 0; i < samples; ++i) {
        if (std::isnan(dist[i])) ++cell.all_masked;
        sum += dist[i];
        sum_fraction += fraction[i];
    }
    cell.avg_dist = sum / samples;
    cell.masked_fraction = sum_fraction / samples;
    double squares = 0;
    for (int i = 0; i < samples; ++i) squares += (dist[i] - cell.avg_dist) * (dist[i] - cell.avg_dist);
    cell.avg_dist_sd = samples > 1 ? std::sqrt(squares / (samples - 1)) : 0.0;
    return cell;
}

/// One series: make(ratio) builds the policy (it may reject a ratio with std::invalid_argument).
template <class MakePolicy>
Series run_series(std::string name, std::string policy, int mask_patch, int model_patch, const Options& opt,
                  MakePolicy make) {
    Series s{std::move(name), std::move(policy), mask_patch, model_patch, {}};
    for (int k = 0; k < kRatios; ++k) {
        try {
            s.cells.push_back(measure(make(ratio_at(k)), model_patch, opt.samples, opt.seed));
        } catch (const std::invalid_argument& e) {
            Cell rejected;
            rejected.note = e.what();
            s.cells.push_back(rejected);
        }
    }
    return s;
}

int model_patch_for(int mask_patch) {
    if (mask_patch % 16 == 0) return 16;
    if (mask_patch % 4 == 0) return 4;
    return mask_patch;
}

std::string cell_text(const Cell& c, bool fraction) {
    if (!c.valid) return "-";
    if (fraction) return fmt::format("{:.3f}", c.masked_fraction);
    if (c.all_masked > 0) return "all";
    return fmt::format("{:.2f}", c.avg_dist);
}

void print_table(const std::vector<Series>& series, bool fraction) {
    fmt::print("{:<26}", fraction ? "masked fraction" : "AvgDist (px)");
    for (int k = 0; k < kRatios; ++k) fmt::print("{:>7.1f}", ratio_at(k));
    fmt::print("\n");
    for (const Series& s : series) {
        fmt::print("{:<26}", s.name);
        for (const Cell& c : s.cells) fmt::print("{:>7}", cell_text(c, fraction));
        fmt::print("\n");
    }
}

void write_csv(std::ofstream& out, const std::string& path, const std::vector<Series>& series, const Options& opt) {
    out << "policy,series,mask_patch,model_patch,image_size,ratio,masked_fraction,avg_dist,avg_dist_sd,all_masked,samples\n";
    for (const Series& s : series)
        for (int k = 0; k < kRatios; ++k) {
            const Cell& c = s.cells[k];
            if (!c.valid) continue;
            out << fmt::format("{},{},{},{},{},{:.1f},{:.6f},{:.6f},{:.6f},{},{}\n", s.policy, s.name, s.mask_patch,
                               s.model_patch, opt.image_size, ratio_at(k), c.masked_fraction, c.avg_dist, c.avg_dist_sd,
                               c.all_masked, opt.samples);
        }
    if (!out.flush()) throw std::runtime_error("failed writing CSV file '" + path + "'");
}

/// The work of a parsed command line: every series, the tables, the CSV.
int run(const Options& opt) {
    using namespace simmim;
    std::ofstream csv;  // opened first, so a bad path fails before the work
    if (!opt.csv.empty()) {
        csv.open(opt.csv);
        if (!csv) throw std::runtime_error("cannot open CSV file '" + opt.csv + "' for writing");
    }
    std::vector<Series> series;
    std::vector<std::string> notes;
    for (const int p : opt.mask_patches) {
        if (opt.image_size % p != 0) {
            notes.push_back(fmt::format("random mask patch {} skipped: image size {} is not a multiple of {}", p,
                                        opt.image_size, p));
            continue;
        }
        const int model = model_patch_for(p);
        series.push_back(run_series(fmt::format("random mask patch {}", p), "random_mask_patch", p, model, opt,
                                    [&](double r) { return RandomMaskPatch(opt.image_size, p, model, r); }));
    }
    const int mp = opt.model_patch, grid = opt.image_size / opt.model_patch;
    series.push_back(run_series(fmt::format("random tokens ({}px)", mp), "random_tokens", 0, mp, opt,
                                [&](double r) { return RandomTokens(grid, r); }));
    series.push_back(run_series(fmt::format("central square ({}px)", mp), "central_square", 0, mp, opt,
                                [&](double r) { return CentralSquare(opt.image_size, mp, r); }));
    series.push_back(run_series(fmt::format("block-wise BEiT ({}px)", mp), "blockwise", 0, mp, opt,
                                [&](double r) { return BlockWise(opt.image_size, mp, r); }));

    fmt::print("AvgDist at {}x{} px, mean over {} masks per cell (seed {})\n\n", opt.image_size, opt.image_size,
               opt.samples, opt.seed);
    print_table(series, /*fraction=*/false);
    fmt::print("\n");
    print_table(series, /*fraction=*/true);
    for (const Series& s : series)
        for (int k = 0; k < kRatios; ++k) {
            const Cell& c = s.cells[k];
            if (!c.valid) notes.push_back(fmt::format("{} at ratio {:.1f}: {}", s.name, ratio_at(k), c.note));
            else if (c.all_masked > 0)
                notes.push_back(fmt::format("{} at ratio {:.1f}: {} of {} masks have no visible pixel (AvgDist undefined)",
                                            s.name, ratio_at(k), c.all_masked, opt.samples));
        }
    if (!notes.empty()) fmt::print("\nNotes:\n");
    for (const std::string& n : notes) fmt::print("  {}\n", n);
    if (!opt.csv.empty()) {
        write_csv(csv, opt.csv, series, opt);
        fmt::print("\nCSV written to {}\n", opt.csv);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return simmim::examples::run_main("simmim_avgdist", argc, argv, simmim::examples::avgdist::parse, run);
}
