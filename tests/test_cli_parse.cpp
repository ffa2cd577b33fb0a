// The parse step of every example program (examples/<program>_options.hpp), called directly: good
// command lines give the options they say, bad ones a one-line usage error (exit 2) naming what is wrong,
// --help exit 0; and the fuzz seed corpora and regressions of the command-line targets replayed through
// the fuzz targets' own code (fuzz/fuzz_cli.hpp). See docs/reliability.md.
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../examples/embed_options.hpp"
#include "../fuzz/fuzz_cli.hpp"

namespace {

namespace fs = std::filesystem;
namespace ex = simmim::examples;

/// parse(program, args...) with args[0] = the program name.
template <class Parse>
auto parse_args(Parse&& parse, std::vector<std::string> args) {
    args.insert(args.begin(), "program");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    argv.push_back(nullptr);
    return parse(static_cast<int>(args.size()), argv.data());
}

std::string joined(const std::vector<std::string>& args) {
    std::string s;
    for (const auto& a : args) s += (s.empty() ? "" : " ") + a;
    return s;
}

/// Each bad command line must give exit code 2, no options, and a one-line error containing each fragment.
template <class Parse>
void check_usage_errors(Parse&& parse, const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>>& cases) {
    for (const auto& [args, fragments] : cases) {
        const auto parsed = parse_args(parse, args);
        INFO("args: " << joined(args) << "\nerror: " << parsed.error);
        CHECK_FALSE(parsed);
        CHECK(parsed.exit_code == ex::kExitUsage);
        CHECK(parsed.error.find('\n') == std::string::npos);
        CHECK(parsed.help.empty());
        for (const auto& f : fragments) CHECK_THAT(parsed.error, Catch::Contains(f));
    }
}

/// A private directory with an (empty) file "file" in it; removed at the end.
struct Scratch {
    fs::path dir = fs::temp_directory_path() / ("simmim-cli-parse-" + std::to_string(::getpid()));
    Scratch() {
        fs::create_directories(dir);
        std::ofstream(dir / "file") << "x";
    }
    ~Scratch() { fs::remove_all(dir); }
    std::string file() const { return (dir / "file").string(); }
};

std::vector<std::uint8_t> read_all(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), {});
}

/// Every file of fuzz/corpus/<target>/, fuzz/corpus-min/<target>/ (what fuzzing grew, fuzz/merge.sh) and
/// tests/regressions/<target>/ through `input`; at least one.
template <class Input>
void replay(const std::string& target, Input&& input) {
    std::size_t n = 0;
    for (const char* base : {"fuzz/corpus/", "fuzz/corpus-min/", "tests/regressions/"}) {
        const fs::path dir = fs::path(SIMMIM_SOURCE_DIR) / (base + target);
        if (!fs::is_directory(dir)) continue;
        for (const auto& entry : fs::directory_iterator(dir)) {
            const auto bytes = read_all(entry.path());
            INFO("input " << entry.path().string());
            CHECK_NOTHROW(input(bytes.data(), bytes.size()));
            ++n;
        }
    }
    CHECK(n > 0);
}

}  // namespace

TEST_CASE("simmim_pretrain parse: good command lines give their options", "[cli][parse]") {
    using namespace ex::pretrain;
    const Scratch scratch;
    {
        const auto p = parse_args(parse, {"--steps", "3"});
        REQUIRE(p);
        CHECK(p.exit_code == 0);
        CHECK(p.options->steps == 3);
        CHECK(p.options->epochs == 0);
        CHECK(p.options->batch == 64);
        CHECK(p.options->model == "vit-t4-32-c1");
        CHECK(p.options->data == "fashion-mnist");
        CHECK(p.options->variant.is_default());
    }
    {
        const auto p = parse_args(parse, {"--epochs", "0.5", "--model", "vit-tiny-test", "--batch", "8", "--base-lr", "1e-3", "--min-lr", "0",
                                          "--warmup", "0", "--mask-ratio", "0.3", "--mask-patch", "8", "--threads", "0", "--seed", "7",
                                          "--data", scratch.dir.string(), "--resume", scratch.file(), "--save-every", "0", "--skip-nonfinite"});
        REQUIRE(p);
        CHECK(p.options->epochs == 0.5);
        CHECK(p.options->steps == 0);
        CHECK(p.options->base_lr == 1e-3);
        CHECK(p.options->warmup == 0);
        CHECK(p.options->mask_ratio == 0.3);
        CHECK(p.options->mask_patch == 8);
        CHECK(p.options->seed == 7);
        CHECK(p.options->resume == scratch.file());
        CHECK(p.options->save_every == 0);
        CHECK(p.options->skip_nonfinite);
        CHECK(p.options->check_sync == 0);  // the distributed options' defaults
        CHECK(p.options->bucket_mb == 4);
    }
    {
        const auto p = parse_args(parse, {"--steps", "2", "--check-sync", "100", "--bucket-mb", "25"});
        REQUIRE(p);
        CHECK(p.options->check_sync == 100);
        CHECK(p.options->bucket_mb == 25);
    }
    {
        const auto p = parse_args(parse, {"--steps", "2", "--model", "vit-tiny-test", "--vit", "official", "--drop-path", "0.3", "--loss", "l2",
                                          "--loss-region", "all", "--target", "norm"});
        REQUIRE(p);
        CHECK(p.options->variant.vit == "official");
        CHECK(p.options->variant.drop_path_rate() == 0.3);
        CHECK(p.options->variant.loss == "l2");
        CHECK(p.options->variant.region == "all");
        CHECK(p.options->variant.target == "norm");
    }
    for (const char* res : {"8", "4"}) {
        const auto p = parse_args(parse, {"--steps", "2", "--model", "vit-tiny-test", "--pred-resolution", res});
        REQUIRE(p);
        CHECK(p.options->variant.pred_resolution == std::stoi(res));
    }
    const auto help = parse_args(parse, {"--help"});
    CHECK_FALSE(help);
    CHECK(help.exit_code == 0);
    CHECK_THAT(help.help, Catch::Contains("--steps") && Catch::Contains("--loss-region"));
    CHECK(help.error.empty());
}

TEST_CASE("simmim_pretrain parse: bad command lines are one-line usage errors naming the option", "[cli][parse]") {
    using namespace ex::pretrain;
    const std::vector<std::string> s{"--steps", "2"};
    auto with_steps = [&](std::vector<std::string> more) {
        more.insert(more.begin(), s.begin(), s.end());
        return more;
    };
    check_usage_errors(parse, {
        {{}, {"give one of --steps N or --epochs E"}},
        {{"--model", "vit-tiny-test"}, {"--steps", "--epochs"}},
        {{"--steps", "3", "--epochs", "1"}, {"--steps excludes --epochs"}},
        {{"--steps", "0"}, {"--steps: must be an integer > 0, not '0'"}},
        {{"--steps", "1", "--steps", "2"}, {"--steps"}},
        {{"--steps"}, {"--steps", "(run with --help)"}},
        {{"--epochs", "1e300"}, {"--epochs: must be a finite number in (0, 1000000000]"}},
        {{"--epochs", "inf"}, {"--epochs: must be a finite number"}},
        {{"--epochs", "nan"}, {"--epochs: must be a finite number"}},
        {with_steps({"--base-lr", "nan"}), {"--base-lr: must be a finite number > 0, not 'nan'"}},
        {with_steps({"--base-lr", "0"}), {"--base-lr: must be a finite number > 0"}},
        {with_steps({"--min-lr", "nan"}), {"--min-lr: must be a finite number >= 0"}},
        {with_steps({"--warmup-lr", "-1"}), {"--warmup-lr: must be a finite number >= 0"}},
        {with_steps({"--weight-decay", "nan"}), {"--weight-decay: must be a finite number >= 0"}},
        {with_steps({"--clip-grad", "nan"}), {"--clip-grad: must be a finite number > 0"}},
        {with_steps({"--clip-grad", "inf"}), {"--clip-grad: must be a finite number > 0"}},
        {with_steps({"--batch", "0"}), {"--batch: must be an integer >= 1, not '0'"}},
        {with_steps({"--batch", "2.5"}), {"--batch: must be an integer >= 1"}},
        {with_steps({"--batch", "99999999999"}), {"--batch"}},
        {with_steps({"--warmup", "-1"}), {"--warmup: must be an integer >= 0"}},
        {with_steps({"--mask-ratio", "1.5"}), {"--mask-ratio: must be a finite number in (0, 1)"}},
        {with_steps({"--mask-ratio", "0"}), {"--mask-ratio"}},
        {with_steps({"--mask-patch", "0"}), {"--mask-patch: must be an integer >= 1"}},
        {with_steps({"--threads", "-1"}), {"--threads: must be an integer >= 0"}},
        {with_steps({"--log-every", "0"}), {"--log-every"}},
        {with_steps({"--vis-count", "0"}), {"--vis-count"}},
        {with_steps({"--save-every", "-1"}), {"--save-every"}},
        {with_steps({"--stop-after", "-1"}), {"--stop-after"}},
        {with_steps({"--check-sync", "-1"}), {"--check-sync: must be an integer >= 0"}},
        {with_steps({"--bucket-mb", "0"}), {"--bucket-mb: must be a finite number in (0, 1024]"}},
        {with_steps({"--bucket-mb", "nan"}), {"--bucket-mb"}},
        {with_steps({"--bucket-mb", "2000"}), {"--bucket-mb"}},
        {with_steps({"--model", "vit-nope"}), {"--model: unknown model preset 'vit-nope' (one of vit-t4-32,", "vit-tiny-test, swin-tiny-test", "swin-clamp-test)"}},
        {with_steps({"--data", "/nonexistent/dir"}), {"--data: no such directory: /nonexistent/dir"}},
        {with_steps({"--resume", "/nonexistent.safetensors"}), {"--resume", "/nonexistent.safetensors"}},
        {with_steps({"--frobnicate"}), {"--frobnicate", "(run with --help)"}},
        {{"--step", "3"}, {"--step", "not expected"}},
        {with_steps({"--head", "deep"}), {"--head: deep not in {linear,mlp}"}},
        {with_steps({"--vit", "swin"}), {"--vit"}},
        {with_steps({"--loss", "l3"}), {"--loss"}},
        {with_steps({"--loss-region", "some"}), {"--loss-region"}},
        {with_steps({"--target", "hog"}), {"--target"}},
        {with_steps({"--model", "vit-tiny-test", "--vit", "official", "--head", "mlp"}), {"one model change at a time"}},
        {with_steps({"--model", "vit-t16-224", "--head", "mlp"}), {"variants are offered for the presets"}},
        {with_steps({"--model", "vit-tiny-test", "--pred-resolution", "6"}), {"--pred-resolution 6"}},
        {with_steps({"--pred-resolution", "0"}), {"--pred-resolution: must be an integer >= 1"}},
        {with_steps({"--model", "vit-tiny-test", "--drop-path", "0.1"}), {"--drop-path needs --vit official"}},
        {with_steps({"--model", "vit-tiny-test", "--vit", "official", "--drop-path", "1"}), {"--drop-path: must be a finite number in [0, 1)"}},
        {with_steps({"--model", "vit-tiny-test", "--vit", "official", "--drop-path", "nan"}), {"--drop-path"}},
    });
}

TEST_CASE("simmim_finetune parse: good and bad command lines", "[cli][parse]") {
    using namespace ex::finetune;
    const Scratch scratch;
    {
        const auto p = parse_args(parse, {"--epochs", "2"});
        REQUIRE(p);
        CHECK(p.options->epochs == 2);
        CHECK(p.options->mode == "finetune");
        CHECK(p.options->vit == "auto");
        CHECK(p.options->base_lr == 0);  // the mode's default
        CHECK(p.options->crop_padding == -1);  // image size / 8
        CHECK(p.options->hflip == 0.5);
        CHECK(p.options->random_erase == 0.25);
        CHECK(p.options->mixup == 0);
        CHECK(p.options->cutmix == 0);
        CHECK(p.options->drop_path == -1);  // 0.1 for the ViT presets
        CHECK(p.options->finetune_only.empty());
    }
    {
        const auto p = parse_args(parse, {"--epochs", "2", "--crop-padding", "0", "--hflip", "0", "--random-erase", "0.5", "--mixup", "0.8",
                                          "--cutmix", "1", "--mix-prob", "0.5", "--mix-switch", "0.25", "--drop-path", "0.2", "--stop-after", "7",
                                          "--resume", scratch.file()});
        REQUIRE(p);
        CHECK(p.options->crop_padding == 0);
        CHECK(p.options->hflip == 0);
        CHECK(p.options->random_erase == 0.5);
        CHECK(p.options->mixup == 0.8);
        CHECK(p.options->cutmix == 1);
        CHECK(p.options->mix_prob == 0.5);
        CHECK(p.options->mix_switch == 0.25);
        CHECK(p.options->drop_path == 0.2);
        CHECK(p.options->stop_after == 7);
        CHECK(p.options->resume == scratch.file());
    }
    {
        const auto p = parse_args(parse, {"--mode", "linprobe", "--model", "vit-tiny-test", "--vit", "official", "--init", scratch.file(), "--epochs",
                                          "1", "--probe-block", "2", "--max-train", "300", "--max-test", "0", "--data", scratch.dir.string(),
                                          "--layer-decay", "1", "--label-smoothing", "0", "--warmup-epochs", "0.5", "--label-fraction", "0.01",
                                          "--label-seed", "5"});
        REQUIRE(p);
        CHECK(p.options->label_fraction == 0.01);
        CHECK(p.options->label_seed == 5);
        CHECK(p.options->mode == "linprobe");
        CHECK(p.options->init == scratch.file());
        CHECK(p.options->probe_block == 2);
        CHECK(p.options->max_train == 300);
        CHECK(p.options->layer_decay == 1);
        CHECK(p.options->warmup_epochs == 0.5);
    }
    const std::vector<std::string> e{"--epochs", "1"};
    auto with_epochs = [&](std::vector<std::string> more) {
        more.insert(more.begin(), e.begin(), e.end());
        return more;
    };
    check_usage_errors(parse, {
        {{}, {"--epochs is required"}},
        {{"--epoch", "3"}, {"--epoch", "not expected", "(run with --help)"}},  // the unknown option, not the missing --epochs
        {{"--epochs", "0"}, {"--epochs: must be an integer >= 1"}},
        {with_epochs({"--mode", "train"}), {"--mode: train not in {finetune,linprobe}"}},
        {with_epochs({"--vit", "swin"}), {"--vit"}},
        {with_epochs({"--vit", "official"}), {"--mode finetune is built for the common ViT only"}},
        {with_epochs({"--model", "vit-b16-224"}), {"simmim_finetune is built for the 32-px presets and vit-tiny-test, not vit-b16-224"}},
        {with_epochs({"--model", "vit-nope"}), {"unknown model preset 'vit-nope'"}},
        {with_epochs({"--init", "/nonexistent.safetensors"}), {"--init", "/nonexistent.safetensors"}},
        {with_epochs({"--data", "/nonexistent/dir"}), {"--data: no such directory"}},
        {with_epochs({"--batch", "0"}), {"--batch"}},
        {with_epochs({"--base-lr", "nan"}), {"--base-lr: must be a finite number > 0"}},
        {with_epochs({"--min-lr", "-1"}), {"--min-lr"}},
        {with_epochs({"--warmup-lr", "inf"}), {"--warmup-lr"}},
        {with_epochs({"--weight-decay", "nan"}), {"--weight-decay"}},
        {with_epochs({"--warmup-epochs", "-1"}), {"--warmup-epochs"}},
        {with_epochs({"--layer-decay", "0"}), {"--layer-decay: must be a finite number in (0, 1]"}},
        {with_epochs({"--layer-decay", "nan"}), {"--layer-decay"}},
        {with_epochs({"--label-smoothing", "1"}), {"--label-smoothing: must be a finite number in [0, 1)"}},
        {with_epochs({"--label-fraction", "0"}), {"--label-fraction: must be a finite number in (0, 1]"}},
        {with_epochs({"--label-fraction", "1.5"}), {"--label-fraction"}},
        {with_epochs({"--label-fraction", "nan"}), {"--label-fraction"}},
        {with_epochs({"--probe-block", "0"}), {"--probe-block"}},
        {with_epochs({"--mode", "linprobe", "--model", "vit-tiny-test", "--probe-block", "3"}), {"--probe-block must lie in [1, 2]"}},
        {with_epochs({"--log-every", "0"}), {"--log-every"}},
        {with_epochs({"--max-train", "-1"}), {"--max-train"}},
        {with_epochs({"--threads", "-2"}), {"--threads"}},
        {with_epochs({"--clip-grad", "1"}), {"--clip-grad"}},  // not an option of simmim_finetune
        {with_epochs({"--crop-padding", "-1"}), {"--crop-padding: must be an integer in [0, 64]"}},
        {with_epochs({"--crop-padding", "65"}), {"--crop-padding"}},
        {with_epochs({"--hflip", "1.5"}), {"--hflip: must be a finite number in [0, 1]"}},
        {with_epochs({"--random-erase", "-0.1"}), {"--random-erase: must be a finite number in [0, 1]"}},
        {with_epochs({"--random-erase", "nan"}), {"--random-erase"}},
        {with_epochs({"--mixup", "-1"}), {"--mixup: must be a finite number >= 0"}},
        {with_epochs({"--cutmix", "inf"}), {"--cutmix"}},
        {with_epochs({"--mix-prob", "2"}), {"--mix-prob"}},
        {with_epochs({"--mix-switch", "-1"}), {"--mix-switch"}},
        {with_epochs({"--drop-path", "1"}), {"--drop-path: must be a finite number in [0, 1)"}},
        {with_epochs({"--drop-path", "nan"}), {"--drop-path"}},
        {with_epochs({"--stop-after", "-1"}), {"--stop-after"}},
        {with_epochs({"--resume", "/nonexistent.safetensors"}), {"--resume", "/nonexistent.safetensors"}},
        {with_epochs({"--mode", "linprobe", "--mixup", "0.8"}), {"--mixup is an option of --mode finetune"}},
        {with_epochs({"--mode", "linprobe", "--drop-path", "0"}), {"--drop-path is an option of --mode finetune"}},
        {with_epochs({"--mode", "linprobe", "--resume", scratch.file()}), {"--resume is an option of --mode finetune"}},
    });
}

TEST_CASE("simmim_reconstruct parse: good and bad command lines", "[cli][parse]") {
    using namespace ex::reconstruct;
    const Scratch scratch;
    {
        const auto p = parse_args(parse, {"--list-models"});
        REQUIRE(p);
        CHECK(p.options->list_models);
    }
    {
        const auto p = parse_args(parse, {"--model", "vit-tiny-test", "--weights", scratch.file(), "--input", scratch.file(), "--output", "out.safetensors",
                                          "--grads", "--seed", "3", "--png", "grid.png"});
        REQUIRE(p);
        CHECK(p.options->model == "vit-tiny-test");
        CHECK(p.options->output == "out.safetensors");
        CHECK(p.options->grads);
        CHECK(p.options->seed == 3);
        CHECK(p.options->png == "grid.png");
    }
    const std::vector<std::string> w{"--weights", scratch.file(), "--input", scratch.file(), "--output", "o.safetensors"};
    auto with_files = [&](std::vector<std::string> more) {
        more.insert(more.end(), w.begin(), w.end());
        return more;
    };
    check_usage_errors(parse, {
        {{}, {"--model is required"}},
        {{"--model", "vit-tiny-test", "--weights", scratch.file(), "--input", scratch.file()}, {"--output is required"}},
        {with_files({"--model", "vit-nope"}), {"unknown model preset 'vit-nope'"}},
        {{"--model", "vit-tiny-test", "--weights", "/nonexistent.safetensors", "--input", scratch.file(), "--output", "o"}, {"--weights", "/nonexistent.safetensors"}},
        {{"--model", "vit-tiny-test", "--weights", scratch.file(), "--input", scratch.dir.string(), "--output", "o"}, {"--input"}},
        {with_files({"--model", "vit-tiny-test", "--seed", "x"}), {"--seed"}},
        {with_files({"--model", "vit-tiny-test", "--grads=maybe"}), {"--grads"}},
    });
}

TEST_CASE("simmim_avgdist parse: good and bad command lines", "[cli][parse]") {
    using namespace ex::avgdist;
    {
        const auto p = parse_args(parse, {});
        REQUIRE(p);
        CHECK(p.options->image_size == 224);
        CHECK(p.options->mask_patches == std::vector<int>{4, 8, 16, 32, 64});
    }
    {
        const auto p = parse_args(parse, {"--image-size", "32", "--model-patch", "4", "--mask-patches", "4,8,16", "--samples", "5", "--csv", "x.csv"});
        REQUIRE(p);
        CHECK(p.options->image_size == 32);
        CHECK(p.options->mask_patches == std::vector<int>{4, 8, 16});
        CHECK(p.options->samples == 5);
        CHECK(p.options->csv == "x.csv");
    }
    check_usage_errors(parse, {
        {{"--image-size", "30", "--model-patch", "4"}, {"--image-size 30 is not a multiple of --model-patch 4"}},
        {{"--image-size", "0"}, {"--image-size: must be an integer in [1, 4096]"}},
        {{"--image-size", "4097"}, {"--image-size"}},
        {{"--samples", "0"}, {"--samples: must be an integer >= 1"}},
        {{"--model-patch", "-4"}, {"--model-patch"}},
        {{"--mask-patches", "4,0"}, {"--mask-patches", "'0'"}},
        {{"--no-such-option", "3"}, {"--no-such-option", "(run with --help)"}},
    });
}

TEST_CASE("simmim_embed parse: good and bad command lines", "[cli][parse]") {
    using namespace ex::embed;
    const Scratch scratch;
    {
        const auto p = parse_args(parse, {"--weights", scratch.file(), "--data", "fashion-mnist", "--out", "f.safetensors"});
        REQUIRE(p);
        CHECK(p.options->weights == scratch.file());
        CHECK(p.options->split == "test");
        CHECK(p.options->pool == "mean");
        CHECK(p.options->batch == 128);
        CHECK(p.options->limit == 0);
    }
    {
        const auto p = parse_args(parse, {"--weights", scratch.file(), "--data", scratch.dir.string(), "--out", "f.safetensors", "--split", "train",
                                          "--limit", "50", "--batch", "7", "--pool", "none", "--threads", "2"});
        REQUIRE(p);
        CHECK(p.options->data == scratch.dir.string());
        CHECK(p.options->split == "train");
        CHECK(p.options->limit == 50);
        CHECK(p.options->batch == 7);
        CHECK(p.options->pool == "none");
        CHECK(p.options->threads == 2);
    }
    const std::vector<std::string> req{"--weights", scratch.file(), "--data", "fashion-mnist", "--out", "f.safetensors"};
    auto with = [&](std::vector<std::string> more) {
        more.insert(more.begin(), req.begin(), req.end());
        return more;
    };
    check_usage_errors(parse, {
        {{"--data", "fashion-mnist", "--out", "f"}, {"--weights is required"}},
        {{"--weights", scratch.file(), "--out", "f"}, {"--data is required"}},
        {{"--weights", scratch.file(), "--data", "fashion-mnist"}, {"--out is required"}},
        {{"--weight", scratch.file()}, {"--weight", "(run with --help)"}},  // the unknown option, not the missing --weights
        {{"--weights", "/nonexistent.safetensors", "--data", "fashion-mnist", "--out", "f"}, {"--weights", "/nonexistent.safetensors"}},
        {{"--weights", scratch.file(), "--data", "/nonexistent/dir", "--out", "f"}, {"--data: no such directory"}},
        {with({"--split", "val"}), {"--split"}},
        {with({"--pool", "max"}), {"--pool"}},
        {with({"--batch", "0"}), {"--batch: must be an integer >= 1"}},
        {with({"--limit", "-1"}), {"--limit"}},
        {with({"--threads", "-2"}), {"--threads"}},
    });
}

TEST_CASE("fuzz inputs: the parse step of every example program", "[cli][parse][fuzz]") {
    replay("cli_pretrain", simmim::fuzz::cli_pretrain_input);
    replay("cli_finetune", simmim::fuzz::cli_finetune_input);
    replay("cli_reconstruct", simmim::fuzz::cli_reconstruct_input);
    replay("cli_avgdist", simmim::fuzz::cli_avgdist_input);
}

TEST_CASE("the fuzz oracles catch options out of range", "[cli][parse][fuzz]") {
    // the oracles are written independently of the validators; each must refuse what it is there for
    ex::pretrain::Options p;
    p.steps = 1;
    CHECK_NOTHROW(simmim::fuzz::pretrain_oracle(p));
    p.clip = std::numeric_limits<double>::quiet_NaN();
    CHECK_THROWS_AS(simmim::fuzz::pretrain_oracle(p), simmim::fuzz::OracleFailure);
    ex::finetune::Options f;
    f.epochs = 1;
    CHECK_NOTHROW(simmim::fuzz::finetune_oracle(f));
    f.layer_decay = 0;
    CHECK_THROWS_AS(simmim::fuzz::finetune_oracle(f), simmim::fuzz::OracleFailure);
    ex::avgdist::Options a;
    CHECK_NOTHROW(simmim::fuzz::avgdist_oracle(a));
    a.model_patch = 5;
    CHECK_THROWS_AS(simmim::fuzz::avgdist_oracle(a), simmim::fuzz::OracleFailure);
}
