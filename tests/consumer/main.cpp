// tests/consumer/main.cpp: the outside program built by tests/consumer_builds.sh.
#include <simmim/simmim.hpp>

// simmim::data must supply the include paths of the data loaders' dependencies.
#include <stb_image.h>
#include <zlib.h>

int main() {
    simmim::Rng r(1);
    return r() != 0 ? 0 : 1;
}
