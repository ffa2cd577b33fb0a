// tests/consumer/mpi_main.cpp: built by tests/consumer_builds.sh when the simmim it consumes defines simmim::mpi.
// Run as one process (MPI singleton start): the gradient sum over one rank is the gradient itself, and every
// bucket of a two-block arena is reduced. Exits 1 with a message otherwise.
#include <cstdio>

#include <simmim/dist/mpi.hpp>

int main(int argc, char** argv) {
    simmim::dist::World world(argc, argv);
    simmim::ParamArena<float> arena;
    arena.add<simmim::Shape<3>>("a", simmim::Init::Zeros, false);
    arena.add<simmim::Shape<5>>("b", simmim::Init::Zeros, false);
    arena.add_grad_group(1, 2);
    arena.allocate();
    for (std::size_t i = 0; i < arena.size(); ++i) arena.grads()[i] = float(i);
    simmim::dist::GradientReducer<float> reducer(arena, world.comm(), 8);
    reducer.start();
    arena.notify_grad_ready(0);
    reducer.finish();
    for (std::size_t i = 0; i < arena.size(); ++i)
        if (arena.grads()[i] != float(i) * float(world.size())) {
            std::fprintf(stderr, "simmim_consumer_mpi: gradient %zu is %g, expected %g\n", i, double(arena.grads()[i]), double(i) * world.size());
            return 1;
        }
    std::printf("simmim_consumer_mpi: %zu buckets over %d rank(s) ok\n", reducer.buckets().size(), world.size());
    return 0;
}
