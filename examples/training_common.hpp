// examples/training_common.hpp: what the training binaries share: usage errors, the output
// directory (its lock is in output_lock.hpp), the report of an image-folder scan, the live progress
// line, the metrics log (JSON lines) and its loss-curve picture.
#pragma once

#include <fcntl.h>
#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <Eigen/Core>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "cli_errors.hpp"
#include "output_lock.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/data/open.hpp"
#include "simmim/kernels/gemm.hpp"
#include "simmim/kernels/simd.hpp"

namespace simmim::examples {

/// Sets the OpenMP and Eigen thread count; 0 keeps all cores (--threads, checked by the parse step).
inline void set_threads(int threads) {
    if (threads > 0) omp_set_num_threads(threads);
    Eigen::setNbThreads(omp_get_max_threads());
}

/// Sets the matmul precision of --precision ("fp32" or "bf16", checked by the parse step); a CPU without
/// AVX512-BF16 makes bf16 a UsageError that says so, before any work.
inline void set_precision(const std::string& precision) {
    try {
        kernels::set_matmul_precision(precision == "bf16" ? kernels::MatmulPrecision::bf16 : kernels::MatmulPrecision::fp32);
    } catch (const std::runtime_error& e) {
        throw UsageError("--precision " + precision + ": " + e.what());
    }
}

/// The kernel paths for the start line: "fp32 matmul (avx512 (run-time dispatch)), element-wise avx512bw" or "bf16
/// matmul (avx512-bf16, FP32 accumulation), element-wise sse2". The matrix products and attention follow the
/// run-time dispatch of simmim::kernels when it is linked (kernels/dispatch.hpp), the element-wise ops the flags.
inline std::string precision_description() {
    std::string text = kernels::matmul_precision() == kernels::MatmulPrecision::bf16
                           ? std::string("bf16 matmul (avx512-bf16, FP32 accumulation)")
                           : "fp32 matmul (" + kernels::kernel_path() + ")";
#if SIMMIM_SIMD
    text += ", element-wise ";
    text += kernels::isa_name();
#else
    text += ", element-wise scalar";
#endif
    return text;
}

/// A warning when the running CPU has AVX-512 (or AVX2 + FMA) but this program's matrix products do not use it:
/// a header-only build compiled for less (no -march=native, no simmim::kernels) runs several times slower. Empty
/// when the kernels match the CPU. (With simmim::kernels the products follow the CPU; the element-wise ops, a few
/// percent of a step, keep the compile flags.)
inline std::string isa_mismatch_warning() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    const bool cpu512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
    const bool cpu2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#if defined(SIMMIM_EXTERN_KERNELS)
    const std::string built = kernels::dispatch::active().gemm_path;
    const char* fix = "SIMMIM_ISA caps the run-time choice: unset it";
#else
    const std::string built = kernels::gemm_float_path;
    const char* fix = "rebuild with -march=native (CMake -DSIMMIM_NATIVE=ON) or link simmim::kernels";
#endif
    if ((cpu512 && built != "avx512") || (!cpu512 && cpu2 && built == "portable"))
        return std::string("warning: this CPU has ") + (cpu512 ? "AVX-512" : "AVX2 + FMA") + " but the matrix products run " +
               (built == "portable" ? std::string("baseline x86-64 code") : built) + ": training runs several times slower; " + fix;
#endif
    return {};
}

/// For a program not yet split into parse() and run() (cli_errors.hpp): parses argv, sets the thread
/// count, runs body() and reports errors with the policy of run_main().
template <class Body>
int run_cli(const char* program, CLI::App& app, int argc, char** argv, const int& threads, Body&& body) {
    if (const auto exit_code = parse_command_line(program, app, argc, argv)) return *exit_code;
    const auto parse = [&](int, const char* const*) {
        Parsed<int> parsed;
        parsed.options = threads;
        return parsed;
    };
    return run_main(program, argc, argv, parse, [&](int n) {
        if (n < 0) throw UsageError("--threads must be >= 0");
        set_threads(n);
        return body();
    });
}

/// Throws UsageError(what) unless `ok`; NaN must fail the condition (write `!(x > 0)`, not `x <= 0`).
inline void require_option(bool ok, const std::string& what) {
    if (!ok) throw UsageError(what);
}

/// Creates `dir` if needed and proves it writable by writing, syncing and removing a probe file
/// ".write-probe.<pid>"; UsageError naming the directory and the system's reason otherwise.
inline void prepare_output_dir(const std::filesystem::path& dir) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw UsageError("--out " + dir.string() + ": cannot create directory: " + ec.message());
    const auto probe = dir / (".write-probe." + std::to_string(::getpid()));
    const auto fail = [&](const char* what, int error) {
        throw UsageError("--out " + dir.string() + ": directory is not writable (" + what + " " + probe.filename().string() +
                         ": " + std::system_category().message(error) + ")");
    };
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail("cannot create", errno);
    const bool written = ::write(fd, "ok\n", 3) == 3 && ::fsync(fd) == 0;
    const int write_error = errno;
    const bool closed = ::close(fd) == 0;
    const int close_error = errno;
    std::filesystem::remove(probe, ec);
    if (!written) fail("cannot write", write_error);
    if (!closed) fail("cannot close", close_error);
}

/// After opening `data` (given as `--data name`): for an image folder whose scan skipped files, prints
/// the count and each of the first skipped files with its reason ("skipped <file>: damaged JPEG data
/// (...)"). With `strict` (--strict-images) any skipped file is then an error (std::runtime_error: exit 1)
/// naming the count and the first file.
inline void report_image_scan(const data::OpenedDataset& data, const std::string& name, bool strict) {
    if (data.skipped == 0) return;
    std::printf("image scan of %s: %zu of %zu image files skipped (%zu damaged, %zu unreadable)%s\n", name.c_str(), data.skipped,
                data.scanned, data.damaged, data.skipped - data.damaged, strict ? "" : "; the others are used");
    for (std::size_t i = 0; i < data.first_skipped.size(); ++i)
        std::printf("  skipped %s\n", i < data.first_skipped_reasons.size() ? data.first_skipped_reasons[i].c_str() : data.first_skipped[i].c_str());
    if (data.skipped > data.first_skipped.size()) std::printf("  ... and %zu more\n", data.skipped - data.first_skipped.size());
    std::fflush(stdout);
    if (strict)
        throw std::runtime_error("--strict-images: " + std::to_string(data.skipped) + " of " + std::to_string(data.scanned) +
                                 " image files in " + name + " are damaged or unreadable, e.g. " +
                                 (data.first_skipped_reasons.empty() ? std::string("?") : data.first_skipped_reasons.front()));
}

/// A --resume checkpoint's metadata 'config' (the JSON of everything that changes a run's results) against
/// this run's: std::runtime_error when it is absent or not JSON, UsageError naming every differing key
/// ("'batch' checkpoint 8, this run 16; ...") when they differ.
inline void check_resume_config(const std::map<std::string, std::string>& metadata, const nlohmann::json& config, const std::string& path) {
    const auto cfg_it = metadata.find("config");
    if (cfg_it == metadata.end()) throw std::runtime_error("--resume " + path + ": checkpoint metadata has no 'config'");
    const auto saved = nlohmann::json::parse(cfg_it->second, nullptr, /*allow_exceptions=*/false);
    if (saved.is_discarded()) throw std::runtime_error("--resume " + path + ": checkpoint metadata 'config' is not JSON");
    if (saved == config) return;
    std::string diff;
    for (const auto* side : {&saved, &config})
        for (const auto& [key, value] : side->items())
            if (diff.find("'" + key + "'") == std::string::npos && saved.value(key, nlohmann::json()) != config.value(key, nlohmann::json()))
                diff += (diff.empty() ? "" : "; ") + ("'" + key + "' checkpoint " + saved.value(key, nlohmann::json()).dump() + ", this run " +
                                                      config.value(key, nlohmann::json()).dump());
    throw UsageError("--resume " + path + " was written with a different configuration: " + diff);
}

/// The name of the first parameter whose gradient is not finite (or "loss" when the loss is not).
template <class T>
std::string first_nonfinite(const ParamArena<T>& params, double loss) {
    if (!std::isfinite(loss)) return "loss (" + std::to_string(loss) + ")";
    for (const auto& p : params.params())
        for (std::size_t i = 0; i < p.size; ++i)
            if (!std::isfinite(double(params.grads()[p.offset + i]))) return "gradient of " + p.name + " (element " + std::to_string(i) + ")";
    return "gradient norm";
}

inline std::string format_duration(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    const long s = std::lround(seconds);
    char buf[32];
    if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
    return buf;
}

/// A live progress line on a terminal (rewritten in place), plain lines every log_every steps otherwise.
/// `shown` false: nothing is printed (the ranks of a distributed run but rank 0), the rest works alike.
/// `live` false: plain lines even on a terminal (under mpirun, whose pseudo-terminal is not the user's).
class Progress {
public:
    Progress(std::int64_t total, std::int64_t start, std::int64_t log_every, bool shown = true, bool live = true)
        : total_(total), start_(start), log_every_(log_every), shown_(shown), tty_(shown && live && isatty(fileno(stdout)) != 0),
          t0_(clock::now()), last_(t0_) {}
    /// Text shown after the images per second, e.g. "2 ranks x 1 threads" (whose images the figure counts).
    void set_tag(std::string tag) { tag_ = " (" + std::move(tag) + ")"; }

    /// Records a finished step; returns true when this step is a logged one.
    bool update(std::int64_t step, std::int64_t epoch, double loss, double lr, double gnorm, int batch) {
        const auto now = clock::now();
        const double dt = std::chrono::duration<double>(now - last_).count();
        last_ = now;
        const double ips = dt > 0 ? batch / dt : 0;
        ips_ = ips_ == 0 ? ips : 0.9 * ips_ + 0.1 * ips;
        const bool log_now = step % log_every_ == 0 || step == total_;
        const double elapsed = std::chrono::duration<double>(now - t0_).count();
        const double eta = elapsed / double(step - start_) * double(total_ - step);
        if (shown_ && (tty_ || log_now)) {
            std::printf("%sstep %lld/%lld  epoch %lld  loss %.4f  lr %.3g  grad-norm %.3f  %.1f img/s%s  ETA %s%s", tty_ ? "\r\033[K" : "",
                        static_cast<long long>(step), static_cast<long long>(total_), static_cast<long long>(epoch), loss, lr, gnorm, ips_,
                        tag_.c_str(), format_duration(eta).c_str(), tty_ ? "" : "\n");
            std::fflush(stdout);
        }
        return log_now;
    }
    void finish() {
        if (tty_) std::printf("\n");
        std::fflush(stdout);
    }
    double images_per_second() const { return ips_; }

private:
    using clock = std::chrono::steady_clock;
    std::int64_t total_, start_, log_every_;
    bool shown_, tty_;
    std::string tag_;
    clock::time_point t0_, last_;
    double ips_ = 0;
};

/// metrics.jsonl: one JSON object per logged step. Opening for a resumed run keeps the lines of
/// steps before `start` and drops the rest (they will be recomputed identically).
class MetricsLog {
public:
    static MetricsLog open(const std::filesystem::path& path, std::int64_t start) {
        MetricsLog log;
        log.path_ = path;
        if (start > 0) {
            std::ifstream in(path);
            std::string line;
            while (std::getline(in, line)) {
                if (line.empty()) continue;
                try {
                    auto j = nlohmann::json::parse(line);
                    if (j.at("step").get<std::int64_t>() < start) log.rows_.push_back(std::move(j));
                } catch (const std::exception&) {
                    break;  // a line cut by a crash ends the usable log
                }
            }
        }
        // the kept rows go to a temporary that replaces the log by rename: a process killed here leaves the old
        // log whole (truncating in place lost the history of a run killed right after a resume, tests/kill_resume.sh)
        const std::filesystem::path tmp = path.string() + ".tmp";
        {
            std::ofstream out(tmp, std::ios::trunc);
            for (const auto& r : log.rows_) out << r.dump() << '\n';
            out.flush();
            if (!out) throw std::runtime_error("cannot write metrics file " + tmp.string());
        }
        std::error_code ec;
        std::filesystem::rename(tmp, path, ec);
        if (ec) throw std::runtime_error("cannot replace metrics file " + path.string() + ": " + ec.message());
        return log;
    }
    void append(std::int64_t step, std::int64_t epoch, double loss, double lr, double gnorm, double ips) {
        nlohmann::json j{{"step", step}, {"epoch", epoch}, {"loss", loss}, {"lr", lr}, {"grad_norm", gnorm}, {"images_per_s", ips}};
        std::ofstream out(path_, std::ios::app);
        out << j.dump() << '\n';
        out.flush();
        rows_.push_back(std::move(j));
    }
    double recent_mean(std::size_t n) const {
        if (rows_.empty()) return NAN;
        const std::size_t k = std::min(n, rows_.size());
        double s = 0;
        for (std::size_t i = rows_.size() - k; i < rows_.size(); ++i) s += rows_[i].at("loss").get<double>();
        return s / double(k);
    }
    /// The loss curve as a standalone SVG (step on x, loss on y).
    void write_svg(const std::filesystem::path& path, const std::string& title) const {
        const double W = 720, H = 420, l = 70, r = 20, t = 40, b = 50;
        double x0 = 0, x1 = 1, y0 = 1e300, y1 = -1e300;
        for (const auto& row : rows_) {
            x1 = std::max(x1, row.at("step").get<double>());
            y0 = std::min(y0, row.at("loss").get<double>());
            y1 = std::max(y1, row.at("loss").get<double>());
        }
        if (rows_.empty() || !(y1 > y0)) y0 = 0, y1 = 1;
        const auto X = [&](double s) { return l + (s - x0) / (x1 - x0) * (W - l - r); };
        const auto Y = [&](double v) { return H - b - (v - y0) / (y1 - y0) * (H - t - b); };
        std::ofstream out(path);
        out << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' font-family='sans-serif' font-size='12'>\n"
            << "<rect width='100%' height='100%' fill='white'/>\n<text x='" << W / 2 << "' y='24' text-anchor='middle' font-size='15'>"
            << "masked L1 loss: " << title << "</text>\n";
        for (int i = 0; i <= 4; ++i) {
            const double v = y0 + (y1 - y0) * i / 4, s = x0 + (x1 - x0) * i / 4;
            out << "<line x1='" << l << "' x2='" << W - r << "' y1='" << Y(v) << "' y2='" << Y(v) << "' stroke='#ddd'/>"
                << "<text x='" << l - 6 << "' y='" << Y(v) + 4 << "' text-anchor='end'>" << std::to_string(v).substr(0, 6) << "</text>"
                << "<text x='" << X(s) << "' y='" << H - b + 18 << "' text-anchor='middle'>" << std::llround(s) << "</text>\n";
        }
        out << "<text x='" << (l + W - r) / 2 << "' y='" << H - 12 << "' text-anchor='middle'>step</text>\n<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='";
        for (const auto& row : rows_) out << X(row.at("step").get<double>()) << ',' << Y(row.at("loss").get<double>()) << ' ';
        out << "'/>\n</svg>\n";
        if (!out) throw std::runtime_error("cannot write " + path.string());
    }

private:
    std::filesystem::path path_;
    std::vector<nlohmann::json> rows_;
};

}  // namespace simmim::examples
