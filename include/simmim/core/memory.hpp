// simmim/core/memory.hpp: how much memory this process can still get, so that loaders can refuse a
// file that would not fit with a clear message instead of dying in an allocation.
//
// available_memory() is the smallest of
//   MemAvailable          (/proc/meminfo: free memory plus what the kernel can reclaim; swap is not counted)
//   RLIMIT_AS   - VmSize  (address-space limit minus the address space already mapped), when the limit is set
//   RLIMIT_DATA - VmData  (data-segment limit minus the private writable memory already mapped), when set
// read afresh at each call (Linux; elsewhere nothing is known and every request passes). It is an
// estimate taken before an allocation: loaders still catch std::bad_alloc and report it the same way.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <string>

namespace simmim {

/// What the process can still allocate, and which limit says so.
struct MemoryAvailable {
    std::uint64_t bytes = std::numeric_limits<std::uint64_t>::max();  // max(): no limit known
    std::string limited_by;  // "MemAvailable", "RLIMIT_AS", "RLIMIT_DATA", "injected for testing", or "" (none known)
};

namespace detail {

inline std::atomic<std::uint64_t>& injected_available_memory() {
    static std::atomic<std::uint64_t> value{0};  // 0: not injected
    return value;
}

/// The value in kB of the line "<key>: <n> kB" of a /proc file, in bytes; nullopt if absent.
inline std::optional<std::uint64_t> proc_kb_field(const char* file, const char* key) {
    std::ifstream in(file);
    std::string line;
    const std::size_t key_length = std::strlen(key);
    while (std::getline(in, line)) {
        if (line.compare(0, key_length, key) != 0 || line.size() <= key_length || line[key_length] != ':') continue;
        std::uint64_t kb = 0;
        if (std::sscanf(line.c_str() + key_length + 1, "%" SCNu64, &kb) != 1) return std::nullopt;
        return kb * 1024;
    }
    return std::nullopt;
}

}  // namespace detail

/// Tests only: makes available_memory() report `bytes` (limited_by "injected for testing") until
/// called with nullopt. Process-wide.
inline void set_available_memory_for_testing(std::optional<std::uint64_t> bytes) {
    detail::injected_available_memory().store(bytes ? std::max<std::uint64_t>(*bytes, 1) : 0);
}

/// The memory this process can still allocate (see the top of this header). Thread-safe.
inline MemoryAvailable available_memory() {
    MemoryAvailable result;
    if (const std::uint64_t injected = detail::injected_available_memory().load(); injected != 0) {
        result.bytes = injected;
        result.limited_by = "injected for testing";
        return result;
    }
    const auto consider = [&](std::uint64_t bytes, const char* what) {
        if (bytes < result.bytes) {
            result.bytes = bytes;
            result.limited_by = what;
        }
    };
    if (const auto mem = detail::proc_kb_field("/proc/meminfo", "MemAvailable")) consider(*mem, "MemAvailable");
    const auto limit_headroom = [&](int resource, const char* status_key, const char* what) {
        rlimit limit{};
        if (::getrlimit(resource, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return;
        const std::uint64_t used = detail::proc_kb_field("/proc/self/status", status_key).value_or(0);
        const auto cap = static_cast<std::uint64_t>(limit.rlim_cur);
        consider(cap > used ? cap - used : 0, what);
    };
    limit_headroom(RLIMIT_AS, "VmSize", "RLIMIT_AS");
    limit_headroom(RLIMIT_DATA, "VmData", "RLIMIT_DATA");
    return result;
}

/// "1536 bytes (1.50 KiB)" style: the exact count, and a rounded binary unit above 1 KiB.
inline std::string format_bytes(std::uint64_t bytes) {
    std::string text = std::to_string(bytes) + " bytes";
    if (bytes < 1024) return text;
    static const char* const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    double value = static_cast<double>(bytes) / 1024.0;
    int unit = 0;
    while (value >= 1024.0 && unit < 5) {
        value /= 1024.0;
        ++unit;
    }
    char rounded[32];
    std::snprintf(rounded, sizeof rounded, " (%.2f %s)", value, units[unit]);
    return text + rounded;
}

/// The message "<what>: needs <n> bytes of memory, but only <m> bytes are available (limited by
/// <limit>)" when `needed` exceeds what available_memory() reports, else nullopt.
inline std::optional<std::string> memory_shortfall(const std::string& what, std::uint64_t needed) {
    const MemoryAvailable available = available_memory();
    if (needed <= available.bytes) return std::nullopt;
    return what + ": needs " + format_bytes(needed) + " of memory, but only " + format_bytes(available.bytes) +
           " are available (limited by " + available.limited_by + ")";
}

}  // namespace simmim
