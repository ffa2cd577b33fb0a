// simmim_finetune: fine-tuning and linear probing of a (SimMIM-pretrained or random) ViT encoder.
//
//   --mode finetune : mean-pooled linear head on the final-normed tokens, every parameter trained with AdamW,
//                     warmup + cosine, layer-wise lr decay, label smoothing, drop path (ViT), and the augmentation
//                     for small images: random crop with zero padding, flip, random erasing, optional
//                     Mixup / CutMix with soft targets (the official fine-tuning recipe without RandAugment and
//                     colour jitter); atomic checkpoints every epoch and on SIGINT/SIGTERM, --resume.
//   --mode linprobe : frozen encoder, average-pooled patch tokens of block k, standardised, linear classifier.
// Reports top-1 on the held-out test split after every epoch (docs/results.md).
#include <CLI/CLI.hpp>
#include <omp.h>

#include <Eigen/Core>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "simmim/data/loader.hpp"
#include "simmim/data/mixup.hpp"
#include "simmim/data/open.hpp"
#include "simmim/data/subset.hpp"
#include "simmim/io/checkpoint.hpp"
#include "simmim/model/classifier.hpp"
#include "simmim/model/swin_resample.hpp"
#include "simmim/optim/schedule.hpp"
#include "simmim/simmim.hpp"
#include "finetune_options.hpp"
#include "model_variants.hpp"
#include "training_common.hpp"

namespace {

using simmim::examples::UsageError;
namespace fs = std::filesystem;

using simmim::examples::finetune::Options;

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Loads the encoder part of a checkpoint or weights file (its "encoder." tensors). A Swin relative position
/// bias table pretrained at another window size (window 6 -> 7, say) is transferred to this model's window
/// with the official geometric spline (model/swin_resample.hpp), as the official load_pretrained does.
template <class T>
void load_encoder(simmim::ParamArena<T>& params, const std::string& path) {
    simmim::io::LoadOptions opt;
    opt.only_params_with_prefix = "encoder.";
    opt.allow_unexpected = true;  // decoder.*, optimizer.*, the official buffers
    simmim::io::TensorFile file = simmim::io::read_weights(path, /*drop_unmapped=*/true);
    for (const auto& p : params.params()) {
        if (!p.name.ends_with("relative_position_bias_table") || !file.contains(p.name)) continue;
        const auto& t = file.at(p.name);
        if (t.shape.size() != 2 || p.shape.size() != 2 || t.shape == p.shape || t.shape[1] != p.shape[1]) continue;  // import_params reports it
        const auto side = [](std::int64_t rows) { return static_cast<int>(std::lround(std::sqrt(double(rows)))); };
        const int src = (side(t.shape[0]) + 1) / 2, dst = (side(p.shape[0]) + 1) / 2;
        const auto values = t.template to<double>();
        const auto resampled = simmim::resample_relative_position_table(std::span<const double>(values), src, dst, static_cast<int>(p.shape[1]));
        file.set<double>(p.name, std::span<const double>(resampled), p.shape);
        std::printf("%s: window %d -> %d (geometric spline)\n", p.name.c_str(), src, dst);
    }
    simmim::io::import_params(params, file, opt);
}

/// Eval-transformed images [first, first + n) of a dataset, (n, C, S, S), and their labels.
void load_eval_images(const simmim::data::Dataset& ds, const simmim::data::AugmentConfig& cfg, std::size_t first, std::size_t n,
                      std::vector<float>& images, std::vector<int>& labels) {
    const std::size_t numel = static_cast<std::size_t>(cfg.out_channels) * cfg.out_size * cfg.out_size;
    images.resize(n * numel);
    labels.resize(n);
    simmim::Rng unused(0);
    for (std::size_t i = 0; i < n; ++i) {
        const auto img = ds.get(first + i);
        simmim::data::augment(img, cfg, unused, images.data() + i * numel);
        labels[i] = img.label;
    }
}

struct EpochLog {
    std::ofstream out;
    explicit EpochLog(const fs::path& p, bool append = false) : out(p, append ? std::ios::app : std::ios::trunc) {
        if (!out) throw std::runtime_error("cannot write " + p.string());
    }
    void write(const nlohmann::json& j) {
        out << j.dump() << '\n';
        out.flush();
    }
};

/// The key of a run's top-1 in metrics.jsonl and summary.json: "val_top1" when it evaluates on images held out of the
/// training split (--val-fraction), "test_top1" when on the test split.
const char* top1_key(const Options& o) { return o.val_fraction > 0 ? "val_top1" : "test_top1"; }
/// The evaluated split as printed: "validation" or "test".
const char* eval_name(const Options& o) { return o.val_fraction > 0 ? "validation" : "test"; }
/// A fraction as the run's descriptions print it (%g: 0.1, 0.01).
std::string fraction_text(double f) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", f);
    return text;
}

/// The summary's record of what was evaluated (and, with --val-fraction, which images were held out).
nlohmann::json eval_record(const Options& o) {
    nlohmann::json r{{"eval_split", eval_name(o)}};
    if (o.val_fraction > 0) {
        r["val_fraction"] = o.val_fraction;
        r["val_seed"] = o.val_seed;
    }
    return r;
}

/// The configuration a resumed fine-tuning run must share with its checkpoint (everything that changes results).
nlohmann::json finetune_config(const Options& o, std::size_t n_train, std::size_t n_test, std::int64_t total, std::int64_t warmup, double base_lr,
                               int crop_padding, double drop_path) {
    nlohmann::json c{{"data", o.data},
                     {"model", o.model},
                     {"init", o.init},
                     {"epochs", o.epochs},
                     {"batch", o.batch},
                     {"total_steps", total},
                     {"warmup_steps", warmup},
                     {"base_lr", base_lr},
                     {"warmup_lr", o.warmup_lr},
                     {"min_lr", o.min_lr},
                     {"weight_decay", o.weight_decay},
                     {"layer_decay", o.layer_decay},
                     {"label_smoothing", o.label_smoothing},
                     {"clip_grad", o.clip},
                     {"train_images", n_train},
                     {"test_images", n_test},
                     {"label_fraction", o.label_fraction},
                     {"label_seed", o.label_seed},
                     {"crop_padding", crop_padding},
                     {"hflip", o.hflip},
                     {"random_erase", o.random_erase},
                     {"mixup", o.mixup},
                     {"cutmix", o.cutmix},
                     {"mix_prob", o.mix_prob},
                     {"mix_switch", o.mix_switch},
                     {"drop_path", drop_path},
                          {"seed", o.seed}};
    if (o.val_fraction > 0) c.update(eval_record(o));  // (only then: checkpoints of runs without it keep resuming)
    return c;
}

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

/// A double as the shortest decimal text that reads back to the same bits (checkpoint metadata).
std::string exact_text(double v) {
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
}
double exact_value(const std::map<std::string, std::string>& meta, const std::string& key, const std::string& file) {
    const auto it = meta.find(key);
    double v = 0;
    if (it == meta.end() || std::from_chars(it->second.data(), it->second.data() + it->second.size(), v).ec != std::errc{})
        throw std::runtime_error(file + ": checkpoint metadata '" + key + "' is missing or not a number");
    return v;
}

/// C the preset's ViTConfig or SwinConfig, Enc its encoder type, K the number of classes.
///
/// Every random draw is a pure function of (seed, step, sample): the data order and each sample's crop, flip
/// and erasing (data::BatchLoader), the batch's Mixup/CutMix (Rng(derive_seed(seed, kMixStream, step))) and
/// the drop path masks (ViTEncoder::set_drop_path). The checkpoint holds the weights, the AdamW state, the
/// step, the running train-loss sum of the epoch and the elapsed time, so --resume continues bit-identically.
template <auto C, class Enc, int K>
int finetune(const Options& o, const simmim::data::OpenedDataset& data, std::size_t n_train, std::size_t n_test) {
    using namespace simmim;
    using Model = Classifier<float, Enc, K>;
    constexpr bool has_drop_path = requires(Enc& e) { e.set_drop_path(0.0, std::uint64_t{0}, std::int64_t{0}); };
    const int crop_padding = o.crop_padding >= 0 ? o.crop_padding : C.image_size / 8;
    const double drop_path = o.drop_path >= 0 ? o.drop_path : has_drop_path ? 0.1 : 0.0;
    const data::MixupConfig mix{o.mixup, o.cutmix, o.mix_prob, o.mix_switch};
    constexpr std::uint64_t kMixStream = 0x4D69787570;  // "Mixup"; the drop path stream is "DropPath" (set_drop_path)

    struct Subset : data::Dataset {  // the first n images (quick runs)
        std::shared_ptr<const data::Dataset> base;
        std::size_t n;
        std::size_t size() const override { return n; }
        data::RawImage get(std::size_t i) const override { return base->get(i); }
        std::string description() const override { return base->description(); }
        int num_classes() const override { return base->num_classes(); }
    };
    auto train_set = std::make_shared<Subset>();
    train_set->base = data.train;
    train_set->n = n_train;
    const auto aug = data::finetune_augmentation(data, C.image_size, C.in_chans, crop_padding, o.hflip, o.random_erase);
    const auto eval_cfg = data::eval_transform(data, C.image_size, C.in_chans);
    const std::int64_t spe = static_cast<std::int64_t>(n_train / static_cast<std::size_t>(o.batch)), total = spe * o.epochs;
    const double base_lr = o.base_lr > 0 ? o.base_lr : 1.25e-3;
    const double warmup_epochs = o.warmup_epochs >= 0 ? o.warmup_epochs : 0.2 * o.epochs;
    const std::int64_t warmup = static_cast<std::int64_t>(warmup_epochs * spe);
    const auto sched = CosineSchedule::scaled(base_lr, o.min_lr, o.warmup_lr, o.batch, warmup, total);
    const nlohmann::json config = finetune_config(o, n_train, n_test, total, warmup, base_lr, crop_padding, drop_path);
    const auto t0 = std::chrono::steady_clock::now();

    auto model = std::make_unique<Model>(o.seed);
    AdamW<float> opt(model->params(), {0.9, 0.999, 1e-8, o.weight_decay});
    const auto& ps = model->params().params();
    for (std::size_t k = 0; k < ps.size(); ++k)  // layer-wise lr decay (official: get_layer_id / get_swin_layer)
        opt.set_lr_scale(k, std::pow(o.layer_decay, Model::num_layers + 1 - Model::layer_id(ps[k].name)));
    auto set_drop_path = [&](double rate, std::int64_t step) {
        if constexpr (has_drop_path) model->encoder().set_drop_path(rate, derive_seed(o.seed, 0x44726F7050617468), step);
    };

    const fs::path ckpt_path = fs::path(o.out) / "checkpoint.safetensors", metrics_path = fs::path(o.out) / "metrics.jsonl";
    for (const auto& stale : io::remove_stale_temporaries(ckpt_path))
        std::printf("removed %s, left by an interrupted checkpoint write of a process that no longer runs\n", stale.c_str());
    std::int64_t start = 0;
    double loss_sum = 0, elapsed_before = 0;  // the running train loss of the current epoch, the time of earlier invocations
    if (!o.resume.empty()) {
        const auto header = io::read_safetensors_metadata(o.resume);
        examples::check_resume_config(header, config, o.resume);
        const auto meta = io::load_checkpoint(o.resume, model->params(), opt);
        start = io::metadata_count(meta, "step", "--resume " + o.resume);
        if (start > total) throw UsageError("--resume " + o.resume + ": step " + std::to_string(start) + " is beyond the run's " + std::to_string(total) + " steps");
        loss_sum = exact_value(meta, "epoch_loss_sum", o.resume);
        elapsed_before = exact_value(meta, "elapsed_s", o.resume);
    } else if (!o.init.empty()) {
        load_encoder(model->params(), o.init);
    }
    // metrics.jsonl: one row per finished epoch; a resumed run keeps the rows of the epochs its checkpoint has seen
    nlohmann::json curve = nlohmann::json::array();
    if (start > 0) {
        std::ifstream in(metrics_path);
        std::string line;
        while (std::getline(in, line)) {
            const auto row = nlohmann::json::parse(line, nullptr, false);
            if (row.is_discarded() || !row.contains("epoch")) break;
            if (row["epoch"].get<std::int64_t>() <= start / spe) curve.push_back(row);
        }
    }
    {
        std::ofstream out(metrics_path.string() + ".tmp", std::ios::trunc);
        for (const auto& row : curve) out << row.dump() << '\n';
        if (!out.flush()) throw std::runtime_error("cannot write " + metrics_path.string() + ".tmp");
    }
    fs::rename(metrics_path.string() + ".tmp", metrics_path);
    EpochLog log(metrics_path, /*append=*/true);

    std::printf("  recipe: crop padding %d, flip %g, random erase %g, mixup %g, cutmix %g, drop path %g, label smoothing %g, "
                "%lld steps of %d (%lld per epoch, warmup %lld), base lr %g per 512, layer decay %g%s\n",
                crop_padding, o.hflip, o.random_erase, o.mixup, o.cutmix, drop_path, o.label_smoothing, static_cast<long long>(total), o.batch,
                static_cast<long long>(spe), static_cast<long long>(warmup), base_lr, o.layer_decay,
                start > 0 ? (", resuming at step " + std::to_string(start)).c_str() : "");
    std::fflush(stdout);

    std::vector<float> test_images;
    std::vector<int> test_labels;
    load_eval_images(*data.eval, eval_cfg, 0, n_test, test_images, test_labels);
    auto evaluate = [&] {
        set_drop_path(0.0, 0);
        std::size_t correct = 0;
        constexpr int kEvalBatch = 250;
        for (std::size_t i = 0; i < n_test; i += kEvalBatch) {
            const int B = static_cast<int>(std::min<std::size_t>(kEvalBatch, n_test - i));
            const auto& logits = model->forward(test_images.data() + i * C.image_numel(), B);
            int hits = 0;
            ops::cross_entropy_forward_backward<float>(nullptr, logits.data(), test_labels.data() + i, B, K, 0.f, &hits);
            correct += static_cast<std::size_t>(hits);
        }
        return double(correct) / double(n_test);
    };
    auto save = [&](std::int64_t next_step) {
        const double elapsed = elapsed_before + seconds_since(t0);
        io::save_checkpoint(ckpt_path, model->params(), opt,
                            {{"step", std::to_string(next_step)}, {"epoch", std::to_string(next_step / spe)}, {"config", config.dump()},
                             {"model", o.model}, {"simmim.preset", o.model}, {"mode", "finetune"},
                             {"epoch_loss_sum", exact_text(loss_sum)}, {"elapsed_s", exact_text(elapsed)}});
    };

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGPIPE, SIG_IGN);
    data::BatchLoader loader(train_set, aug, o.batch, o.seed, start, 4, 1);
    examples::Progress progress(total, start, o.log_every);
    std::vector<float> dlogits(static_cast<std::size_t>(o.batch) * K), targets(static_cast<std::size_t>(o.batch) * K);
    double top1 = 0.0;  // the last evaluation's
    for (const auto& row : curve)
        if (row.contains(top1_key(o))) top1 = row[top1_key(o)].get<double>();
    double train_seconds = 0, lr = 0;  // of the current epoch in this invocation
    std::int64_t timed_images = 0;
    const std::int64_t stop_at = o.stop_after > 0 ? std::min(total, start + o.stop_after) : total;
    std::int64_t step = start;
    while (step < stop_at) {
        const auto t_step = std::chrono::steady_clock::now();
        data::Batch batch = loader.next();
        const std::int64_t epoch = step / spe;
        const float* images = batch.images.data();
        data::MixDraw mixed;
        if (mix.enabled()) {
            Rng rng(derive_seed(o.seed, kMixStream, static_cast<std::uint64_t>(step)));
            mixed = data::draw_mix(mix, C.image_size, C.image_size, rng);
            data::apply_mix(batch.images.data(), o.batch, C.in_chans, C.image_size, C.image_size, mixed);
        }
        model->params().zero_grad();
        set_drop_path(drop_path, step);
        const auto& logits = model->forward(images, o.batch);
        float loss = 0;
        if (mix.enabled()) {  // soft targets: smoothed one-hot labels mixed with lam (timm's mixup_target)
            data::mix_targets(targets.data(), batch.labels.data(), o.batch, K, mixed.lam, o.label_smoothing);
            loss = ops::soft_target_cross_entropy_forward_backward<float>(dlogits.data(), logits.data(), targets.data(), o.batch, K);
        } else {
            loss = ops::cross_entropy_forward_backward<float>(dlogits.data(), logits.data(), batch.labels.data(), o.batch, K,
                                                              float(o.label_smoothing));
        }
        model->backward(dlogits.data());
        const double gnorm = clip_grad_norm(model->params(), o.clip);
        lr = sched(step);
        if (!std::isfinite(loss) || !std::isfinite(gnorm))
            throw std::runtime_error("non-finite " + examples::first_nonfinite(model->params(), loss) + " at step " + std::to_string(step) +
                                     "; the last checkpoint is " + ckpt_path.string());
        opt.step(lr);
        loss_sum += loss;
        ++step;
        train_seconds += seconds_since(t_step);
        timed_images += o.batch;
        progress.update(step, epoch, loss, lr, gnorm, o.batch);
        if (step % spe == 0) {  // end of an epoch: evaluate, log, checkpoint
            const bool evaluated = (epoch + 1) % o.eval_every == 0 || step == total;
            if (evaluated) top1 = evaluate();
            const double ips = train_seconds > 0 ? double(timed_images) / train_seconds : 0.0;
            nlohmann::json row{{"epoch", epoch + 1}, {"step", step}, {"train_loss", loss_sum / double(spe)},
                               {"lr", lr}, {"images_per_s", ips}, {"elapsed_s", elapsed_before + seconds_since(t0)}};
            if (evaluated) row[top1_key(o)] = top1;
            log.write(row);
            curve.push_back(row);
            progress.finish();
            if (evaluated)
                std::printf("epoch %lld/%d: train loss %.4f, %s top-1 %.2f%% (%zu images), %.1f img/s\n", static_cast<long long>(epoch + 1),
                            o.epochs, loss_sum / double(spe), eval_name(o), 100 * top1, n_test, ips);
            else
                std::printf("epoch %lld/%d: train loss %.4f, %.1f img/s (next evaluation after epoch %lld)\n", static_cast<long long>(epoch + 1),
                            o.epochs, loss_sum / double(spe), ips,
                            static_cast<long long>(std::min<std::int64_t>(o.epochs, (epoch + 1) / o.eval_every * o.eval_every + o.eval_every)));
            std::fflush(stdout);
            loss_sum = 0;
            train_seconds = 0;
            timed_images = 0;
            save(step);
        }
        if (const int sig = g_signal.load(); sig != 0 || (step == stop_at && stop_at < total)) {
            if (step % spe != 0) save(step);
            progress.finish();
            std::printf("%s after step %lld: checkpoint saved to %s; continue with --resume %s\n",
                        sig != 0 ? ("interrupted by signal " + std::to_string(sig)).c_str() : "stopped (--stop-after)", static_cast<long long>(step),
                        ckpt_path.string().c_str(), ckpt_path.string().c_str());
            return sig != 0 ? 128 + sig : 0;
        }
    }
    progress.finish();
    io::TensorFile weights;
    io::export_params(weights, model->params());
    io::write_safetensors(fs::path(o.out) / "model.safetensors", weights);
    const double wall = elapsed_before + seconds_since(t0);
    nlohmann::json summary{{"mode", "finetune"}, {"model", o.model}, {"init", o.init.empty() ? "random" : o.init},
                           {"epochs", o.epochs}, {top1_key(o), top1}, {"wall_s", wall},
                           {"train_images", n_train}, {"label_fraction", o.label_fraction},
                           {"label_seed", o.label_seed}, {"config", config}, {"curve", curve}};
    summary.update(eval_record(o));
    std::ofstream(fs::path(o.out) / "summary.json") << summary.dump(2);
    std::printf("done: %s top-1 %.2f%%; wrote %s/{metrics.jsonl,summary.json,model.safetensors,checkpoint.safetensors}\n", eval_name(o), 100 * top1,
                o.out.c_str());
    return 0;
}

/// A ViT is probed at block k (forward_tokens: before the final norm, mean of the patch tokens); an encoder
/// without intermediate outputs (Swin) at its final features (encode(): the final norm, mean over positions).
template <auto C, int K, class Enc>
int linprobe(const Options& o, const simmim::data::OpenedDataset& data, std::size_t n_train, std::size_t n_test) {
    using namespace simmim;
    constexpr bool by_block = requires(Enc& e, const float* x, float* y) { e.forward_tokens(x, x, 1, 1); };
    constexpr int D = Enc::geometry.out_dim, L = Enc::geometry.out_tokens(), Lmask = Enc::geometry.mask_tokens();
    int block = -1;
    if constexpr (by_block) {
        block = o.probe_block >= 0 ? o.probe_block : (2 * C.depth) / 3;
        if (block < 1 || block > C.depth) throw UsageError("--probe-block must lie in [1, " + std::to_string(C.depth) + "]");
    } else if (o.probe_block >= 0) {
        throw UsageError("--probe-block is for the ViT presets; a Swin encoder is probed at its final features");
    }
    ParamArena<float> arena;
    auto encoder = std::make_unique<Enc>(arena);  // what we probe (no drop path: the official ViT's default)
    arena.allocate();
    arena.initialize(o.seed);
    if (!o.init.empty()) load_encoder(arena, o.init);
    const auto eval_cfg = data::eval_transform(data, C.image_size, C.in_chans);
    const auto t0 = std::chrono::steady_clock::now();

    // frozen features: mean of the patch tokens of block `block`
    auto extract = [&](const data::Dataset& ds, std::size_t n, std::vector<float>& feats, std::vector<int>& labels) {
        feats.assign(n * D, 0.f);
        labels.resize(n);
        constexpr std::size_t kChunk = 250;
        std::vector<float> images, zeros(kChunk * Lmask, 0.f), encoded;
        std::vector<int> lab;
        for (std::size_t i = 0; i < n; i += kChunk) {
            const std::size_t m = std::min(kChunk, n - i);
            load_eval_images(ds, eval_cfg, i, m, images, lab);
            const float* tokens = nullptr;  // (m, rows, D), the first `skip` rows of each sample not pooled
            int rows = L, skip = 0;
            if constexpr (by_block) {
                tokens = encoder->forward_tokens(images.data(), zeros.data(), static_cast<int>(m), block);  // (m, N, D), cls first
                rows = L + 1;
                skip = 1;
            } else {
                encoded.resize(m * L * D);
                encoder->encode(encoded.data(), images.data(), nullptr, static_cast<int>(m));
                tokens = encoded.data();
            }
            for (std::size_t b = 0; b < m; ++b) {
                ops::mean_pool_forward(feats.data() + (i + b) * D, tokens + (b * rows + skip) * D, 1, L, D);
                labels[i + b] = lab[b];
            }
        }
    };
    std::vector<float> train_f, test_f;
    std::vector<int> train_y, test_y;
    extract(*data.train, n_train, train_f, train_y);
    extract(*data.eval, n_test, test_f, test_y);
    std::printf("features of %s extracted for %zu + %zu images in %.1f s\n", by_block ? ("block " + std::to_string(block)).c_str() : "the final norm",
                n_train, n_test, seconds_since(t0));

    LinearProbe<float, D, K> probe;
    probe.fit_standardization(train_f.data(), n_train);
    probe.standardize(train_f.data(), n_train);
    probe.standardize(test_f.data(), n_test);
    AdamW<float> opt(probe.params(), {0.9, 0.999, 1e-8, o.weight_decay});
    const int B = o.batch;
    const std::int64_t spe = static_cast<std::int64_t>(n_train / static_cast<std::size_t>(B)), total = spe * o.epochs;
    const double base_lr = o.base_lr > 0 ? o.base_lr : 0.1;
    const auto sched = CosineSchedule::scaled(base_lr, o.min_lr, o.warmup_lr, B, static_cast<std::int64_t>((o.warmup_epochs >= 0 ? o.warmup_epochs : 0.1 * o.epochs) * spe), total);
    EpochLog log(fs::path(o.out) / "metrics.jsonl");
    std::vector<float> xb(static_cast<std::size_t>(B) * D), logits(static_cast<std::size_t>(B) * K), dlogits(logits.size());
    std::vector<int> yb(B);
    std::vector<float> test_logits(n_test * K);
    nlohmann::json curve = nlohmann::json::array();
    double top1 = 0;
    for (int epoch = 0; epoch < o.epochs; ++epoch) {
        const auto order = data::detail::epoch_order(n_train, o.seed, epoch);
        double loss_sum = 0;
        for (std::int64_t s = 0; s < spe; ++s) {
            for (int j = 0; j < B; ++j) {
                const auto idx = static_cast<std::size_t>(order[static_cast<std::size_t>(s * B + j)]);
                std::copy_n(train_f.data() + idx * D, D, xb.data() + static_cast<std::size_t>(j) * D);
                yb[j] = train_y[idx];
            }
            probe.params().zero_grad();
            probe.forward(logits.data(), xb.data(), B);
            loss_sum += ops::cross_entropy_forward_backward<float>(dlogits.data(), logits.data(), yb.data(), B, K, 0.f);
            probe.backward(dlogits.data(), xb.data(), B);
            opt.step(sched(epoch * spe + s));
        }
        probe.forward(test_logits.data(), test_f.data(), static_cast<int>(n_test));
        int hits = 0;
        ops::cross_entropy_forward_backward<float>(nullptr, test_logits.data(), test_y.data(), static_cast<int>(n_test), K, 0.f, &hits);
        top1 = double(hits) / double(n_test);
        const nlohmann::json row{{"epoch", epoch + 1}, {"train_loss", loss_sum / double(spe)}, {top1_key(o), top1}, {"elapsed_s", seconds_since(t0)}};
        log.write(row);
        curve.push_back(row);
        std::printf("epoch %d/%d: train loss %.4f, %s top-1 %.2f%%\n", epoch + 1, o.epochs, loss_sum / double(spe), eval_name(o), 100 * top1);
    }
    nlohmann::json summary{{"mode", "linprobe"}, {"model", o.model}, {"init", o.init.empty() ? "random" : o.init},
                           {"block", block}, {"epochs", o.epochs}, {top1_key(o), top1},
                           {"wall_s", seconds_since(t0)}, {"train_images", n_train},
                           {"label_fraction", o.label_fraction}, {"label_seed", o.label_seed},
                           {"curve", curve}};
    summary.update(eval_record(o));
    std::ofstream(fs::path(o.out) / "summary.json") << summary.dump(2);
    std::printf("done: linear probe of %s, %s top-1 %.2f%%; wrote %s/{metrics.jsonl,summary.json}\n",
                by_block ? ("block " + std::to_string(block)).c_str() : "the final features", eval_name(o), 100 * top1, o.out.c_str());
    return 0;
}

/// The data set, its class count and sizes, printed; then f(data, K, n_train, n_test).
template <class F>
int with_data(const Options& o, F&& f) {
    using namespace simmim;
    examples::prepare_output_dir(o.out);
    const auto out_lock = examples::OutputLock::acquire(o.out, "simmim_finetune");  // one run per output directory
    auto data = data::open_dataset(o.data);
    examples::report_image_scan(data, o.data, o.strict_images);
    const int K = data.train->num_classes();
    std::size_t n_train = o.max_train > 0 ? std::min<std::size_t>(o.max_train, data.train->size()) : data.train->size();
    if (o.val_fraction > 0) {  // a validation split: class-balanced images of the (first n_train) training images, held out
        auto held = data::class_balanced_subset(*data.train, n_train, o.val_fraction, derive_seed(o.val_seed, 0x56414cu));
        auto rest = data::complement_indices(held, n_train);
        if (rest.empty()) throw UsageError("--val-fraction leaves no training images");
        const std::size_t n_val = held.size();
        data.eval = std::make_shared<data::SubsetDataset>(data.train, std::move(held),
                                                          "validation: a class-balanced " + fraction_text(o.val_fraction) + " held out (val seed " +
                                                              std::to_string(o.val_seed) + ", " + std::to_string(n_val) + " images)");
        data.train = std::make_shared<data::SubsetDataset>(data.train, std::move(rest), "without the validation images");
        n_train = data.train->size();
        std::printf("simmim_finetune: evaluating on %s, not on the test split\n", data.eval->description().c_str());
    }
    if (o.label_fraction < 1.0) {  // the label-scarce evaluations: a class-balanced subset of the (first n_train) images
        auto indices = data::class_balanced_subset(*data.train, n_train, o.label_fraction, o.label_seed);
        const std::string what = "a class-balanced " + fraction_text(o.label_fraction) + " of the labels (label seed " +
                                 std::to_string(o.label_seed) + ", " + std::to_string(indices.size()) + " images)";
        data.train = std::make_shared<data::SubsetDataset>(data.train, std::move(indices), what);
        n_train = data.train->size();
    }
    const std::size_t n_test = o.max_test > 0 ? std::min<std::size_t>(o.max_test, data.eval->size()) : data.eval->size();
    if (n_train < static_cast<std::size_t>(o.batch)) throw UsageError("--batch is larger than the training set");
    std::printf("simmim_finetune: %s %s of %s (%s) on %s: %zu train / %zu %s images, %d classes, %d threads, %s\n", o.mode.c_str(),
                o.model.c_str(), o.init.empty() ? "a random encoder" : o.init.c_str(), o.init.empty() ? "random init" : "pretrained",
                data.train->description().c_str(), n_train, n_test, eval_name(o), K, omp_get_max_threads(), simmim::examples::precision_description().c_str());
    if (K != 10 && K != 100) throw UsageError("the dataset has " + std::to_string(K) + " classes; simmim_finetune is built for 10 or 100");
    return f(data, K, n_train, n_test);
}

/// A Swin preset: fine-tuning with get_swin_layer's layer decay, or a linear probe of the final features.
template <simmim::SwinConfig C>
int run_swin(const Options& o) {
    using namespace simmim;
    if (o.vit == "official") throw UsageError("--vit official is for the ViT presets");
    using Enc = SwinEncoder<float, C>;
    if (o.drop_path > 0) throw UsageError("--drop-path is implemented for the ViT presets, not for the Swin encoder");
    return with_data(o, [&](const data::OpenedDataset& data, int K, std::size_t n_train, std::size_t n_test) {
        if (o.mode == "finetune") return K == 10 ? finetune<C, Enc, 10>(o, data, n_train, n_test) : finetune<C, Enc, 100>(o, data, n_train, n_test);
        return K == 10 ? linprobe<C, 10, Enc>(o, data, n_train, n_test) : linprobe<C, 100, Enc>(o, data, n_train, n_test);
    });
}

template <simmim::ViTConfig C>
int run(const Options& o) {
    using namespace simmim;
    const bool ft = o.mode == "finetune";
    const std::string vit = o.vit != "auto" ? o.vit : o.init.empty() ? "common" : examples::checkpoint_vit_form(o.init);
    if (vit == "official" && ft) throw UsageError("--mode finetune is built for the common ViT only; --mode linprobe takes official-ViT encoders");
    if constexpr (!examples::offers_ablations<C>())
        if (vit == "official") throw UsageError("official-ViT encoders are probed for the ablation presets only (docs/ablations.md), not " + o.model);
    return with_data(o, [&](const data::OpenedDataset& data, int K, std::size_t n_train, std::size_t n_test) {
        if (vit == "official") {
            if constexpr (examples::offers_ablations<C>()) {
                using Enc = OfficialViTEncoder<float, C>;
                return K == 10 ? linprobe<C, 10, Enc>(o, data, n_train, n_test) : linprobe<C, 100, Enc>(o, data, n_train, n_test);
            }
        }
        using Enc = ViTEncoder<float, C>;
        if (K == 10) return ft ? finetune<C, Enc, 10>(o, data, n_train, n_test) : linprobe<C, 10, Enc>(o, data, n_train, n_test);
        return ft ? finetune<C, Enc, 100>(o, data, n_train, n_test) : linprobe<C, 100, Enc>(o, data, n_train, n_test);
    });
}

/// The work of a parsed command line: run<C>() for the preset.
int run(const Options& o) {
    simmim::examples::set_threads(o.threads);
    simmim::examples::set_precision(o.precision);
    int rc = 0;
    bool supported = true;
    const bool found = simmim::examples::dispatch_vit_preset(o.model, [&]<simmim::ViTConfig C>() {
        if constexpr (C.image_size <= 32) rc = run<C>(o);
        else supported = false;
    });
    const bool swin = !found && simmim::examples::dispatch_swin(o.model, [&]<simmim::SwinConfig C>() {
        if constexpr (C.image_size <= 32) rc = run_swin<C>(o);
        else supported = false;
    });
    if (!found && !swin) throw UsageError("unknown model preset '" + o.model + "'");
    if (!supported) throw UsageError("simmim_finetune is built for the 32-px presets and the test presets, not " + o.model);
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    return simmim::examples::run_main("simmim_finetune", argc, argv, simmim::examples::finetune::parse,
                                      [](const Options& o) { return run(o); });
}
