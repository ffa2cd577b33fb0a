// simmim/core/memory.hpp: how much memory this process can still get, so that loaders can refuse a
// file that would not fit with a clear message instead of dying in an allocation.
//
// available_memory() is the smallest of
//   MemAvailable          (/proc/meminfo: free memory plus what the kernel can reclaim; swap is not counted)
//   RLIMIT_AS   - VmSize  (address-space limit minus the address space already mapped), when the limit is set
//   RLIMIT_DATA - VmData  (data-segment limit minus the private writable memory already mapped), when set
//   the cgroup headroom   (a container's or service's memory limit; see cgroup_memory_available()), when set
// read afresh at each call (Linux; elsewhere nothing is known and every request passes). It is an
// estimate taken before an allocation: loaders still catch std::bad_alloc and report it the same way.
// (Past a cgroup limit the kernel's OOM killer ends the process, so there is no bad_alloc to catch:
// the cgroup headroom is what turns that into an error message.)
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

namespace simmim {

/// What the process can still allocate, and which limit says so.
struct MemoryAvailable {
    std::uint64_t bytes = std::numeric_limits<std::uint64_t>::max();  // max(): no limit known
    std::string limited_by;  // "MemAvailable", "RLIMIT_AS", "RLIMIT_DATA", "cgroup v2 <dir>/memory.max",
                             // "cgroup v1 <dir>/memory.limit_in_bytes", "injected for testing", or "" (none known)
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

/// The first line of a cgroup interface file as a byte count: nullopt when the file is absent, malformed,
/// "max" (no limit) or a cgroup v1 "no limit" (2^63 rounded down to a page, or anything from 2^62 up).
inline std::optional<std::uint64_t> cgroup_bytes(const std::filesystem::path& file) {
    std::ifstream in(file);
    std::string word;
    if (!(in >> word) || word.empty() || word.find_first_not_of("0123456789") != std::string::npos || word.size() > 19) return std::nullopt;
    const std::uint64_t value = std::stoull(word);
    if (value >= (std::uint64_t(1) << 62)) return std::nullopt;
    return value;
}

/// The value of "<key> <n>" in a memory.stat file, or 0.
inline std::uint64_t cgroup_stat(const std::filesystem::path& file, const char* key) {
    std::ifstream in(file);
    std::string name;
    std::uint64_t value = 0;
    while (in >> name >> value)
        if (name == key) return value;
    return 0;
}

inline std::mutex& cgroup_root_mutex() {
    static std::mutex mutex;
    return mutex;
}

inline std::filesystem::path& cgroup_root_for_testing() {
    static std::filesystem::path root;  // empty: "/"
    return root;
}

}  // namespace detail

/// The memory the cgroups of this process still allow it, and which limit says so (limited_by "cgroup v2
/// <dir>/memory.max" or "cgroup v1 <dir>/memory.limit_in_bytes"), or nullopt when no cgroup limits it.
/// The cgroups are those named in <root>/proc/self/cgroup: the unified (v2) one, line "0::<path>", below
/// <root>/sys/fs/cgroup, and the v1 memory controller's, line "<n>:...memory...:<path>", below
/// <root>/sys/fs/cgroup/memory. When <path> does not exist below the mount (a container that sees its own
/// cgroup at the mount's root), the mount's root is read. That cgroup and each ancestor up to the mount
/// count, since every level's limit applies: the headroom of one is its limit (memory.max, or v1
/// memory.limit_in_bytes) minus its usage (memory.current, or memory.usage_in_bytes) not counting the
/// inactive page cache the kernel reclaims first (memory.stat inactive_file, or v1 total_inactive_file);
/// the smallest headroom wins. "max", v1's "no limit" value and absent or malformed files mean no limit.
/// `root` is "/" for the system; tests point it at a fake tree. Linux only; elsewhere nullopt.
inline std::optional<MemoryAvailable> cgroup_memory_available(const std::filesystem::path& root = "/") {
    namespace fs = std::filesystem;
    std::optional<MemoryAvailable> best;
    std::ifstream in(root / "proc/self/cgroup");
    std::string line;
    while (std::getline(in, line)) {
        const auto first = line.find(':');
        const auto second = first == std::string::npos ? std::string::npos : line.find(':', first + 1);
        if (second == std::string::npos) continue;
        const std::string controllers = line.substr(first + 1, second - first - 1);
        const fs::path path = fs::path(line.substr(second + 1)).relative_path();
        bool v1_memory = false;
        std::stringstream list(controllers);
        for (std::string controller; std::getline(list, controller, ',');) v1_memory = v1_memory || controller == "memory";
        const bool v2 = line.compare(0, first, "0") == 0 && controllers.empty();
        if (!v2 && !v1_memory) continue;
        const fs::path mount = v2 ? root / "sys/fs/cgroup" : root / "sys/fs/cgroup/memory";
        const char* limit_file = v2 ? "memory.max" : "memory.limit_in_bytes";
        const char* usage_file = v2 ? "memory.current" : "memory.usage_in_bytes";
        const char* inactive_key = v2 ? "inactive_file" : "total_inactive_file";
        std::error_code ec;
        fs::path relative = fs::is_directory(mount / path, ec) ? path : fs::path();
        for (;;) {
            const fs::path dir = relative.empty() ? mount : mount / relative;
            if (const auto limit = detail::cgroup_bytes(dir / limit_file)) {
                const std::uint64_t usage = detail::cgroup_bytes(dir / usage_file).value_or(0);
                const std::uint64_t inactive = std::min(usage, detail::cgroup_stat(dir / "memory.stat", inactive_key));
                const std::uint64_t used = usage - inactive;
                const std::uint64_t headroom = *limit > used ? *limit - used : 0;
                if (!best || headroom < best->bytes)
                    best = MemoryAvailable{headroom, std::string(v2 ? "cgroup v2 " : "cgroup v1 ") + (dir / limit_file).string()};
            }
            if (relative.empty()) break;
            relative = relative.parent_path();
            if (relative == relative.root_path()) relative.clear();
        }
    }
    return best;
}

/// Tests only: makes available_memory() look for cgroup files below `root` instead of "/" (a fake tree,
/// see cgroup_memory_available()) until called with nullopt. Process-wide.
inline void set_cgroup_root_for_testing(std::optional<std::filesystem::path> root) {
    const std::lock_guard<std::mutex> lock(detail::cgroup_root_mutex());
    detail::cgroup_root_for_testing() = root ? *root : std::filesystem::path();
}

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
    std::filesystem::path cgroup_root = "/";
    {
        const std::lock_guard<std::mutex> lock(detail::cgroup_root_mutex());
        if (!detail::cgroup_root_for_testing().empty()) cgroup_root = detail::cgroup_root_for_testing();
    }
    if (const auto cgroup = cgroup_memory_available(cgroup_root)) {
        if (cgroup->bytes < result.bytes) result = *cgroup;
    }
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
