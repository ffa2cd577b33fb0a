// tests/test_resource_limits.cpp: memory checks before loading (simmim/core/memory.hpp and the loaders
// of data/ and io/), std::bad_alloc turned into the loaders' errors, transactional checkpoint loading,
// and the removal of stale checkpoint temporaries.
//
// Oracles: the bytes a file needs are computed here from its size; the memory a limit leaves is
// set up here (RLIMIT_AS / RLIMIT_DATA in a child process, relative to the child's own /proc/self/status,
// or an injected value); a failed load must leave the state bit-identical to a snapshot taken before.
// Large files are sparse (ftruncate), so they cost no disk space or read time.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "simmim/core/memory.hpp"
#include "simmim/data/cifar.hpp"
#include "simmim/data/idx.hpp"
#include "simmim/data/image_folder.hpp"
#include "simmim/io/checkpoint.hpp"
#include "simmim/io/safetensors.hpp"
#include "simmim/simmim.hpp"
#include "skip.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define SIMMIM_LIMITS_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIMMIM_LIMITS_UNDER_ASAN 1
#endif
#endif
#ifndef SIMMIM_LIMITS_UNDER_ASAN
#define SIMMIM_LIMITS_UNDER_ASAN 0
#endif

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;
using Catch::Matchers::Contains;

struct TempDir {
    fs::path path;
    TempDir() {
        std::random_device device;
        path = fs::temp_directory_path() / ("simmim-test-limits-" + std::to_string(device()) + "-" + std::to_string(device()));
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
};

/// Injects an available-memory value for the scope.
struct InjectedMemory {
    explicit InjectedMemory(std::uint64_t bytes) { simmim::set_available_memory_for_testing(bytes); }
    ~InjectedMemory() { simmim::set_available_memory_for_testing(std::nullopt); }
    InjectedMemory(const InjectedMemory&) = delete;
    InjectedMemory& operator=(const InjectedMemory&) = delete;
};

void write_file(const fs::path& path, const Bytes& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(out.good());
}

/// `head` followed by zeros up to `size` bytes, the zeros as a hole (no disk blocks).
void write_sparse(const fs::path& path, const Bytes& head, std::uint64_t size) {
    write_file(path, head);
    fs::resize_file(path, size);
}

void put_be32(Bytes& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}

/// An IDX image header for n images of rows x cols.
Bytes idx_header(std::uint32_t n, std::uint32_t rows, std::uint32_t cols) {
    Bytes out;
    for (const std::uint32_t v : {0x803u, n, rows, cols}) put_be32(out, v);
    return out;
}

/// A safetensors header declaring one U8 tensor of `bytes` bytes (the file must then hold them).
Bytes safetensors_header(std::uint64_t bytes) {
    std::string json = R"({"big":{"dtype":"U8","shape":[)" + std::to_string(bytes) + R"(],"data_offsets":[0,)" + std::to_string(bytes) + "]}}";
    json.append((8 - json.size() % 8) % 8, ' ');
    Bytes out(8 + json.size());
    for (int i = 0; i < 8; ++i) out[std::size_t(i)] = static_cast<std::uint8_t>(json.size() >> (8 * i));
    std::memcpy(out.data() + 8, json.data(), json.size());
    return out;
}

template <class Error, class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    } catch (const std::exception& e) {
        FAIL("expected another exception type, got: " << e.what());
    }
    FAIL("expected an exception");
    return {};
}

/// Runs `body` in a child process after `setup` (limits); returns the child's exit code, or 128 +
/// signal. The body's own codes: whatever it _exits with; an escaping std::bad_alloc is 3, any other
/// exception 4.
[[maybe_unused]] int in_child(const std::function<void()>& setup, const std::function<int()>& body) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        int code = 0;
        try {
            setup();
            code = body();
        } catch (const std::bad_alloc&) {
            code = 3;
        } catch (...) {
            code = 4;
        }
        ::_exit(code);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

[[maybe_unused]] std::uint64_t status_kb(const char* key) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(std::string(key) + ":", 0) == 0) return std::stoull(line.substr(std::strlen(key) + 1)) * 1024;
    return 0;
}

[[maybe_unused]] void set_limit(int resource, std::uint64_t bytes) {
    const rlimit limit{bytes, bytes};
    REQUIRE(::setrlimit(resource, &limit) == 0);
}

}  // namespace

TEST_CASE("available_memory: MemAvailable without limits; an injected value wins", "[limits]") {
    const simmim::MemoryAvailable available = simmim::available_memory();
    // Oracle: /proc/meminfo read here. Without RLIMIT_AS / RLIMIT_DATA the smallest is MemAvailable,
    // which moves a little between the two reads.
    std::ifstream meminfo("/proc/meminfo");
    std::string key;
    std::uint64_t kb = 0;
    std::string unit;
    while (meminfo >> key >> kb >> unit)
        if (key == "MemAvailable:") break;
    rlimit as{}, data{};
    ::getrlimit(RLIMIT_AS, &as);
    ::getrlimit(RLIMIT_DATA, &data);
    const auto cgroup = simmim::cgroup_memory_available();  // a container's limit may be smaller (tested below)
    if (as.rlim_cur == RLIM_INFINITY && data.rlim_cur == RLIM_INFINITY && (!cgroup || double(cgroup->bytes) > 1.5 * double(kb) * 1024)) {
        CHECK(available.limited_by == "MemAvailable");
        CHECK(std::abs(double(available.bytes) - double(kb) * 1024) < 0.2 * double(kb) * 1024);
    }
    {
        InjectedMemory injected(12345);
        CHECK(simmim::available_memory().bytes == 12345);
        CHECK(simmim::available_memory().limited_by == "injected for testing");
        CHECK(simmim::memory_shortfall("x", 12345) == std::nullopt);
        CHECK_THAT(simmim::memory_shortfall("x", 12346).value_or(""),
                   Contains("x: needs 12346 bytes (12.06 KiB) of memory, but only 12345 bytes (12.06 KiB) are available"));
    }
    CHECK(simmim::available_memory().limited_by != "injected for testing");
}

namespace {

/// A fake file tree for the cgroup lookup (cgroup_memory_available(root)): files written below `root`.
struct FakeCgroupTree {
    TempDir dir;
    void file(const std::string& relative, const std::string& text) const {
        const fs::path path = dir.path / relative;
        fs::create_directories(path.parent_path());
        std::ofstream(path) << text;
    }
    std::string limit_file(const std::string& relative) const { return (dir.path / relative).string(); }
};

/// Points available_memory()'s cgroup lookup at a fake tree for the scope.
struct InjectedCgroupRoot {
    explicit InjectedCgroupRoot(const fs::path& root) { simmim::set_cgroup_root_for_testing(root); }
    ~InjectedCgroupRoot() { simmim::set_cgroup_root_for_testing(std::nullopt); }
    InjectedCgroupRoot(const InjectedCgroupRoot&) = delete;
    InjectedCgroupRoot& operator=(const InjectedCgroupRoot&) = delete;
};

}  // namespace

TEST_CASE("cgroup_memory_available: v2 memory.max minus memory.current (less inactive page cache), the smallest over the ancestors", "[limits][cgroup]") {
    FakeCgroupTree tree;
    const fs::path& root = tree.dir.path;
    tree.file("proc/self/cgroup", "0::/user.slice/job.scope\n");
    const std::string job = "sys/fs/cgroup/user.slice/job.scope/", slice = "sys/fs/cgroup/user.slice/";
    tree.file(job + "memory.max", "1073741824\n");  // 1 GiB
    tree.file(job + "memory.current", "536870912\n");  // 512 MiB, of which 100 MB inactive page cache
    tree.file(job + "memory.stat", "anon 400000000\nfile 136870912\nactive_file 36870912\ninactive_file 100000000\n");
    tree.file(slice + "memory.max", "max\n");
    tree.file(slice + "memory.current", "900000000\n");
    SECTION("the process's own cgroup") {
        const auto available = simmim::cgroup_memory_available(root);
        REQUIRE(available);
        CHECK(available->bytes == 1073741824u - (536870912u - 100000000u));
        CHECK(available->limited_by == "cgroup v2 " + tree.limit_file(job + "memory.max"));
    }
    SECTION("an ancestor with less headroom wins") {
        tree.file(slice + "memory.max", "1000000000\n");  // 1e9 - 9e8 = 1e8 < 636870912
        const auto available = simmim::cgroup_memory_available(root);
        REQUIRE(available);
        CHECK(available->bytes == 100000000u);
        CHECK(available->limited_by == "cgroup v2 " + tree.limit_file(slice + "memory.max"));
    }
    SECTION("usage above the limit leaves nothing") {
        tree.file(job + "memory.current", "2000000000\n");
        tree.file(job + "memory.stat", "inactive_file 0\n");
        REQUIRE(simmim::cgroup_memory_available(root));
        CHECK(simmim::cgroup_memory_available(root)->bytes == 0);
    }
    SECTION("'max', malformed and absent files mean no limit") {
        tree.file(job + "memory.max", "max\n");
        CHECK_FALSE(simmim::cgroup_memory_available(root));
        tree.file(job + "memory.max", "12abc\n");
        CHECK_FALSE(simmim::cgroup_memory_available(root));
        tree.file(job + "memory.max", "");
        CHECK_FALSE(simmim::cgroup_memory_available(root));
        fs::remove(root / (job + "memory.max"));
        CHECK_FALSE(simmim::cgroup_memory_available(root));
        fs::remove(root / "proc/self/cgroup");
        CHECK_FALSE(simmim::cgroup_memory_available(root));
    }
    SECTION("a container that sees its own cgroup at the mount's root") {
        tree.file("proc/self/cgroup", "0::/\n");
        tree.file("sys/fs/cgroup/memory.max", "2147483648\n");
        tree.file("sys/fs/cgroup/memory.current", "1073741824\n");
        const auto available = simmim::cgroup_memory_available(root);
        REQUIRE(available);
        CHECK(available->bytes == 1073741824u);
        // a path that does not exist below the mount (no cgroup namespace): the mount's root is read
        tree.file("proc/self/cgroup", "0::/system.slice/docker-0123.scope\n");
        REQUIRE(simmim::cgroup_memory_available(root));
        CHECK(simmim::cgroup_memory_available(root)->limited_by == "cgroup v2 " + tree.limit_file("sys/fs/cgroup/memory.max"));
    }
}

TEST_CASE("cgroup_memory_available: v1 memory.limit_in_bytes minus memory.usage_in_bytes", "[limits][cgroup]") {
    FakeCgroupTree tree;
    const fs::path& root = tree.dir.path;
    tree.file("proc/self/cgroup", "9:name=systemd:/\n5:cpu,memory:/batch/job7\n1:cpuset:/\n0::/\n");
    const std::string job = "sys/fs/cgroup/memory/batch/job7/";
    tree.file(job + "memory.limit_in_bytes", "268435456\n");  // 256 MiB
    tree.file(job + "memory.usage_in_bytes", "134217728\n");
    tree.file(job + "memory.stat", "cache 50000000\ninactive_file 1000\ntotal_inactive_file 33554432\n");
    tree.file("sys/fs/cgroup/memory/batch/memory.limit_in_bytes", "9223372036854771712\n");  // v1's "no limit"
    tree.file("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
    const auto available = simmim::cgroup_memory_available(root);
    REQUIRE(available);
    CHECK(available->bytes == 268435456u - (134217728u - 33554432u));
    CHECK(available->limited_by == "cgroup v1 " + tree.limit_file(job + "memory.limit_in_bytes"));
    tree.file(job + "memory.limit_in_bytes", "9223372036854771712\n");
    CHECK_FALSE(simmim::cgroup_memory_available(root));
}

TEST_CASE("available_memory counts a cgroup limit: a loader refuses a file past it, naming the cgroup file", "[limits][cgroup]") {
    FakeCgroupTree tree;
    tree.file("proc/self/cgroup", "0::/job\n");
    tree.file("sys/fs/cgroup/job/memory.max", std::to_string(std::uint64_t(96) << 20) + "\n");  // 96 MiB
    tree.file("sys/fs/cgroup/job/memory.current", std::to_string(std::uint64_t(32) << 20) + "\n");  // 64 MiB left
    TempDir dir;
    const fs::path path = dir.path / "images-idx3-ubyte";
    write_sparse(path, idx_header(100, 1024, 1024), 16 + std::uint64_t(100) * 1024 * 1024);  // 100 MiB
    const std::string limit = "cgroup v2 " + tree.limit_file("sys/fs/cgroup/job/memory.max");
    {
        const InjectedCgroupRoot injected(tree.dir.path);
        const simmim::MemoryAvailable available = simmim::available_memory();
        CHECK(available.bytes == std::uint64_t(64) << 20);
        CHECK(available.limited_by == limit);
        const std::string m = error_of<simmim::data::DataError>([&] { simmim::data::IdxDataset ds(path); });
        CHECK_THAT(m, Contains(path.string()) && Contains("needs " + std::to_string(16 + std::uint64_t(100) * 1024 * 1024) + " bytes") &&
                          Contains("limited by " + limit));
    }
    CHECK(simmim::available_memory().limited_by != limit);
}

#if !SIMMIM_LIMITS_UNDER_ASAN  // AddressSanitizer reserves terabytes of address space: no RLIMIT_AS there
TEST_CASE("available_memory: RLIMIT_AS and RLIMIT_DATA leave the limit minus what is mapped", "[limits]") {
    const std::uint64_t headroom = std::uint64_t(300) << 20;
    // Checked in the child against its own VmSize / VmData read just before the limit is set: the
    // result may differ only by what the check itself maps (a few MiB at most).
    const auto near = [&](std::uint64_t value) { return value <= headroom && value + (std::uint64_t(32) << 20) >= headroom; };
    CHECK(in_child([&] { set_limit(RLIMIT_AS, status_kb("VmSize") + headroom); },
                   [&] {
                       const auto a = simmim::available_memory();
                       return a.limited_by == "RLIMIT_AS" && near(a.bytes) ? 0 : 1;
                   }) == 0);
    CHECK(in_child([&] { set_limit(RLIMIT_DATA, status_kb("VmData") + headroom); },
                   [&] {
                       const auto a = simmim::available_memory();
                       return a.limited_by == "RLIMIT_DATA" && near(a.bytes) ? 0 : 1;
                   }) == 0);
}

TEST_CASE("an IDX file larger than RLIMIT_AS allows is refused before reading, naming file, need and limit", "[limits]") {
    TempDir dir;
    const fs::path path = dir.path / "big-images-idx3-ubyte";
    const std::uint32_t n = 3 * 1024, side = 1024;  // 3 GiB of pixels, sparse
    const std::uint64_t size = 16 + std::uint64_t(n) * side * side;
    write_sparse(path, idx_header(n, side, side), size);
    const auto expect = [&](const std::string& message) {
        return message.find(path.string()) != std::string::npos && message.find("needs " + std::to_string(size) + " bytes") != std::string::npos &&
               message.find("RLIMIT_AS") != std::string::npos;
    };
    CHECK(in_child([&] { set_limit(RLIMIT_AS, status_kb("VmSize") + (std::uint64_t(1) << 30)); },
                   [&] {
                       try {
                           simmim::data::IdxDataset ds(path);
                       } catch (const simmim::data::DataError& e) {
                           return expect(e.what()) ? 0 : 1;
                       }
                       return 2;
                   }) == 0);
}

TEST_CASE("std::bad_alloc while loading becomes a DataError / SafetensorsError naming the file", "[limits]") {
    // The pre-check is told there is plenty (injected) while RLIMIT_AS makes the allocation fail.
    TempDir dir;
    const fs::path idx = dir.path / "big-images-idx3-ubyte", st = dir.path / "big.safetensors";
    write_sparse(idx, idx_header(3 * 1024, 1024, 1024), 16 + (std::uint64_t(3) << 30));
    const Bytes header = safetensors_header(std::uint64_t(3) << 30);
    write_sparse(st, header, header.size() + (std::uint64_t(3) << 30));
    const auto limited = [&] {
        simmim::set_available_memory_for_testing(std::uint64_t(1) << 50);
        set_limit(RLIMIT_AS, status_kb("VmSize") + (std::uint64_t(1) << 30));
    };
    CHECK(in_child(limited, [&] {
              try {
                  simmim::data::IdxDataset ds(idx);
              } catch (const simmim::data::DataError& e) {
                  const std::string m = e.what();
                  return m.find(idx.string()) != std::string::npos && m.find("out of memory") != std::string::npos ? 0 : 1;
              }
              return 2;
          }) == 0);
    CHECK(in_child(limited, [&] {
              try {
                  (void)simmim::io::read_safetensors(st);
              } catch (const simmim::io::SafetensorsError& e) {
                  const std::string m = e.what();
                  return m.find(st.string()) != std::string::npos && m.find("out of memory") != std::string::npos ? 0 : 1;
              }
              return 2;
          }) == 0);
}
#endif

TEST_CASE("a safetensors header declaring 10^12 bytes is refused before reading, naming file, need and availability", "[limits]") {
    TempDir dir;
    const fs::path path = dir.path / "huge.safetensors";
    const std::uint64_t data = 1'000'000'000'000;
    const Bytes header = safetensors_header(data);
    write_sparse(path, header, header.size() + data);
    const std::uint64_t needed = 2 * (header.size() + data);  // the file's bytes and the parsed copy
    const simmim::MemoryAvailable available = simmim::available_memory();
    if (available.bytes >= needed) {
        SIMMIM_SKIP("this machine could hold 2 TB (" << available.bytes << " bytes available, limited by " << available.limited_by << ")");
    }
    const std::string message = error_of<simmim::io::SafetensorsError>([&] { (void)simmim::io::read_safetensors(path); });
    CHECK_THAT(message, Contains(path.string()) && Contains("needs " + std::to_string(needed) + " bytes") && Contains("available") &&
                            Contains(available.limited_by));
    // the checkpoint loader reads through the same function
    constexpr simmim::ViTConfig cfg{8, 1, 4, 8, 1, 2, 4};
    constexpr simmim::MaskSpec cfgMask{4, 0.5};
    simmim::ViTSimMIM<float, cfg> model(simmim::random_mask_patch<cfg, cfgMask>(), 0);
    simmim::AdamW<float> opt(model.params());
    CHECK_THAT(error_of<simmim::io::SafetensorsError>([&] { (void)simmim::io::load_checkpoint(path, model.params(), opt); }),
               Contains(path.string()) && Contains("needs"));
}

TEST_CASE("dataset loaders compare what a file needs with the memory available (injected)", "[limits]") {
    TempDir dir;
    SECTION("IDX, plain: the file's size") {
        const fs::path path = dir.path / "images-idx3-ubyte";
        Bytes file = idx_header(100, 28, 28);
        file.resize(16 + 100 * 28 * 28, 7);
        write_file(path, file);
        {
            InjectedMemory injected(file.size() - 1);
            const std::string m = error_of<simmim::data::DataError>([&] { simmim::data::IdxDataset ds(path); });
            CHECK_THAT(m, Contains(path.string()) && Contains("needs " + std::to_string(file.size()) + " bytes") &&
                              Contains("only " + std::to_string(file.size() - 1) + " bytes"));
        }
        InjectedMemory enough(file.size());
        CHECK(simmim::data::IdxDataset(path).size() == 100);
    }
    SECTION("IDX, gzip: the file and what its trailer says it inflates to") {
        const fs::path path = dir.path / "images-idx3-ubyte.gz";
        Bytes raw = idx_header(100, 28, 28);
        raw.resize(16 + 100 * 28 * 28, 9);
        uLongf size = compressBound(static_cast<uLong>(raw.size())) + 32;
        Bytes gz(size);
        z_stream zs{};
        REQUIRE(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
        zs.next_in = raw.data();
        zs.avail_in = static_cast<uInt>(raw.size());
        zs.next_out = gz.data();
        zs.avail_out = static_cast<uInt>(gz.size());
        REQUIRE(deflate(&zs, Z_FINISH) == Z_STREAM_END);
        gz.resize(zs.total_out);
        deflateEnd(&zs);
        write_file(path, gz);
        InjectedMemory injected(gz.size() + raw.size() - 1);
        CHECK_THAT(error_of<simmim::data::DataError>([&] { simmim::data::IdxDataset ds(path); }),
                   Contains(path.string()) && Contains("gzip") && Contains("needs " + std::to_string(gz.size() + raw.size()) + " bytes"));
    }
    SECTION("CIFAR: the file and its decoded records") {
        Bytes file(2 * 3073, 1);
        write_file(dir.path / "test_batch.bin", file);
        const std::uint64_t needed = file.size() + 2 * (3072 + sizeof(int));
        {
            InjectedMemory injected(needed - 1);
            CHECK_THAT(error_of<simmim::data::DataError>([&] { simmim::data::CifarDataset ds(dir.path, false); }),
                       Contains((dir.path / "test_batch.bin").string()) && Contains("needs " + std::to_string(needed) + " bytes"));
        }
        InjectedMemory enough(needed);
        CHECK(simmim::data::CifarDataset(dir.path, false).size() == 2);
    }
    SECTION("an image file") {
        const fs::path path = dir.path / "c" / "big.png";
        fs::create_directories(path.parent_path());
        write_sparse(path, {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A}, 5'000'000);
        simmim::data::ImageFolderDataset ds(dir.path);
        InjectedMemory injected(1'000'000);
        CHECK_THAT(error_of<simmim::data::DataError>([&] { (void)ds.get(0); }), Contains(path.string()) && Contains("needs 5000000 bytes"));
    }
}

namespace {

constexpr simmim::ViTConfig kCkptCfg{16, 1, 4, 16, 2, 2, 2};
constexpr simmim::MaskSpec kCkptCfgMask{8, 0.5};
using CkptModel = simmim::ViTSimMIM<float, kCkptCfg>;

struct TrainState {
    CkptModel model{simmim::random_mask_patch<kCkptCfg, kCkptCfgMask>(), 5};
    simmim::AdamW<float> opt{model.params()};
    void step(std::int64_t s) {
        std::vector<float> images(2 * kCkptCfg.image_numel()), mask(2 * kCkptCfg.num_patches());
        simmim::Rng rng(static_cast<std::uint64_t>(s) + 17);
        for (auto& x : images) x = float(rng.normal());
        model.draw_mask(3, s, 2, mask.data());
        model.zero_grad();
        model.forward(images.data(), mask.data(), 2);
        model.backward();
        opt.step(1e-3);
    }
};

struct Snapshot {
    std::vector<float> values, m, v;
    std::int64_t steps;
    explicit Snapshot(TrainState& s)
        : values(s.model.params().values(), s.model.params().values() + s.model.params().size()),
          m(s.opt.exp_avg().begin(), s.opt.exp_avg().end()),
          v(s.opt.exp_avg_sq().begin(), s.opt.exp_avg_sq().end()),
          steps(s.opt.steps()) {}
    bool operator==(const Snapshot& o) const {
        const auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
            return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
        };
        return same(values, o.values) && same(m, o.m) && same(v, o.v) && steps == o.steps;
    }
};

/// `file` without the tensor `drop`.
simmim::io::TensorFile without(const simmim::io::TensorFile& file, const std::string& drop) {
    simmim::io::TensorFile out;
    for (const auto& n : file.names())
        if (n != drop) out.set(n, file.at(n));
    out.metadata = file.metadata;
    return out;
}

}  // namespace

TEST_CASE("load_checkpoint is transactional: a file that fails any check leaves model and optimizer untouched", "[limits][checkpoint]") {
    TempDir dir;
    TrainState trained;
    for (int s = 0; s < 3; ++s) trained.step(s);
    const fs::path good = dir.path / "good.safetensors";
    simmim::io::save_checkpoint(good, trained.model.params(), trained.opt, {{"step", "3"}});
    const simmim::io::TensorFile file = simmim::io::read_safetensors(good);
    const auto& params = trained.model.params().params();
    const std::string last = params.back().name, first = params.front().name;

    TrainState target;
    target.step(0);  // a state different from the file's
    const Snapshot before(target);
    REQUIRE_FALSE(before == Snapshot(trained));

    struct Case {
        const char* what;
        std::function<simmim::io::TensorFile()> make;
        const char* message;
    };
    const auto with_tensor = [&](const std::string& name, simmim::io::TensorData t) {
        simmim::io::TensorFile f = file;
        f.set(name, std::move(t));
        return f;
    };
    const auto with_value = [&](const std::string& name, float value) {
        simmim::io::TensorData t = file.at(name);
        std::memcpy(t.bytes.data() + 4, &value, sizeof value);  // element 1
        return with_tensor(name, std::move(t));
    };
    const std::vector<Case> cases{
        {"the last exp_avg_sq has the wrong shape", [&] {
             const std::vector<float> one{1.f};
             return with_tensor("optimizer.exp_avg_sq." + last, simmim::io::TensorData::from<float>(one, {1}));
         }, "optimizer.exp_avg_sq."},
        {"an exp_avg is missing", [&] { return without(file, "optimizer.exp_avg." + last); }, "missing optimizer tensor"},
        {"an exp_avg is I32", [&] {
             const auto& p = params.back();
             const std::vector<std::int32_t> ints(p.size, 0);
             return with_tensor("optimizer.exp_avg." + last, simmim::io::TensorData::from<std::int32_t>(ints, p.shape));
         }, "floating-point dtype"},
        {"optimizer_steps is negative", [&] {
             simmim::io::TensorFile f = file;
             f.metadata["optimizer_steps"] = "-1";
             return f;
         }, "optimizer_steps"},
        {"an exp_avg_sq value is negative", [&] { return with_value("optimizer.exp_avg_sq." + last, -1.f); }, "non-negative"},
        {"an exp_avg value is NaN", [&] { return with_value("optimizer.exp_avg." + first, std::nanf("")); }, "finite"},
        {"a parameter value is infinite", [&] { return with_value(last, INFINITY); }, "finite"},
        {"an unexpected optimizer tensor", [&] {
             const std::vector<float> one{1.f};
             return with_tensor("optimizer.exp_avg.not_a_parameter", simmim::io::TensorData::from<float>(one, {1}));
         }, "unexpected tensor"},
        {"a parameter is missing", [&] { return without(file, last); }, "missing tensor"},
    };
    for (const Case& c : cases) {
        INFO(c.what);
        const fs::path bad = dir.path / "bad.safetensors";
        simmim::io::write_safetensors(bad, c.make());
        const std::string m = error_of<simmim::io::SafetensorsError>([&] { simmim::io::load_checkpoint(bad, target.model.params(), target.opt); });
        CHECK_THAT(m, Contains(bad.string()) && Contains(c.message));
        CHECK(Snapshot(target) == before);
    }
    // and the good file loads completely
    simmim::io::load_checkpoint(good, target.model.params(), target.opt);
    CHECK(Snapshot(target) == Snapshot(trained));
}

TEST_CASE("remove_stale_temporaries removes the temporaries of processes that no longer run, and only those", "[limits][checkpoint]") {
    TempDir dir;
    const fs::path target = dir.path / "checkpoint.safetensors";
    const auto touch = [&](const std::string& suffix) {
        const fs::path p = dir.path / ("checkpoint.safetensors" + suffix);
        write_file(p, {1, 2, 3});
        return p;
    };
    const pid_t child = ::fork();  // a process that exited and was reaped: its pid is free
    if (child == 0) ::_exit(0);
    int status = 0;
    ::waitpid(child, &status, 0);
    const fs::path dead = touch(".tmp." + std::to_string(child));
    const fs::path never = touch(".tmp.99999999");  // above any pid_max: no such process
    const fs::path mine = touch(".tmp." + std::to_string(::getpid()));
    const fs::path not_a_pid = touch(".tmp.12ab");
    const fs::path other_file = dir.path / "other.safetensors.tmp.99999999";
    write_file(other_file, {1});
    write_file(target, {9});
    std::vector<fs::path> removed = simmim::io::remove_stale_temporaries(target);
    std::sort(removed.begin(), removed.end());
    std::vector<fs::path> expected{dead, never};
    std::sort(expected.begin(), expected.end());
    if (::kill(child, 0) == 0) expected.erase(std::find(expected.begin(), expected.end(), dead));  // pid reused meanwhile
    CHECK(removed == expected);
    for (const auto& p : expected) CHECK_FALSE(fs::exists(p));
    for (const auto& p : {mine, not_a_pid, other_file, target}) CHECK(fs::exists(p));
}
