// examples/output_lock.hpp: an exclusive lock on a program's output directory, so that two runs never
// write into the same directory (interleaved metrics.jsonl lines, checkpoints, pictures and curves
// overwriting each other).
//
// The lock is a POSIX record lock (fcntl F_SETLK, write lock on the whole file) on the file
// <dir>/.simmim.lock, held by the process for as long as the OutputLock lives. The kernel releases it
// when the process ends, however it ends (SIGKILL included), so a dead run never blocks the next one;
// no marker file is trusted for its mere existence. The file stays behind (removing it would race with
// a run that has just opened it) and holds the pid and program of its last holder, for people. A run
// that finds the lock taken learns the holder's pid from the kernel (F_GETLK) and stops with a usage
// error (exit 2) naming the directory and that process, before any work. The lock needs a filesystem
// with POSIX locks (local filesystems, NFS with lockd); where locking fails, the run stops and says why.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "cli_errors.hpp"

namespace simmim::examples {

/// The lock file's name inside an output directory (a dot file: image folders ignore it).
inline constexpr const char* kOutputLockName = ".simmim.lock";

/// An exclusive lock on an output directory (see the top of this file); move-only, released on destruction.
class OutputLock {
public:
    /// Locks `dir` (created beforehand, e.g. by prepare_output_dir) for `program`. UsageError naming the
    /// directory and the holder's pid when another process holds the lock, or naming the lock file and
    /// the system's reason when it cannot be created or locked.
    static OutputLock acquire(const std::filesystem::path& dir, const std::string& program) {
        const std::filesystem::path path = dir / kOutputLockName;
        const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            throw UsageError("--out " + dir.string() + ": cannot create the lock file " + path.string() + ": " +
                             std::system_category().message(errno));
        OutputLock lock(fd);
        for (int attempt = 0;; ++attempt) {
            struct flock request {};
            request.l_type = F_WRLCK;
            request.l_whence = SEEK_SET;  // l_start = l_len = 0: the whole file
            if (::fcntl(fd, F_SETLK, &request) == 0) break;
            const int error = errno;
            if (error != EACCES && error != EAGAIN)
                throw UsageError("--out " + dir.string() + ": cannot lock " + path.string() + ": " + std::system_category().message(error));
            struct flock holder {};
            holder.l_type = F_WRLCK;
            holder.l_whence = SEEK_SET;
            if (::fcntl(fd, F_GETLK, &holder) == 0 && holder.l_type != F_UNLCK)
                throw UsageError("--out " + dir.string() + " is in use by another run: process " + std::to_string(holder.l_pid) +
                                 describe_holder(fd, holder.l_pid) + " holds its lock " + path.string() +
                                 "; wait for that run to end or choose another --out");
            if (attempt >= 10)  // released between F_SETLK and F_GETLK ten times in a row: someone keeps taking it
                throw UsageError("--out " + dir.string() + " is in use by another run (its lock " + path.string() +
                                 " keeps changing hands); choose another --out");
        }
        // for people (and for the message of a refused run): who holds the lock
        const std::string note = "pid " + std::to_string(::getpid()) + " " + program + "\n";
        if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, note.data(), note.size(), 0) != static_cast<ssize_t>(note.size())) {
            // not fatal: the lock itself is held; the note only names the holder
        }
        return lock;
    }

    OutputLock(OutputLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    OutputLock& operator=(OutputLock&& other) noexcept {
        if (this != &other) {
            release();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    OutputLock(const OutputLock&) = delete;
    OutputLock& operator=(const OutputLock&) = delete;
    ~OutputLock() { release(); }

private:
    explicit OutputLock(int fd) : fd_(fd) {}

    void release() noexcept {
        if (fd_ >= 0) ::close(fd_);  // closing the descriptor drops the lock
        fd_ = -1;
    }

    /// " (simmim_pretrain)" from the note "pid <pid> <program>" when the note is the holder's, else "".
    static std::string describe_holder(int fd, pid_t pid) {
        char text[256] = {};
        const ssize_t n = ::pread(fd, text, sizeof text - 1, 0);
        if (n <= 0) return "";
        std::string note(text, static_cast<std::size_t>(n));
        if (const auto end = note.find('\n'); end != std::string::npos) note.resize(end);
        const std::string prefix = "pid " + std::to_string(pid) + " ";
        if (note.rfind(prefix, 0) != 0 || note.size() == prefix.size()) return "";
        return " (" + note.substr(prefix.size()) + ")";
    }

    int fd_ = -1;
};

}  // namespace simmim::examples
