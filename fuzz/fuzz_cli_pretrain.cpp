// fuzz/fuzz_cli_pretrain.cpp: simmim_pretrain's command line (CLI11 parsing and every check that
// runs before work starts), in-process through fuzz_cli.hpp.
//
// Guard: "--out /dev/null/simmim-fuzz" is appended. The output directory is the first thing
// train<Config>() touches after checking the mask options (mask patch against the preset,
// RandomMaskPatch's own checks), and it cannot be created under /dev/null, so every invocation
// that gets that far ends there with a usage error: no dataset is opened, no model is built.
// Exit codes allowed: 0 (--help) and 2 (usage error). Anything else is a finding: 1 means a bad
// option was reported as a runtime error, a crash or sanitizer report is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_cli.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const int rc = simmim::fuzz::run_example_main("simmim_pretrain", data, size, {"--out", "/dev/null/simmim-fuzz"});
    simmim::fuzz::require(rc == -1 || rc == 0 || rc == 2, "simmim_pretrain exited with " + std::to_string(rc) + ", expected 0 or 2");
    return 0;
}
