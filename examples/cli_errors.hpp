// examples/cli_errors.hpp: command-line parsing shared by the example binaries: a CLI11 parse error
// becomes one line on stderr, "<program>: error: <message> (run with --help)", and exit code 2.
#pragma once

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>

namespace simmim::examples {

/// Parses argv into `app`. Returns nullopt when parsing succeeded; otherwise the exit code main()
/// should return: 0 after --help (CLI11 prints the help), 2 after a parse error (unknown option,
/// missing or malformed value, option given twice, ...), printed on one line as
/// "<program>: error: <message> (run with --help)".
inline std::optional<int> parse_command_line(const char* program, CLI::App& app, int argc, char** argv) {
    try {
        app.parse(argc, argv);
        return std::nullopt;
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e);  // --help: 0
        std::string message = e.what();
        std::replace(message.begin(), message.end(), '\n', ' ');
        std::fprintf(stderr, "%s: error: %s (run with --help)\n", program, message.c_str());
        return 2;
    }
}

}  // namespace simmim::examples
