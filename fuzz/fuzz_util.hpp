// fuzz/fuzz_util.hpp: what the fuzz targets share: a private scratch directory, writing the input
// to a file there (the readers under test take paths), and the oracle's failure.
//
// A target accepts the errors its API documents (catching exactly that type) and lets anything
// else escape: an uncaught exception (OracleFailure included), a sanitizer report or a timeout is
// a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

namespace simmim::fuzz {

/// A broken oracle: the input made the code under test misbehave without crashing. Derives from
/// std::logic_error, not std::runtime_error, so no target's catch clause takes it for an accepted
/// error; libFuzzer reports it as an uncaught exception (a crash) and saves the input.
struct OracleFailure : std::logic_error {
    explicit OracleFailure(const std::string& what) : std::logic_error("oracle failure: " + what) {}
};

[[noreturn]] inline void oracle_failure(const std::string& what) { throw OracleFailure(what); }

inline void require(bool condition, const std::string& what) {
    if (!condition) oracle_failure(what);
}

/// A directory private to this process ($TMPDIR or /tmp, "simmim-fuzz-<pid>"), created on first
/// use and removed at normal exit; `sub` names a fresh (emptied) subdirectory of it.
inline std::filesystem::path scratch_dir(const std::string& sub) {
    static const std::filesystem::path dir = [] {
        const char* tmp = std::getenv("TMPDIR");
        std::filesystem::path d = std::filesystem::path(tmp && *tmp ? tmp : "/tmp") / ("simmim-fuzz-" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        return d;
    }();
    static const struct Cleanup {
        ~Cleanup() {
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
        }
    } cleanup;
    const std::filesystem::path path = dir / sub;
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
    return path;
}

/// Writes `size` bytes to `path`, replacing it (OracleFailure "harness: ..." if that fails).
inline void write_bytes(const std::filesystem::path& path, const std::uint8_t* data, std::size_t size) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.close();
    if (!out) oracle_failure("harness: cannot write " + path.string());
}

}  // namespace simmim::fuzz
