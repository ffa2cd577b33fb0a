// tests/main.cpp: the one translation unit that defines Catch2's main() for simmim_tests.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
