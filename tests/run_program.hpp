// tests/run_program.hpp: run one of the example programs (build/examples/<program>) from a Catch2 test,
// capturing its exit code and output.
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#ifndef SIMMIM_BINARY_DIR
#error "tests/run_program.hpp needs SIMMIM_BINARY_DIR (tests/CMakeLists.txt defines it)"
#endif

namespace simmim::test {

struct ProgramResult {
    int exit_code = -1;  // 128 + signal when the program was killed
    std::string output;  // stdout and stderr
};

/// Whether build/examples/<program> is built (SIMMIM_BUILD_EXAMPLES).
inline bool examples_built(const std::string& program = "simmim_pretrain") {
    return std::filesystem::exists(std::filesystem::path(SIMMIM_BINARY_DIR) / "examples" / program);
}

/// Runs build/examples/<program> with `args` (60 s limit); output captured.
inline ProgramResult run_program(const std::string& program, const std::vector<std::string>& args) {
    namespace fs = std::filesystem;
    const fs::path exe = fs::path(SIMMIM_BINARY_DIR) / "examples" / program;
    const fs::path log = fs::temp_directory_path() / ("simmim-test-program-" + std::to_string(::getpid()) + ".log");
    std::vector<std::string> all{exe.string()};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::alarm(60);
        ::execv(exe.c_str(), argv.data());
        ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    ProgramResult result;
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::ifstream in(log, std::ios::binary);
    result.output.assign(std::istreambuf_iterator<char>(in), {});
    fs::remove(log);
    return result;
}

}  // namespace simmim::test
