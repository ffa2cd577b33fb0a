// tests/mpi/reducer_check.cpp: dist::GradientReducer, dist::first_unsynced_tensor and dist::batch_slice
// against closed forms, under `mpirun -np N` (tests/mpi_pretrain.sh runs it with 2 and 3 ranks).
//
// An arena of parameters of awkward sizes (1 to 1000 elements), some in gradient groups (as a block stack
// registers them) and some in none, is reduced with bucket caps from 4 bytes (every bucket split) to 1 MB
// (one bucket per run of groups). Rank r's gradient element i of parameter k is the integer
// (r + 1) * (k + 1) + i % 7, so the sum over the ranks is exact in float and known in closed form:
// (k + 1) * N (N + 1) / 2 + N * (i % 7). The groups are notified in reverse order, as a backward pass does,
// and the check asserts that buckets start before finish() (the overlap) and that every element is right.
// Prints one line per failed check and exits 1 if any failed, 0 otherwise (on every rank).
#include <cstdio>
#include <string>
#include <vector>

#include "simmim/dist/mpi.hpp"

int main(int argc, char** argv) {
    using namespace simmim;
    dist::World world(argc, argv);
    const int N = world.size(), rank = world.rank();
    int failures = 0;
    auto fail = [&](const std::string& what) {
        std::printf("rank %d: FAIL: %s\n", rank, what.c_str());
        ++failures;
    };

    // parameters: 0 loose, 1-2 group 0, 3 loose, 4-6 group 1, 7-8 group 2, 9 loose (sizes below)
    const std::vector<int> sizes = {5, 1000, 3, 17, 1, 250, 64, 999, 2, 33};
    const std::vector<std::pair<int, int>> groups = {{1, 3}, {4, 7}, {7, 9}};
    for (const std::size_t cap_bytes : {std::size_t(4), std::size_t(100), std::size_t(4096), std::size_t(1) << 20}) {
        ParamArena<float> arena;
        for (std::size_t k = 0; k < sizes.size(); ++k) {
            switch (sizes[k]) {  // Param shapes are compile-time: one case per size
#define SIMMIM_SIZE(n) \
    case n: arena.add<Shape<n>>("p" + std::to_string(k), Init::Zeros, false); break;
                SIMMIM_SIZE(1) SIMMIM_SIZE(2) SIMMIM_SIZE(3) SIMMIM_SIZE(5) SIMMIM_SIZE(17) SIMMIM_SIZE(33) SIMMIM_SIZE(64) SIMMIM_SIZE(250)
                SIMMIM_SIZE(999) SIMMIM_SIZE(1000)
#undef SIMMIM_SIZE
            }
        }
        for (const auto& [first, end] : groups) arena.add_grad_group(static_cast<std::size_t>(first), static_cast<std::size_t>(end));
        arena.allocate();
        dist::GradientReducer<float> reducer(arena, world.comm(), cap_bytes);
        std::size_t covered = 0;
        for (const auto& b : reducer.buckets()) {
            covered += b.count;
            if (b.count * sizeof(float) > std::max<std::size_t>(cap_bytes, sizeof(float)))
                fail("cap " + std::to_string(cap_bytes) + ": a bucket of " + std::to_string(b.count) + " floats");
        }
        if (covered != arena.size()) fail("cap " + std::to_string(cap_bytes) + ": buckets cover " + std::to_string(covered) + " of " + std::to_string(arena.size()));
        for (int round = 0; round < 2; ++round) {  // the reducer is reused step after step
            const auto& ps = arena.params();
            for (std::size_t k = 0; k < ps.size(); ++k)
                for (std::size_t i = 0; i < ps[k].size; ++i)
                    arena.grads()[ps[k].offset + i] = float((rank + 1) * static_cast<int>(k + 1) + static_cast<int>(i % 7) + round);
            reducer.start();
            for (std::size_t g = groups.size(); g-- > 0;) arena.notify_grad_ready(g);  // as backward does
            if (N > 1 && reducer.launched_early() == 0) fail("cap " + std::to_string(cap_bytes) + ": no bucket started before finish()");
            reducer.finish();
            for (std::size_t k = 0; k < ps.size(); ++k)
                for (std::size_t i = 0; i < ps[k].size; ++i) {
                    const double want = double(k + 1) * N * (N + 1) / 2 + double(N) * (double(i % 7) + round);
                    const double got = arena.grads()[ps[k].offset + i];
                    if (got != want) {
                        fail("cap " + std::to_string(cap_bytes) + " round " + std::to_string(round) + ": " + ps[k].name + "[" + std::to_string(i) +
                             "] = " + std::to_string(got) + ", want " + std::to_string(want));
                        k = ps.size();
                        break;
                    }
                }
        }
        // equal values on every rank: in sync; then one element of p7 changed on the last rank
        for (std::size_t i = 0; i < arena.size(); ++i) arena.values()[i] = float(i);
        if (const auto name = dist::first_unsynced_tensor(arena, world.comm())) fail("equal values reported unsynced at " + *name);
        if (rank == N - 1) arena.values()[arena.params()[7].offset + 3] += 1.0f;
        const auto name = dist::first_unsynced_tensor(arena, world.comm());
        if (N > 1 && (!name || *name != "p7")) fail("a changed p7 reported as " + (name ? *name : std::string("in sync")));
    }
    // batch slices: contiguous, covering, sizes differing by at most one
    for (int batch : {N, 7, 16, 64, 1001}) {
        if (batch < N) continue;
        int next = 0, lo = batch, hi = 0;
        for (int r = 0; r < N; ++r) {
            const auto s = dist::batch_slice(batch, r, N);
            if (s.first != next) fail("batch " + std::to_string(batch) + ": slice of rank " + std::to_string(r) + " starts at " + std::to_string(s.first));
            next = s.first + s.count;
            lo = std::min(lo, s.count), hi = std::max(hi, s.count);
        }
        if (next != batch || hi - lo > 1) fail("batch " + std::to_string(batch) + ": slices cover " + std::to_string(next) + ", sizes " + std::to_string(lo) + "-" + std::to_string(hi));
    }
    int total = failures;
    dist::allreduce(&total, 1, MPI_SUM, world.comm());
    if (rank == 0) std::printf("reducer_check on %d ranks: %s (%d failed checks)\n", N, total ? "FAILED" : "ok", total);
    return total ? 1 : 0;
}
