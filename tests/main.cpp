// tests/main.cpp: the one translation unit that defines main() for the Catch2 test executables: Catch2's
// session, then exit code 77 (CTest's SKIP_RETURN_CODE) when every test that ran passed and at least one
// test case skipped itself with SIMMIM_SKIP (tests/skip.hpp).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include "skip.hpp"

int main(int argc, char* argv[]) {
    const int result = Catch::Session().run(argc, argv);
    const auto& skipped = simmim::test::skipped_tests();
    if (result != 0 || skipped.empty()) return result;
    for (const auto& entry : skipped) std::printf("skipped test case %s\n", entry.c_str());
    std::printf("%zu test case(s) skipped: exit code %d (CTest: Not Run, Skipped)\n", skipped.size(), simmim::test::kSkipExitCode);
    return simmim::test::kSkipExitCode;
}
