// fuzz/fuzz_cli_reconstruct.cpp: simmim_reconstruct's command line (CLI11 parsing, the required
// options, the preset name), in-process through fuzz_cli.hpp.
//
// Guard: "--weights /nonexistent/simmim-fuzz.safetensors" is appended, so an invocation that
// passes the option checks builds the preset's model and stops at loading the weights (exit 1):
// no input is read, nothing is computed or written. Building a model is the only real work; for
// the largest preset (vit-b16-224, 86 M parameters) it takes about a second, hence run.sh's timeout.
// Exit codes allowed: 0 (--help, --list-models), 1 (the missing weights file), 2 (usage error).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_cli.hpp"
#include "fuzz_util.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const int rc = simmim::fuzz::run_example_main("simmim_reconstruct", data, size, {"--weights", "/nonexistent/simmim-fuzz.safetensors"});
    simmim::fuzz::require(rc == -1 || rc == 0 || rc == 1 || rc == 2,
                          "simmim_reconstruct exited with " + std::to_string(rc) + ", expected 0, 1 or 2");
    return 0;
}
