// fuzz/fuzz_cli.hpp: fuzzing an example program's command line in-process.
//
// main() cannot be called, so fuzz/build.sh compiles examples/<program>.cpp with
// -Dmain=simmim_example_main into the target, which calls it with an argv built from the input:
// the input split at '\n' (at most kMaxArgs arguments), preceded by the program name and followed
// by the target's guard arguments. The guard makes sure that no invocation can start real work
// (see fuzz_cli_pretrain.cpp and fuzz_cli_reconstruct.cpp), so every input runs in microseconds
// to milliseconds and the target exercises exactly what runs before work starts: CLI11 parsing
// and every option check of main(). CLI11 rejects an option given twice (its default policy), so
// the fuzzer cannot override a guard argument: repeating one ends in a usage error.
#pragma once

#include <omp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

int simmim_example_main(int argc, char** argv);

namespace simmim::fuzz {

inline constexpr std::size_t kMaxArgs = 64;

/// Runs the example's main with "program <input split at newlines> <guard...>"; returns its exit code,
/// or -1 (without running it) when the input has more than kMaxArgs arguments.
inline int run_example_main(const char* program, const std::uint8_t* data, std::size_t size, const std::vector<std::string>& guard) {
    std::vector<std::string> args{program};
    std::string current;
    for (std::size_t i = 0; i < size; ++i) {
        if (data[i] == '\n') {
            args.push_back(current);
            current.clear();
        } else {
            current.push_back(static_cast<char>(data[i]));
        }
    }
    if (size > 0) args.push_back(current);
    if (args.size() > kMaxArgs + 1) return -1;
    args.insert(args.end(), guard.begin(), guard.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int max_threads = omp_get_max_threads();
    const int rc = simmim_example_main(static_cast<int>(args.size()), argv.data());
    omp_set_num_threads(max_threads);  // --threads N must not leak into the next input
    return rc;
}

}  // namespace simmim::fuzz
