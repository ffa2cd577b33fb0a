// tests/skip.hpp: a test case that cannot run here says so instead of passing.
//
// Catch2 v2 has no skip. SIMMIM_SKIP(reason) records the current test case as skipped with its reason
// (printed at once and again by main() at the end) and returns from the test case; main() (tests/main.cpp)
// then exits with kSkipExitCode (77) instead of 0 when no test failed, and CTest reports the test as
// skipped ("Not Run (Skipped)" and "The following tests did not run:"; tests/CMakeLists.txt sets
// SKIP_RETURN_CODE 77 on every discovered test case). catch_discover_tests runs each test case as its own
// process, so a skip marks exactly that test; an executable run by hand with several test cases exits 77
// when all that ran passed and at least one skipped. Use it only in the test case's own body (it
// returns), before any check: a case that checked something and then skips would hide those checks.
#pragma once

#include <catch2/catch.hpp>

#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace simmim::test {

/// The process exit code CTest reads as "skipped" (SKIP_RETURN_CODE).
inline constexpr int kSkipExitCode = 77;

/// "<test case>: <reason>" of every skip in this process, in order.
inline std::vector<std::string>& skipped_tests() {
    static std::vector<std::string> list;
    return list;
}

/// Records the current test case as skipped and prints "SKIPPED: <reason>" (scripts/skipped-tests.sh shows it).
inline void record_skip(const std::string& reason) {
    skipped_tests().push_back(Catch::getResultCapture().getCurrentTestName() + ": " + reason);
    std::printf("SKIPPED: %s\n", reason.c_str());
    std::fflush(stdout);
}

}  // namespace simmim::test

/// Skips the current test case (see the top of this file); `reason` is streamed like INFO's argument.
#define SIMMIM_SKIP(reason)                                               \
    do {                                                                  \
        std::ostringstream simmim_skip_reason_;                           \
        simmim_skip_reason_ << reason;                                    \
        ::simmim::test::record_skip(simmim_skip_reason_.str());           \
        WARN("skipped: " << simmim_skip_reason_.str());                   \
        return;                                                           \
    } while (false)
