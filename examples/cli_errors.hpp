// examples/cli_errors.hpp: the error and exit-code policy of the example programs, and the parse step
// they share (docs/reliability.md).
//
// Every program is split into `parse(argc, argv) -> Parsed<Options>` (examples/<program>_options.hpp:
// CLI11 with its validators, then one validate(const Options&) for what CLI11 cannot express) and
// `run(const Options&)` (the work), joined by run_main():
//   - a parse or usage error is one line "<program>: error: <message>" on stderr, exit 2, before any work
//     (CLI11's own errors end in " (run with --help)");
//   - --help prints the help on stdout, exit 0;
//   - a UsageError thrown by run() (a check that needs the preset's types, the data or the output directory,
//     still before any work) is the same one line, exit 2;
//   - any other exception is one line "<program>: error: <message>", exit 1;
//   - run()'s own return value otherwise (0, or 128 + signal for simmim_pretrain).
#pragma once

#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

namespace simmim::examples {

/// The exit codes of every example program.
inline constexpr int kExitSuccess = 0;
inline constexpr int kExitFailure = 1;  // a runtime error: unreadable data, a bad checkpoint, I/O, a non-finite loss
inline constexpr int kExitUsage = 2;    // a bad option or combination, found before any work

/// A bad option or combination: printed on one line, exit code 2, before any work starts.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// What a program's parse() gives: the options, or the exit code main() returns without any work:
/// 0 after --help (`help` holds the text to print) or 2 after a parse or usage error (`error` holds its
/// one-line message, without the program name).
template <class Options>
struct Parsed {
    std::optional<Options> options;
    int exit_code = kExitSuccess;
    std::string help;
    std::string error;
    explicit operator bool() const { return options.has_value(); }
};

/// Whether run_main() prints the help and the errors it reports (true unless turned off): the ranks of a
/// distributed run other than rank 0 turn it off, since every rank meets the same parse and usage errors and
/// one report is enough (examples/distributed.hpp).
inline bool& report_errors() {
    static bool on = true;
    return on;
}

/// `message` on one line: line breaks become spaces.
inline std::string one_line(std::string message) {
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::replace(message.begin(), message.end(), '\r', ' ');
    return message;
}

/// Prints "<program>: error: <message>" on stderr, as one line.
inline void print_error(const char* program, const std::string& message) {
    if (!report_errors()) return;
    std::fprintf(stderr, "%s: error: %s\n", program, one_line(message).c_str());
    std::fflush(stderr);
}

/// The parse step of every program: parses argv into `app`, whose options write into `options`, then calls
/// validate(options) for the checks CLI11 cannot express (it throws UsageError). A CLI11 error (unknown
/// option, missing or malformed value, a validator's refusal, an option given twice, excluded options)
/// becomes the error "<CLI11's message> (run with --help)", a UsageError its own message. Prints nothing.
template <class Options, class Validate>
Parsed<Options> parse_options(CLI::App& app, int argc, const char* const* argv, Options& options, Validate&& validate) {
    Parsed<Options> result;
    try {
        app.parse(argc, argv);
        validate(static_cast<const Options&>(options));
        result.options = options;
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) {  // --help
            std::ostringstream help;
            result.exit_code = app.exit(e, help, help);
            result.help = help.str();
        } else {
            result.exit_code = kExitUsage;
            result.error = one_line(e.what()) + " (run with --help)";
        }
    } catch (const UsageError& e) {
        result.exit_code = kExitUsage;
        result.error = one_line(e.what());
    }
    return result;
}

/// The main() of every example program: `parse(argc, argv)`, then `run(options)`, with the policy above.
/// Before a runtime error's line, a newline ends a live progress line when stdout is a terminal.
template <class Parse, class Run>
int run_main(const char* program, int argc, char** argv, Parse&& parse, Run&& run) {
    const auto parsed = parse(argc, static_cast<const char* const*>(argv));
    if (!parsed) {
        if (!parsed.help.empty() && report_errors()) {
            std::fputs(parsed.help.c_str(), stdout);
            std::fflush(stdout);
        }
        if (!parsed.error.empty()) print_error(program, parsed.error);
        return parsed.exit_code;
    }
    try {
        return run(*parsed.options);
    } catch (const UsageError& e) {
        print_error(program, e.what());
        return kExitUsage;
    } catch (const std::exception& e) {
        if (::isatty(::fileno(stdout))) std::fputc('\n', stdout);
        std::fflush(stdout);
        print_error(program, e.what());
        return kExitFailure;
    }
}

/// For a program not yet split into parse() and run(): parses argv into `app`. Returns nullopt when
/// parsing succeeded; otherwise the exit code main() should return (0 after --help, printed; 2 after a
/// parse error, printed on one line as above).
inline std::optional<int> parse_command_line(const char* program, CLI::App& app, int argc, char** argv) {
    int unused = 0;
    const auto parsed = parse_options(app, argc, argv, unused, [](const int&) {});
    if (parsed) return std::nullopt;
    if (!parsed.help.empty()) std::fputs(parsed.help.c_str(), stdout);
    if (!parsed.error.empty()) print_error(program, parsed.error);
    return parsed.exit_code;
}

}  // namespace simmim::examples
