// simmim_embed: the features of a dataset split under a pretrained encoder.
//
//   simmim_embed --weights W --data fashion-mnist|DIR [--split test|train] [--limit N] [--batch 128]
//                [--pool mean|none] [--threads T] --out features.safetensors
//
// The weights (a weights file or a training checkpoint, of any compiled preset in either ViT form, with or
// without the simmim.* metadata) open as an AnyEncoder (simmim/model/any_encoder.hpp); the images of the split
// go through the evaluation transform at the encoder's image size and channels; the output, written atomically:
//   features  F32 (N, D) averaged over the o*o output tokens, or (N, o*o, D) with --pool none
//   labels    I64 (N) when the dataset has labels
//   metadata  format "simmim-features-1", weights, encoder, data, split, count, pool, geometry
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>
#include <vector>

#include "simmim/core/memory.hpp"
#include "simmim/data/open.hpp"
#include "simmim/io/safetensors.hpp"
#include "simmim/model/any_encoder.hpp"
#include "embed_options.hpp"
#include "training_common.hpp"

namespace {

using simmim::examples::UsageError;
using simmim::examples::embed::Options;
namespace fs = std::filesystem;

/// "encoded n/N images  r img/s  ETA": rewritten in place on a terminal, a plain line at every tenth otherwise.
class EmbedProgress {
public:
    explicit EmbedProgress(std::size_t total) : total_(total), tty_(::isatty(::fileno(stdout)) != 0), t0_(clock::now()) {}
    void update(std::size_t done) {
        const double elapsed = std::chrono::duration<double>(clock::now() - t0_).count();
        const double ips = elapsed > 0 ? double(done) / elapsed : 0;
        const std::size_t tenth = total_ >= 10 ? done * 10 / total_ : (done == total_ ? 10 : 0);
        if (!tty_ && tenth == last_tenth_ && done != total_) return;
        last_tenth_ = tenth;
        std::printf("%sencoded %zu/%zu images  %.1f img/s  ETA %s%s", tty_ ? "\r\033[K" : "", done, total_, ips,
                    simmim::examples::format_duration(ips > 0 ? double(total_ - done) / ips : -1).c_str(), tty_ ? "" : "\n");
        std::fflush(stdout);
    }
    void finish() {
        if (tty_) std::printf("\n");
        std::fflush(stdout);
    }
    double seconds() const { return std::chrono::duration<double>(clock::now() - t0_).count(); }

private:
    using clock = std::chrono::steady_clock;
    std::size_t total_;
    bool tty_;
    clock::time_point t0_;
    std::size_t last_tenth_ = 0;
};

/// Eval-transformed images [first, first + n) of `ds` into `images` (n, C, S, S), labels into `labels`,
/// decoded in parallel; the first error is rethrown.
void load_images(const simmim::data::Dataset& ds, const simmim::data::AugmentConfig& cfg, std::size_t first, std::size_t n, float* images,
                 std::int64_t* labels) {
    const std::size_t numel = static_cast<std::size_t>(cfg.out_channels) * cfg.out_size * cfg.out_size;
    std::exception_ptr error;
#pragma omp parallel for schedule(dynamic)
    for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(n); ++i) {
        try {
            const auto img = ds.get(first + static_cast<std::size_t>(i));
            simmim::Rng unused(0);
            simmim::data::augment(img, cfg, unused, images + static_cast<std::size_t>(i) * numel);
            if (labels) labels[i] = img.label;
        } catch (...) {
#pragma omp critical(simmim_embed_error)
            if (!error) error = std::current_exception();
        }
    }
    if (error) std::rethrow_exception(error);
}

/// The work of a parsed command line.
int run(const Options& o) {
    using namespace simmim;
    examples::set_threads(o.threads);
    // the output's directory, before any work
    const fs::path out(o.out);
    const fs::path dir = out.has_parent_path() ? out.parent_path() : fs::path(".");
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw UsageError("--out " + o.out + ": directory '" + dir.string() + "' does not exist");
    if (fs::is_directory(out, ec)) throw UsageError("--out " + o.out + " is a directory; give a file name");

    const AnyEncoder encoder = AnyEncoder::open(o.weights);
    const EncoderGeometry& G = encoder.geometry();
    if (G.in_chans != 1 && G.in_chans != 3)
        throw std::runtime_error("the encoder of " + o.weights + " takes " + std::to_string(G.in_chans) +
                                 "-channel images; the data transform makes 1 (grey) or 3 (RGB)");
    const auto data = data::open_dataset(o.data);
    examples::report_image_scan(data, o.data, o.strict_images);
    const data::Dataset& ds = o.split == "train" ? *data.train : *data.eval;
    const bool no_test_split = o.split == "test" && data.eval == data.train;
    const std::size_t n = o.limit > 0 ? std::min<std::size_t>(static_cast<std::size_t>(o.limit), ds.size()) : ds.size();
    if (n == 0) throw std::runtime_error("the " + o.split + " split of " + o.data + " holds no images");
    const bool has_labels = ds.num_classes() > 0;
    const auto cfg = data::eval_transform(data, G.image_size, G.in_chans);

    const bool pooled = o.pool == "mean";
    const std::size_t tokens = static_cast<std::size_t>(G.out_tokens()), D = static_cast<std::size_t>(G.out_dim);
    const std::size_t per_image = pooled ? D : tokens * D;
    const std::size_t batch = std::min<std::size_t>(static_cast<std::size_t>(o.batch), n);
    // the features tensor and its serialised copy, and one batch's images and features
    const std::uint64_t needed = 2 * sizeof(float) * n * per_image + sizeof(float) * batch * (G.image_numel() + tokens * D);
    if (auto shortfall = memory_shortfall("features of " + std::to_string(n) + " images", needed)) throw std::runtime_error(*shortfall);

    std::printf("simmim_embed: %s from %s (%zu parameters; %dx%dx%d images -> %dx%d tokens of %d) on %s, %s split%s: %zu images, %d threads\n",
                encoder.description().c_str(), o.weights.c_str(), encoder.parameter_count(), G.in_chans, G.image_size, G.image_size,
                G.out_grid, G.out_grid, G.out_dim, ds.description().c_str(), o.split.c_str(),
                no_test_split ? " (the data has no separate test split: all its images)" : "", n, omp_get_max_threads());
    std::fflush(stdout);

    // the output tensors are filled in place
    std::vector<std::int64_t> shape = pooled ? std::vector<std::int64_t>{static_cast<std::int64_t>(n), static_cast<std::int64_t>(D)}
                                             : std::vector<std::int64_t>{static_cast<std::int64_t>(n), static_cast<std::int64_t>(tokens),
                                                                         static_cast<std::int64_t>(D)};
    io::TensorData features{io::DType::F32, shape, std::vector<std::byte>(sizeof(float) * n * per_image)};
    std::vector<std::int64_t> labels(has_labels ? n : 0);
    std::vector<float> images(batch * static_cast<std::size_t>(G.image_numel())), tokens_out(pooled ? batch * tokens * D : 0);
    EmbedProgress progress(n);
    for (std::size_t b0 = 0; b0 < n; b0 += batch) {
        const std::size_t nb = std::min(batch, n - b0);
        load_images(ds, cfg, b0, nb, images.data(), has_labels ? labels.data() + b0 : nullptr);
        float* dst = reinterpret_cast<float*>(features.bytes.data()) + b0 * per_image;  // 4-byte aligned: new[] storage
        if (!pooled) {
            encoder.encode(dst, images.data(), nullptr, static_cast<int>(nb));
        } else {
            encoder.encode(tokens_out.data(), images.data(), nullptr, static_cast<int>(nb));
            for (std::size_t b = 0; b < nb; ++b)
                for (std::size_t d = 0; d < D; ++d) {
                    double sum = 0;
                    for (std::size_t t = 0; t < tokens; ++t) sum += tokens_out[(b * tokens + t) * D + d];
                    dst[b * D + d] = static_cast<float>(sum / double(tokens));
                }
        }
        progress.update(b0 + nb);
    }
    progress.finish();

    io::TensorFile file;
    file.set("features", std::move(features));
    if (has_labels) file.set<std::int64_t>("labels", labels, {static_cast<std::int64_t>(n)});
    const nlohmann::json geometry{{"image_size", G.image_size}, {"in_chans", G.in_chans}, {"mask_grid", G.mask_grid},
                                  {"out_dim", G.out_dim},       {"out_grid", G.out_grid}};
    file.metadata = {{"format", "simmim-features-1"}, {"weights", o.weights},  {"encoder", encoder.description()},
                     {"data", ds.description()},      {"split", o.split},      {"count", std::to_string(n)},
                     {"pool", o.pool},                {"geometry", geometry.dump()}};
    io::write_safetensors(out, file);
    const std::string labels_text = has_labels ? ", labels [" + std::to_string(n) + "] I64" : "";
    std::printf("wrote %s: features %s F32%s (%.1f s)\n", o.out.c_str(), io::detail::shape_string(shape).c_str(), labels_text.c_str(),
                progress.seconds());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    return simmim::examples::run_main("simmim_embed", argc, argv, simmim::examples::embed::parse, [](const Options& o) { return run(o); });
}
