// examples/distributed.hpp: what simmim_pretrain needs of a data-parallel run (docs/distributed.md):
// the ranks of an MPI job (built with SIMMIM_WITH_MPI, simmim/dist/mpi.hpp, and started by mpirun or srun)
// or the single process of any other run, behind one interface, so that the training loop reads the same
// either way and a single process does exactly what it did before (no MPI call, weight 1, the same bits).
//
// Error policy of a run with several ranks (on top of cli_errors.hpp):
//   - what every rank meets alike (a bad option, a usage error found by a check) is printed once, by rank 0:
//     the other ranks turn off run_main's printing (report_errors()) and exit with the same code;
//   - the set-up steps that only one rank does or that can differ between machines (the output directory
//     and its lock, the data, the checkpoint) run inside agree(), which makes every rank throw the error of
//     the lowest failing rank, so they all stop together;
//   - an error of one rank inside the training loop (a damaged image in its slice, a failed write on rank 0)
//     is printed with the rank's number and ends every rank at once (MPI_Abort): abort_with().
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>

#include "cli_errors.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/data/loader.hpp"
#ifdef SIMMIM_WITH_MPI
#include "simmim/dist/mpi.hpp"
#endif

namespace simmim::examples {

/// The processes of this run: rank and size, and the collectives the training loop needs.
class Cluster {
public:
    /// Initialises MPI when the binary has it and an MPI launcher started the process; otherwise one process.
    Cluster(int& argc, char**& argv) {
#ifdef SIMMIM_WITH_MPI
        if (dist::launched_by_mpi()) world_.emplace(argc, argv);
#else
        (void)argc;
        (void)argv;
        // started by an MPI launcher as one of several processes, without MPI to join them: refused (check_launch)
        for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
            if (const char* v = std::getenv(name); v && std::atoi(v) > 1) launched_size_ = std::atoi(v);
        for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK"})
            if (const char* v = std::getenv(name)) launcher_rank_ = std::atoi(v);
#endif
    }
    /// Whether this process reports the errors every process meets alike: rank 0 (with MPI), or the first of the
    /// processes a launcher started when the binary has no MPI.
    bool reports_errors() const noexcept { return root() && launcher_rank_ == 0; }
    /// UsageError when an MPI launcher started this binary as one of several processes but it was built without
    /// MPI: each would train alone on the whole data.
    void check_launch() const {
        if (launched_size_ > 1)
            throw UsageError("started as one of " + std::to_string(launched_size_) +
                             " processes by an MPI launcher, but this binary was built without MPI: install libopenmpi-dev "
                             "(scripts/setup.sh) and configure again (CMake says \"simmim: MPI ... found\"), or run one process");
    }
    int rank() const noexcept {
#ifdef SIMMIM_WITH_MPI
        if (world_) return world_->rank();
#endif
        return 0;
    }
    int size() const noexcept {
#ifdef SIMMIM_WITH_MPI
        if (world_) return world_->size();
#endif
        return 1;
    }
    bool root() const noexcept { return rank() == 0; }
    /// True when an MPI launcher started this process (even as a job of one rank).
    bool launched() const noexcept {
#ifdef SIMMIM_WITH_MPI
        return world_.has_value();
#else
        return false;
#endif
    }
    bool distributed() const noexcept { return size() > 1; }

    /// This rank's samples of a global batch of `batch` (dist::batch_slice), for its BatchLoader.
    data::SampleSlice slice(int batch) const {
#ifdef SIMMIM_WITH_MPI
        if (world_) {
            const auto s = dist::batch_slice(batch, rank(), size());
            return {s.first, s.count};
        }
#endif
        return {0, batch};
    }

    /// Sums n doubles over the ranks, in place.
    void sum(double* v, std::size_t n) const {
#ifdef SIMMIM_WITH_MPI
        if (distributed()) dist::allreduce(v, n, MPI_SUM, world_->comm());
#else
        (void)v;
        (void)n;
#endif
    }
    /// The smallest of `v` over the ranks.
    int min(int v) const {
#ifdef SIMMIM_WITH_MPI
        if (distributed()) dist::allreduce(&v, 1, MPI_MIN, world_->comm());
#endif
        return v;
    }
    /// The largest of `v` over the ranks.
    int max(int v) const {
#ifdef SIMMIM_WITH_MPI
        if (distributed()) dist::allreduce(&v, 1, MPI_MAX, world_->comm());
#endif
        return v;
    }
    void barrier() const {
#ifdef SIMMIM_WITH_MPI
        if (distributed()) MPI_Barrier(world_->comm());
#endif
    }
    /// Rank 0's n values to every rank.
    template <class T>
    void broadcast(T* data, std::size_t n) const {
#ifdef SIMMIM_WITH_MPI
        if (distributed()) dist::broadcast(data, n, 0, world_->comm());
#else
        (void)data;
        (void)n;
#endif
    }
    /// The first parameter whose values differ between the ranks (dist::first_unsynced_tensor), or nothing.
    template <class T>
    std::optional<std::string> first_unsynced(const ParamArena<T>& arena) const {
#ifdef SIMMIM_WITH_MPI
        if (distributed()) return dist::first_unsynced_tensor(arena, world_->comm());
#endif
        (void)arena;
        return std::nullopt;
    }

    /// A parse step's outcome made the same on every rank (`program` names it in messages): if any rank's command
    /// line failed to parse (an option naming a file that is missing on its machine, say), every rank returns
    /// exit code 2 without options, and the lowest such rank's error is printed once, by that rank ("rank r of
    /// N: " before it unless r is 0, which run_main() prints as usual).
    template <class Parsed>
    Parsed agree_parse(const char* program, Parsed parsed) const {
        if (!distributed()) return parsed;
        const bool has_options = parsed.options.has_value();
        const int failing = min(has_options || parsed.exit_code == 0 ? size() : rank());
        if (failing == size()) return parsed;  // every rank parsed (or every rank printed --help)
        if (failing == rank() && rank() != 0) {
            std::fprintf(stderr, "%s: error: rank %d of %d: %s\n", program, rank(), size(), one_line(parsed.error).c_str());
            std::fflush(stderr);
        }
        if (has_options || failing != rank()) {  // fine here, or another rank's error: exit 2 quietly
            parsed.options.reset();
            parsed.help.clear();
            if (rank() != 0 || has_options) parsed.error.clear();
            parsed.exit_code = 2;
        }
        return parsed;
    }

    /// Runs f() on every rank. With several ranks, if it threw on any of them, every rank throws the error of the
    /// lowest failing rank (a UsageError as a UsageError, anything else as std::runtime_error, "rank r: "
    /// before the message of a rank other than 0), so that all stop together and rank 0 reports it once.
    template <class F>
    void agree(F&& f) const {
        if (!distributed()) return static_cast<void>(f());
#ifdef SIMMIM_WITH_MPI
        int kind = 0;  // 0 fine, 1 runtime error, 2 usage error
        std::string message;
        try {
            f();
        } catch (const UsageError& e) {
            kind = 2, message = e.what();
        } catch (const std::exception& e) {
            kind = 1, message = e.what();
        }
        int failing = kind ? rank() : size();
        dist::allreduce(&failing, 1, MPI_MIN, world_->comm());
        if (failing == size()) return;
        int header[2] = {kind, static_cast<int>(message.size())};
        dist::broadcast(header, 2, failing, world_->comm());
        message.resize(static_cast<std::size_t>(header[1]));
        dist::broadcast(message.data(), message.size(), failing, world_->comm());
        if (failing != 0) message = "rank " + std::to_string(failing) + ": " + message;
        if (header[0] == 2) throw UsageError(message);
        throw std::runtime_error(message);
#endif
    }

    /// For an error only this rank has met while the others go on: prints "<program>: error: rank r of n:
    /// <message>" and ends every rank of the job with `code` (MPI_Abort). Without several ranks, rethrows.
    [[noreturn]] void abort_with(const char* program, const std::exception& error, int code) const {
#ifdef SIMMIM_WITH_MPI
        if (distributed()) {
            // printed by every rank that meets it (print_error() is quiet on the ranks but 0)
            std::fprintf(stderr, "%s: error: rank %d of %d: %s (stopping every rank)\n", program, rank(), size(), one_line(error.what()).c_str());
            std::fflush(stderr);
            world_->abort(code);
        }
#endif
        (void)program;
        (void)error;
        (void)code;
        throw;
    }

    /// Sums a ParamArena's gradients over the ranks during backward (dist::GradientReducer); nothing for one process.
    template <class T>
    class Reducer {
    public:
        Reducer(const Cluster& cluster, ParamArena<T>& arena, std::size_t bucket_bytes) {
#ifdef SIMMIM_WITH_MPI
            if (cluster.distributed()) impl_.emplace(arena, cluster.world_->comm(), bucket_bytes);
#else
            (void)cluster;
            (void)arena;
            (void)bucket_bytes;
#endif
        }
        void start() {
#ifdef SIMMIM_WITH_MPI
            if (impl_) impl_->start();
#endif
        }
        /// Seconds spent waiting for the reduction after backward (0 for one process).
        double finish() {
#ifdef SIMMIM_WITH_MPI
            if (impl_) return impl_->finish();
#endif
            return 0.0;
        }
        std::size_t buckets() const {
#ifdef SIMMIM_WITH_MPI
            if (impl_) return impl_->buckets().size();
#endif
            return 0;
        }
        std::size_t launched_early() const {
#ifdef SIMMIM_WITH_MPI
            if (impl_) return impl_->launched_early();
#endif
            return 0;
        }

    private:
#ifdef SIMMIM_WITH_MPI
        std::optional<dist::GradientReducer<T>> impl_;
#endif
    };

private:
#ifdef SIMMIM_WITH_MPI
    std::optional<dist::World> world_;
#endif
    int launched_size_ = 0, launcher_rank_ = 0;  // set without MPI only
};

}  // namespace simmim::examples
