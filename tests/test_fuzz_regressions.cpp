// Replays the inputs that fuzzing found (tests/regressions/<target>/) and the fuzz seed corpora
// (fuzz/corpus/<target>/) through the same code as the fuzz targets (fuzz/fuzz_targets.hpp for the
// file formats), the command-line corpora also through the real example binaries (their parse step
// through fuzz/fuzz_cli.hpp is replayed by tests/test_cli_parse.cpp), and pins each finding's expected
// behaviour. See docs/reliability.md.
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <algorithm>
#include <new>
#include <span>
#include <string>
#include <vector>

#include "../fuzz/fuzz_targets.hpp"
#include "run_program.hpp"
#include "skip.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define SIMMIM_TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIMMIM_TEST_UNDER_ASAN 1
#endif
#endif
#ifndef SIMMIM_TEST_UNDER_ASAN
#define SIMMIM_TEST_UNDER_ASAN 0
#endif

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

Bytes read_all(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), {});
}

/// Regression inputs of findings that are not fixed yet: each has its own [!shouldfail] test below
/// and is left out of the generic replay. When a fix lands, drop its entries here and that tag.
/// (None open: img-1 to img-4 were fixed by decoding with libjpeg-turbo and libpng instead of stb_image.)
const std::vector<std::string> kOpenFindings{};

bool is_open_finding(const fs::path& file) {
    const std::string key = file.parent_path().filename().string() + "/" + file.filename().string();
    return file.parent_path().parent_path().filename() == "regressions" &&
           std::find(kOpenFindings.begin(), kOpenFindings.end(), key) != kOpenFindings.end();
}

/// The files of tests/regressions/<target>/ (open findings left out) and fuzz/corpus/<target>/, sorted; with
/// `minimised`, also the corpus that fuzzing grew, fuzz/corpus-min/<target>/ (fuzz/merge.sh; replayed in process
/// only: through the real programs it would take minutes).
std::vector<fs::path> inputs_of(const std::string& target, bool minimised = false) {
    std::vector<fs::path> files;
    for (const char* base : {"tests/regressions/", "fuzz/corpus/", "fuzz/corpus-min/"}) {
        if (!minimised && std::string(base) == "fuzz/corpus-min/") continue;
        const fs::path dir = fs::path(SIMMIM_SOURCE_DIR) / (base + target);
        if (!fs::is_directory(dir)) continue;
        for (const auto& entry : fs::directory_iterator(dir))
            if (entry.is_regular_file() && !is_open_finding(entry.path())) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    return files;
}

Bytes regression_input(const std::string& name) { return read_all(fs::path(SIMMIM_SOURCE_DIR) / "tests/regressions" / name); }

void replay_all(const std::string& target, const std::function<void(const std::uint8_t*, std::size_t)>& run) {
    const auto files = inputs_of(target, /*minimised=*/true);
    REQUIRE(!files.empty());  // at least the seed corpus
    for (const auto& file : files) {
        const Bytes bytes = read_all(file);
        INFO("input " << file.string());
        CHECK_NOTHROW(run(bytes.data(), bytes.size()));
    }
}

/// Runs `body` in a child process whose address space is limited to `limit_bytes`; returns the
/// child's exit code (0: body returned, 3: std::bad_alloc, 4: another exception).
[[maybe_unused]] int in_child_with_memory_limit(std::size_t limit_bytes, const std::function<void()>& body) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        const rlimit limit{limit_bytes, limit_bytes};
        ::setrlimit(RLIMIT_AS, &limit);
        int code = 0;
        try {
            body();
        } catch (const std::bad_alloc&) {
            code = 3;
        } catch (...) {
            code = 4;
        }
        ::_exit(code);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

using simmim::test::ProgramResult;
using simmim::test::run_program;

/// The argv of a command-line fuzz input: the file split at '\n' (fuzz/fuzz_cli.hpp).
std::vector<std::string> split_args(const Bytes& bytes) {
    std::vector<std::string> args(1);
    for (const std::uint8_t b : bytes) {
        if (b == '\n') args.emplace_back();
        else args.back().push_back(static_cast<char>(b));
    }
    if (bytes.empty()) args.clear();
    return args;
}

using simmim::test::examples_built;

/// A private directory holding a 16-image IDX training set (28 x 28) and an output directory, so
/// that a simmim_pretrain run that gets past its checks costs milliseconds.
struct TinyRun {
    fs::path dir = fs::temp_directory_path() / ("simmim-fuzz-regression-run-" + std::to_string(::getpid()));
    TinyRun() {
        fs::remove_all(dir);
        fs::create_directories(dir / "data");
        const auto be32 = [](std::uint32_t v) { return Bytes{Bytes::value_type(v >> 24), Bytes::value_type(v >> 16), Bytes::value_type(v >> 8), Bytes::value_type(v)}; };
        Bytes images = be32(0x803), labels = be32(0x801);
        for (const std::uint32_t v : {16u, 28u, 28u}) { const Bytes b = be32(v); images.insert(images.end(), b.begin(), b.end()); }
        const Bytes n = be32(16);
        labels.insert(labels.end(), n.begin(), n.end());
        for (std::size_t i = 0; i < 16 * 28 * 28; ++i) images.push_back(static_cast<std::uint8_t>(i * 7));
        for (std::uint8_t i = 0; i < 16; ++i) labels.push_back(i % 10);
        std::ofstream(dir / "data" / "train-images-idx3-ubyte", std::ios::binary).write(reinterpret_cast<const char*>(images.data()), std::streamsize(images.size()));
        std::ofstream(dir / "data" / "train-labels-idx1-ubyte", std::ios::binary).write(reinterpret_cast<const char*>(labels.data()), std::streamsize(labels.size()));
    }
    ~TinyRun() { fs::remove_all(dir); }
    /// simmim_pretrain vit-tiny-test, batch 8, 1 thread on the tiny set, plus `extra`.
    ProgramResult pretrain(const std::vector<std::string>& extra) const {
        std::vector<std::string> args{"--model", "vit-tiny-test", "--batch", "8", "--threads", "1", "--data", (dir / "data").string(),
                                      "--out", (dir / "out").string()};
        args.insert(args.end(), extra.begin(), extra.end());
        return run_program("simmim_pretrain", args);
    }
};

}  // namespace

TEST_CASE("fuzz inputs: safetensors parser", "[fuzz]") { replay_all("safetensors", simmim::fuzz::safetensors_input); }
TEST_CASE("fuzz inputs: checkpoint loader", "[fuzz]") { replay_all("checkpoint", simmim::fuzz::checkpoint_input); }
TEST_CASE("fuzz inputs: IDX reader", "[fuzz]") { replay_all("idx", simmim::fuzz::idx_input); }
TEST_CASE("fuzz inputs: CIFAR reader", "[fuzz]") { replay_all("cifar", simmim::fuzz::cifar_input); }
TEST_CASE("fuzz inputs: image folder decoding and augmentation", "[fuzz]") { replay_all("image", simmim::fuzz::image_input); }

TEST_CASE("fuzz inputs: simmim_pretrain command lines exit 0 or 2 before any work", "[fuzz][cli]") {
    if (!examples_built()) {
        SIMMIM_SKIP("the example programs are not built (SIMMIM_BUILD_EXAMPLES=OFF)");
    }
    for (const auto& file : inputs_of("cli_pretrain")) {
        auto args = split_args(read_all(file));
        args.insert(args.end(), {"--out", "/dev/null/simmim-fuzz"});  // no run can get past creating the output directory
        const ProgramResult r = run_program("simmim_pretrain", args);
        INFO("input " << file.string() << "\noutput:\n" << r.output);
        CHECK((r.exit_code == 0 || r.exit_code == 2));
    }
}

TEST_CASE("fuzz inputs: simmim_reconstruct command lines exit 0 1 or 2", "[fuzz][cli]") {
    if (!examples_built("simmim_reconstruct")) {
        SIMMIM_SKIP("simmim_reconstruct is not built (SIMMIM_BUILD_EXAMPLES=OFF)");
    }
    for (const auto& file : inputs_of("cli_reconstruct")) {
        auto args = split_args(read_all(file));
        args.insert(args.end(), {"--weights", "/nonexistent/simmim-fuzz.safetensors"});  // no run can load weights
        const ProgramResult r = run_program("simmim_reconstruct", args);
        INFO("input " << file.string() << "\noutput:\n" << r.output);
        CHECK((r.exit_code == 0 || r.exit_code == 1 || r.exit_code == 2));
    }
}

// Finding idx-1 (fuzz_idx, out-of-memory): gunzip() reserved the gzip trailer's ISIZE, up to 4 GiB,
// for any file starting with 1f 8b. Known bug until include/simmim/data/idx.hpp caps the hint
// (docs/reliability.md); then this test passes and its [!shouldfail] tag must go. Not built under
// AddressSanitizer, which reserves terabytes of shadow address space (RLIMIT_AS cannot work there);
// the generic replay above still runs the input.
#if !SIMMIM_TEST_UNDER_ASAN
TEST_CASE("a gzip IDX file whose trailer claims 4 GiB is read within a 1 GiB address space", "[fuzz][idx]") {
    const Bytes input = regression_input("idx/gzip-isize-4gib");
    REQUIRE(input.size() > 18);
    const int code = in_child_with_memory_limit(std::size_t(1) << 30, [&] { simmim::fuzz::idx_input(input.data(), input.size()); });
    CHECK(code == 0);
}
#endif

// Finding cli-1 (review of the code fuzz_cli_pretrain's guard keeps out of reach, confirmed by
// running the binary): the step count ceil(epochs * steps_per_epoch) is converted to int64 without
// a range check, undefined behaviour for --epochs 1e300 or inf; on x86 it gives INT64_MIN and the
// message blames --warmup ("--warmup 0 exceeds the run's -9223372036854775808 steps").
TEST_CASE("simmim_pretrain rejects an --epochs beyond the int64 step range as a usage error naming --epochs", "[fuzz][cli]") {
    if (!examples_built()) {
        SIMMIM_SKIP("the example programs are not built (SIMMIM_BUILD_EXAMPLES=OFF)");
    }
    const TinyRun run;
    for (const char* epochs : {"1e300", "inf"}) {
        const ProgramResult r = run.pretrain({"--epochs", epochs, "--warmup", "0"});
        INFO("--epochs " << epochs << ": exit " << r.exit_code << ", output:\n" << r.output);
        CHECK(r.exit_code == 2);
        CHECK(r.output.find("--epochs") != std::string::npos);
    }
}

// Finding cli-2 (review, confirmed by running the binary): NaN passes the range checks of
// --base-lr, --min-lr, --warmup-lr, --weight-decay and --clip-grad (written as `x <= 0` rather than
// `!(x > 0)`). --clip-grad nan silently disables clipping and the run exits 0; the others train
// until the first non-finite loss and exit 1. Each should be a usage error (exit 2) naming the option.
TEST_CASE("simmim_pretrain rejects NaN learning rates and weight decay and clipping threshold as usage errors", "[fuzz][cli]") {
    if (!examples_built()) {
        SIMMIM_SKIP("the example programs are not built (SIMMIM_BUILD_EXAMPLES=OFF)");
    }
    const TinyRun run;
    for (const char* option : {"--base-lr", "--min-lr", "--warmup-lr", "--weight-decay", "--clip-grad"}) {
        const ProgramResult r = run.pretrain({"--steps", "1", option, "nan"});
        INFO(option << " nan: exit " << r.exit_code << ", output:\n" << r.output);
        CHECK(r.exit_code == 2);
        CHECK(r.output.find(option) != std::string::npos);
    }
}

// Finding st-1 (fuzz_safetensors, UBSan "applying non-zero offset to null pointer" in vector::back): a header
// whose top level is an array holding an object with a duplicate key made parse_header_json name the entry with
// top_level_keys.back() of an empty vector (undefined behaviour; the 8-byte length + [{"a":{"k":1,"k":2}}]). It
// must be a SafetensorsError naming the key. (The generic safetensors case replays it under the sanitizers too.)
TEST_CASE("a safetensors header that is an array with a duplicate key inside is a SafetensorsError naming the key", "[fuzz][safetensors]") {
    const Bytes input = regression_input("safetensors/array-header-duplicate-key");
    try {
        simmim::io::parse_safetensors(std::as_bytes(std::span(input.data(), input.size())), "st-1");
        FAIL_CHECK("parsed");
    } catch (const simmim::io::SafetensorsError& e) {
        CHECK_THAT(e.what(), Catch::Contains("duplicate key 'k'") && Catch::Contains("st-1"));
    }
}

// Finding ckpt-1 (fuzz_checkpoint; inputs made by mutating the seed's "optimizer_steps"):
// load_checkpoint parses metadata "optimizer_steps" with std::stoll and reads it with map::at, so a
// non-number, an out-of-range number or a missing key escapes as std::invalid_argument or
// std::out_of_range (message "stoll" / "map::at", no file named), and "-3" or "12abc" load as step
// counts -3 and 12. Each must be a SafetensorsError naming the file and the key.
TEST_CASE("a checkpoint whose optimizer_steps is missing or not a number or negative is a SafetensorsError", "[fuzz][checkpoint]") {
    for (const char* name : {"steps-missing", "steps-not-a-number", "steps-out-of-range", "steps-negative", "steps-trailing-garbage"}) {
        INFO("tests/regressions/checkpoint/" << name);
        const Bytes input = regression_input(std::string("checkpoint/") + name);
        const fs::path path = simmim::fuzz::scratch_dir("ckpt-1") / "checkpoint.safetensors";
        simmim::fuzz::write_bytes(path, input.data(), input.size());
        simmim::ViTSimMIM<float, simmim::fuzz::kFuzzCheckpointConfig> model(simmim::random_mask_patch<simmim::fuzz::kFuzzCheckpointConfig, simmim::fuzz::kFuzzCheckpointConfigMask>(), 0);
        simmim::AdamW<float> opt(model.params());
        try {
            simmim::io::load_checkpoint(path, model.params(), opt);
            FAIL_CHECK("loaded, with optimizer step count " << opt.steps());
        } catch (const simmim::io::SafetensorsError& e) {
            CHECK(std::string(e.what()).find(path.string()) != std::string::npos);
            CHECK(std::string(e.what()).find("optimizer_steps") != std::string::npos);
        } catch (const std::exception& e) {
            FAIL_CHECK("escaped as another exception: " << e.what());
        }
    }
}

// Finding cli-3 (review of the --resume path, confirmed by running the binary): simmim_pretrain
// reads the checkpoint's "step" and "config" metadata with map::at, std::stoll and json::parse, so a
// checkpoint saved by io::save_checkpoint without them (or with a malformed value) ends in
// "simmim_pretrain: error: map::at", naming neither the file nor the key.
TEST_CASE("simmim_pretrain --resume of a checkpoint without run metadata names the file and the key", "[fuzz][cli]") {
    if (!examples_built()) {
        SIMMIM_SKIP("the example programs are not built (SIMMIM_BUILD_EXAMPLES=OFF)");
    }
    const TinyRun run;
    REQUIRE(run.pretrain({"--steps", "2"}).exit_code == 0);
    const fs::path saved = run.dir / "out" / "checkpoint.safetensors";
    for (const char* key : {"config", "step"}) {
        simmim::io::TensorFile file = simmim::io::read_safetensors(saved);
        file.metadata.erase(key);
        const fs::path edited = run.dir / (std::string("without-") + key + ".safetensors");
        simmim::io::write_safetensors(edited, file);
        const ProgramResult r = run.pretrain({"--steps", "2", "--resume", edited.string()});
        INFO("without '" << key << "': exit " << r.exit_code << ", output:\n" << r.output);
        CHECK((r.exit_code == 1 || r.exit_code == 2));
        CHECK(r.output.find(edited.string()) != std::string::npos);
        CHECK(r.output.find(key) != std::string::npos);
    }
}

namespace {

/// The message of the DataError `body` throws ("" and a failed check if it throws none).
template <class Body>
std::string data_error_message(Body&& body) {
    try {
        body();
    } catch (const simmim::data::DataError& e) {
        return e.what();
    }
    FAIL_CHECK("no DataError");
    return {};
}

/// Writes a fuzz_image input (byte 0 picks the name, the rest is the file) as `name` into a fresh
/// scratch directory `sub`; returns the file's path.
fs::path write_image_input(const std::string& sub, const std::string& regression, const std::string& name) {
    const Bytes input = regression_input(regression);
    REQUIRE(input.size() > 1);
    const fs::path path = simmim::fuzz::scratch_dir(sub) / name;
    simmim::fuzz::write_bytes(path, input.data() + 1, input.size() - 1);
    return path;
}

/// get(0) of an unvalidated one-file folder must throw a DataError naming the file, and validate()
/// must drop the file (so it throws: nothing is left).
void check_image_refused(const fs::path& path) {
    simmim::data::ImageFolderDataset unvalidated(path.parent_path());
    try {
        const auto image = unvalidated.get(0);
        FAIL_CHECK("get(0) returned a " << image.width << "x" << image.height << "x" << image.channels << " image");
    } catch (const simmim::data::DataError& e) {
        CHECK_THAT(std::string(e.what()), Catch::Contains(path.string()));
    }
    simmim::data::ImageFolderDataset validated(path.parent_path());
    CHECK_THROWS_AS(validated.validate(), simmim::data::DataError);
}

}  // namespace

// Finding img-1 (fuzz_image, oracle "decoded image has a bad geometry"), fixed: stb_image 2.27
// (Debian's libstb-dev) read a PGM whose width field is not a number as a 0x0 image, in stbi_info and
// in stbi_load, so validate() kept the file and get() returned a 0x0 image. Images are now decoded by
// libjpeg-turbo / libpng chosen by content: a PGM is refused (and a 0-sized JPEG or PNG too, see
// tests/test_image_decode.cpp).
TEST_CASE("an image file that stb_image decoded as 0x0 is skipped by validate and rejected by get", "[fuzz][image]") {
    check_image_refused(write_image_input("img-1", "image/pnm-zero-width", "image.png"));
}

// Finding img-2 (fuzz_image, UBSan "index 257 out of bounds for type 'stbi_uc[257]'" in
// stbi__build_huffman), fixed: stb_image 2.27 wrote past its Huffman size table on a JPEG whose DHT
// segment declares more than 256 codes (fixed upstream in 2.28). libjpeg-turbo rejects such a table
// ("Bogus Huffman table definition"). The second input's oversized table starts 3 bytes before the
// end of the file; the third starts with 0xFF fill bytes before the SOI marker (stb_image skipped
// them; it is no JPEG signature now). Each must be a DataError naming the file, in get() and validate().
TEST_CASE("a JPEG whose Huffman table declares more than 256 codes is rejected", "[fuzz][image]") {
    for (const char* name : {"image/jpeg-dht-over-256-codes", "image/jpeg-dht-over-256-codes-at-eof",
                             "image/jpeg-dht-over-256-codes-fill-before-soi"}) {
        INFO("tests/regressions/" << name);
        check_image_refused(write_image_input("img-2", name, "image.jpg"));
    }
    const fs::path first = write_image_input("img-2", "image/jpeg-dht-over-256-codes", "image.jpg");
    CHECK_THAT(data_error_message([&] { (void)simmim::data::ImageFolderDataset(first.parent_path()).get(0); }),
               Catch::Contains("Huffman"));
}

// Finding img-3 (fuzz_image, timeout), fixed: stb_image decoded by content, so a file named .png could
// be a TGA, PSD, HDR, PNM, GIF or PIC; this 351-byte run-length TGA decoded to 65530 x 771 x 3
// (150 MB) and the augmentation then converted it to 600 MB of floats. Only JPEG and PNG are decoded
// now, and images above ImageDecodeLimits::max_pixels (64 Mi by default) are refused from their header.
TEST_CASE("a tiny file that would decode to 150 MB is rejected", "[fuzz][image]") {
    check_image_refused(write_image_input("img-3", "image/tga-decompression-bomb", "image.png"));
}

// Finding img-4 (fuzz_image with the stb_image workarounds applied, UBSan "signed integer overflow:
// -715833747 * 3 cannot be represented in type 'int'" in stbi__jpeg_decode_block), fixed by the switch
// to libjpeg-turbo: stb_image 2.27 accumulated JPEG DC coefficients in int without the overflow checks
// of 2.28. The input (tests/regressions/image/jpeg-dc-overflow) reproduced only in the clang-built
// fuzz target; it is also replayed by the generic image test above. Whatever libjpeg-turbo makes of
// it, the contract is an image of the size its header states or a DataError naming the file.
TEST_CASE("the JPEG whose DC coefficients overflowed stb_image decodes or is a DataError naming the file", "[fuzz][image]") {
    const fs::path path = write_image_input("img-4", "image/jpeg-dc-overflow", "image.jpg");
    simmim::data::ImageFolderDataset ds(path.parent_path());
    try {
        const auto image = ds.get(0);
        const auto info = simmim::data::read_image_info(path);
        CHECK(image.width == info.width);
        CHECK(image.height == info.height);
        CHECK(image.pixels.size() == std::size_t(image.width) * std::size_t(image.height) * std::size_t(image.channels));
    } catch (const simmim::data::DataError& e) {
        CHECK_THAT(std::string(e.what()), Catch::Contains(path.string()));
    }
}
