// benchmarks/bench_encode.cpp: peak memory and speed of the inference path, encoder.encode(), against the
// training forward's activation footprint.
//
//   bench_encode [preset] [batch] [form]     defaults: vit-b16-224 64 common   (form: common | official)
//
// Builds the SimMIM model of the preset (weights and their gradients: the arena of a trainable model),
// encodes `batch` random N(0, 1) images without a mask, and prints one line of JSON:
//   peak_rss_MB        getrusage ru_maxrss of the whole process after encode (weights included)
//   params_MB          the parameter arena (values + gradients)
//   train_activations_MB  SimMIM::activation_bytes(batch): what forward + backward would hold at this batch
//   ms_per_image       wall time of encode / batch (median of 3 runs after one warm-up)
// Validation before timing: the features are finite and two runs give the same bits.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "simmim/core/config.hpp"
#include "simmim/core/random.hpp"
#include "simmim/model/simmim_model.hpp"
#include "simmim/model/vit_official.hpp"

namespace {

double peak_rss_megabytes() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB on Linux
}

template <class Model>
int run(const std::string& preset, int batch, const char* form) {
    using namespace simmim;
    auto model = std::make_unique<Model>(RandomMaskPatch(Model::S, Model::S, Model::geometry.mask_cell(), 0.5), 1);
    const auto& const_model = *model;
    std::vector<float> images(static_cast<std::size_t>(batch) * Model::image_numel), features(static_cast<std::size_t>(batch) * Model::L * Model::D),
        again(features.size());
    Rng rng(3);
    for (auto& v : images) v = static_cast<float>(rng.normal());
    const_model.encoder().encode(features.data(), images.data(), nullptr, batch);
    const_model.encoder().encode(again.data(), images.data(), nullptr, batch);
    if (features != again || !std::all_of(features.begin(), features.end(), [](float v) { return std::isfinite(v); })) {
        std::fprintf(stderr, "bench_encode: validation failed (features not finite or not reproducible)\n");
        return 1;
    }
    std::vector<double> ms;
    for (int r = 0; r < 3; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        const_model.encoder().encode(features.data(), images.data(), nullptr, batch);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    std::printf("{\"preset\":\"%s\",\"form\":\"%s\",\"batch\":%d,\"peak_rss_MB\":%.1f,\"params_MB\":%.1f,\"train_activations_MB\":%.1f,"
                "\"ms_per_image\":%.3f}\n",
                preset.c_str(), form, batch, peak_rss_megabytes(), 2.0 * sizeof(float) * model->params().size() / 1048576.0,
                static_cast<double>(Model::activation_bytes(batch)) / 1048576.0, ms[1] / batch);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string preset = argc > 1 ? argv[1] : "vit-b16-224";
    const int batch = argc > 2 ? std::atoi(argv[2]) : 64;
    const std::string form = argc > 3 ? argv[3] : "common";
    if (batch < 1 || (form != "common" && form != "official")) {
        std::fprintf(stderr, "usage: bench_encode [preset] [batch >= 1] [common|official]\n");
        return 2;
    }
    int rc = 2;
    const bool found = simmim::dispatch_preset(preset, [&]<simmim::ViTConfig C>() {
        if (form == "common") rc = run<simmim::ViTSimMIM<float, C>>(preset, batch, "common");
        else rc = run<simmim::OfficialViTSimMIM<float, C>>(preset, batch, "official");
    });
    if (!found) std::fprintf(stderr, "bench_encode: unknown preset '%s'\n", preset.c_str());
    return found ? rc : 2;
}
