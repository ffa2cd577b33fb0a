// simmim/dist/mpi.hpp: data-parallel training over MPI processes (optional: needs <mpi.h>; in CMake,
// link simmim::mpi, defined when find_package(MPI) finds MPI).
//
// The model of PyTorch's DistributedDataParallel, on MPI: every process (rank) holds the whole model,
// computes the loss and gradients of its slice of every global batch (batch_slice), and the gradients are
// summed over the ranks by a GradientReducer while the backward pass is still running:
//   - the parameters are split into buckets of a few MB, each a contiguous range of the parameter arena,
//     built in the reverse order of registration (the order in which backward makes gradients final);
//   - each transformer block's parameters form a gradient group of the arena (model/parts/block_stack.hpp),
//     and the block stack notifies the arena as soon as a block's backward is done; the reducer then starts
//     an MPI_Iallreduce on every bucket whose groups are all final, and polls the ones in flight (MPI makes
//     progress inside MPI calls) at every later notification, so the communication overlaps the backward of
//     the blocks below;
//   - parameters in no group (embedding, final norm, head, tokens) are reduced when backward() has returned
//     (finish()), which also waits for every bucket.
// The buckets, their order and the collective algorithm are the same on every rank and in every run, so a
// rerun with the same number of ranks is bit-identical and the ranks' gradients, and hence parameters, stay
// equal (first_unsynced_tensor checks it).
//
// For the gradients summed over the ranks to be those of the whole batch, rank r scales its loss by
// w_r = denominator(its samples) / denominator(whole batch) (SimMIM::loss_denominator; for the masked L1
// loss, its masked pixels over the batch's), and the batch loss is the sum of the ranks' w_r * loss_r.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "simmim/core/tensor.hpp"

namespace simmim::dist {

/// True when an MPI launcher started this process: Open MPI's mpirun (OMPI_COMM_WORLD_SIZE), MPICH's
/// Hydra (PMI_SIZE) or a PMIx launcher such as Slurm's `srun --mpi=pmix` (PMIX_RANK). A program started
/// directly runs as one process without initialising MPI.
inline bool launched_by_mpi() {
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
        if (std::getenv(name) != nullptr) return true;
    return false;
}

/// Throws std::runtime_error naming `what` unless `rc` is MPI_SUCCESS (for communicators whose error
/// handler returns errors; MPI_COMM_WORLD's default aborts the job instead).
inline void check(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw std::runtime_error(std::string(what) + ": " + std::string(text, static_cast<std::size_t>(len)));
}

/// MPI_Init (threads: MPI_THREAD_FUNNELED, only the calling thread calls MPI) and MPI_Finalize, and the rank
/// and size of MPI_COMM_WORLD. One per process.
class World {
public:
    World(int& argc, char**& argv) {
        int provided = 0;
        check(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
        MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
        MPI_Comm_size(MPI_COMM_WORLD, &size_);
    }
    World(const World&) = delete;
    World& operator=(const World&) = delete;
    ~World() {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
    }
    int rank() const noexcept { return rank_; }
    int size() const noexcept { return size_; }
    MPI_Comm comm() const noexcept { return MPI_COMM_WORLD; }
    /// Ends every process of the job with `code` (MPI_Abort): for an error only this rank has seen.
    [[noreturn]] void abort(int code) const {
        MPI_Abort(MPI_COMM_WORLD, code);
        std::abort();
    }

private:
    int rank_ = 0, size_ = 1;
};

template <class T>
MPI_Datatype mpi_type() {
    if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
    else if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
    else if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
    else if constexpr (std::is_same_v<T, std::uint64_t>) return MPI_UINT64_T;
    else if constexpr (std::is_same_v<T, int>) return MPI_INT;
    else if constexpr (std::is_same_v<T, char>) return MPI_CHAR;
    else static_assert(sizeof(T) == 0, "simmim::dist: no MPI datatype for this type");
}

/// The samples [first, first + count) of a global batch of `batch` that rank `rank` of `size` computes:
/// contiguous slices whose sizes differ by at most one (rank r starts at floor(batch * r / size)).
struct BatchSlice {
    int first = 0, count = 0;
};
inline BatchSlice batch_slice(int batch, int rank, int size) {
    if (size < 1 || rank < 0 || rank >= size) throw std::invalid_argument("batch_slice: rank must lie in [0, size)");
    const auto at = [&](int r) { return static_cast<int>(static_cast<std::int64_t>(batch) * r / size); };
    return {at(rank), at(rank + 1) - at(rank)};
}

/// MPI_Bcast of n values from `root`, in chunks that fit MPI's int counts.
template <class T>
void broadcast(T* data, std::size_t n, int root, MPI_Comm comm) {
    constexpr std::size_t kChunk = std::size_t(1) << 30;
    for (std::size_t i = 0; i < n; i += kChunk)
        MPI_Bcast(data + i, static_cast<int>(std::min(kChunk, n - i)), mpi_type<T>(), root, comm);
}

/// In-place MPI_Allreduce of n values with `op`.
template <class T>
void allreduce(T* data, std::size_t n, MPI_Op op, MPI_Comm comm) {
    MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(n), mpi_type<T>(), op, comm);
}

/// FNV-1a 64 of the bytes of n values.
template <class T>
std::uint64_t hash_values(const T* v, std::size_t n) {
    const auto* bytes = reinterpret_cast<const unsigned char*>(v);
    std::uint64_t h = 1469598103934665603ull;
    for (std::size_t i = 0; i < n * sizeof(T); ++i) h = (h ^ bytes[i]) * 1099511628211ull;
    return h;
}

/// The name of the first parameter (in arena order) whose values differ between the ranks, or nothing
/// when all are equal: each rank hashes every tensor, and the minimum and maximum of each hash over the
/// ranks are compared. Collective: every rank must call it.
template <class T>
std::optional<std::string> first_unsynced_tensor(const ParamArena<T>& arena, MPI_Comm comm) {
    const auto& ps = arena.params();
    std::vector<std::uint64_t> lo(ps.size()), hi(ps.size());
    for (std::size_t k = 0; k < ps.size(); ++k) lo[k] = hi[k] = hash_values(arena.values() + ps[k].offset, ps[k].size);
    allreduce(lo.data(), lo.size(), MPI_MIN, comm);
    allreduce(hi.data(), hi.size(), MPI_MAX, comm);
    for (std::size_t k = 0; k < ps.size(); ++k)
        if (lo[k] != hi[k]) return ps[k].name;
    return std::nullopt;
}

/// Sums the gradients of a ParamArena over the ranks of `comm` in buckets, overlapping the backward pass
/// (see the top of this file). Use per step:
///   reducer.start();  model.backward(nullptr, w_r);  reducer.finish();   // grads: the sum over the ranks
/// The arena must outlive the reducer; the reducer installs the arena's gradient-ready hook between start()
/// and finish() (the hook is removed by finish() and by the destructor).
template <class T>
class GradientReducer {
public:
    /// One range of the arena reduced by one MPI_Iallreduce.
    struct Bucket {
        std::size_t offset = 0, count = 0;  // elements of the arena
        std::ptrdiff_t group = -1;          // launched when this gradient group is final; -1: in finish()
    };

    /// Buckets of at most `bucket_bytes` (at least one parameter group or one parameter's run per bucket).
    GradientReducer(ParamArena<T>& arena, MPI_Comm comm, std::size_t bucket_bytes = std::size_t(4) << 20)
        : arena_(arena), comm_(comm) {
        if (!arena.has_gradients()) throw std::invalid_argument("GradientReducer: the arena has no gradients");
        MPI_Comm_size(comm, &size_);
        const std::size_t cap = std::max<std::size_t>(1, bucket_bytes / sizeof(T));
        const auto& ps = arena.params();
        const auto& groups = arena.grad_groups();
        std::vector<char> grouped(ps.size(), 0);
        // groups in reverse order (the order backward makes them final); consecutive groups whose ranges touch
        // share a bucket up to `cap` elements; a group larger than cap is split into chunks launched together
        std::size_t open_lo = 0, open_hi = 0;  // the bucket being filled: [open_lo, open_hi), trigger open_group
        std::ptrdiff_t open_group = -1;
        const auto close = [&] {
            if (open_hi > open_lo) push_chunks(open_lo, open_hi - open_lo, open_group, cap);
            open_lo = open_hi = 0;
            open_group = -1;
        };
        for (std::size_t gi = groups.size(); gi-- > 0;) {
            const auto& g = groups[gi];
            if (g.first == g.end) continue;
            for (std::size_t k = g.first; k < g.end; ++k) grouped[k] = 1;
            const std::size_t lo = ps[g.first].offset, hi = ps[g.end - 1].offset + ps[g.end - 1].size;
            if (open_hi > open_lo && (hi != open_lo || open_hi - lo > cap)) close();
            if (open_hi == open_lo) open_hi = hi;
            open_lo = lo;
            open_group = static_cast<std::ptrdiff_t>(gi);  // the lowest group of the bucket is the last to be final
        }
        close();
        // the runs of parameters in no group, from the end of the arena down, reduced in finish()
        for (std::size_t k = ps.size(); k-- > 0;) {
            if (grouped[k]) continue;
            std::size_t first = k;
            while (first > 0 && !grouped[first - 1]) --first;
            const std::size_t lo = ps[first].offset, hi = ps[k].offset + ps[k].size;
            for (std::size_t end = hi; end > lo;) {  // chunks of at most cap, from the top down
                const std::size_t begin = end - std::min(cap, end - lo);
                buckets_.push_back({begin, end - begin, -1});
                end = begin;
            }
            k = first;
        }
        requests_.assign(buckets_.size(), MPI_REQUEST_NULL);
    }
    GradientReducer(const GradientReducer&) = delete;
    GradientReducer& operator=(const GradientReducer&) = delete;
    ~GradientReducer() {
        arena_.set_grad_ready_hook({});
        if (in_flight_) MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
    }

    /// Arms the reduction of this step's gradients: call before backward().
    void start() {
        if (in_flight_) throw std::logic_error("GradientReducer::start: the previous step was not finished");
        next_ = early_ = 0;
        in_flight_ = true;
        if (size_ > 1) arena_.set_grad_ready_hook([this](std::size_t group) { on_group_ready(group); });
    }

    /// After backward(): reduces what is left, waits for every bucket and returns the seconds spent waiting
    /// (what the communication did not hide). The arena's gradients are then the sum over the ranks.
    double finish() {
        if (!in_flight_) throw std::logic_error("GradientReducer::finish: start() was not called");
        arena_.set_grad_ready_hook({});
        in_flight_ = false;
        if (size_ == 1) return 0.0;
        launch_up_to(buckets_.size());
        const auto t0 = std::chrono::steady_clock::now();
        MPI_Waitall(static_cast<int>(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE);
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }

    const std::vector<Bucket>& buckets() const noexcept { return buckets_; }
    /// How many buckets were launched during the last backward, before finish() (the overlapped ones).
    std::size_t launched_early() const noexcept { return early_; }

private:
    void push_chunks(std::size_t lo, std::size_t count, std::ptrdiff_t group, std::size_t cap) {
        for (std::size_t end = lo + count; end > lo;) {
            const std::size_t begin = end - std::min(cap, end - lo);
            buckets_.push_back({begin, end - begin, group});
            end = begin;
        }
    }
    void on_group_ready(std::size_t group) {
        // buckets launch in their fixed order: every bucket up to the last one whose trigger group is final
        // (groups become final from the highest index down)
        std::size_t up_to = next_;
        while (up_to < buckets_.size() && buckets_[up_to].group >= 0 && static_cast<std::size_t>(buckets_[up_to].group) >= group) ++up_to;
        launch_up_to(up_to);
        early_ = next_;
        int done = 0;  // progress for the ones in flight
        if (next_ > 0) MPI_Testall(static_cast<int>(next_), requests_.data(), &done, MPI_STATUSES_IGNORE);
    }
    void launch_up_to(std::size_t end) {
        for (; next_ < end; ++next_) {
            const Bucket& b = buckets_[next_];
            MPI_Iallreduce(MPI_IN_PLACE, arena_.grads() + b.offset, static_cast<int>(b.count), mpi_type<T>(), MPI_SUM, comm_, &requests_[next_]);
        }
    }

    ParamArena<T>& arena_;
    MPI_Comm comm_;
    int size_ = 1;
    std::vector<Bucket> buckets_;
    std::vector<MPI_Request> requests_;
    std::size_t next_ = 0, early_ = 0;
    bool in_flight_ = false;
};

}  // namespace simmim::dist
