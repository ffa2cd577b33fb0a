// tests/tools/compare_runs.cpp: compares two simmim_pretrain runs, for the script tests.
//
//   compare_runs --metrics A.jsonl B.jsonl [--from STEP] [--loss-rtol X] [--gnorm-rtol Z]
//                [--checkpoint A.safetensors B.safetensors] [--param-tol Y]
//
// Metrics: the losses of the steps both logs hold (at least one, from --from on) must agree to X relative
// (|a - b| <= X * max(|a|, |b|)) and their gradient norms to Z (default 1e-4: AdamW hides a wrong gradient
// scale from the parameters, the norm does not), and every step of B must be in A. Checkpoints: the two files must hold the
// same tensors, and every element must agree to Y (|a - b| <= Y * max(1, |a|, |b|)). Prints the largest
// deviations found and exits 1 when a check fails (2 on a usage error or an unreadable file), 0 otherwise.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "simmim/io/safetensors.hpp"

namespace {

/// step -> (loss, grad_norm) of a metrics.jsonl
std::map<long long, std::pair<double, double>> losses(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::map<long long, std::pair<double, double>> out;
    std::string line;
    while (std::getline(in, line))
        if (!line.empty()) {
            const auto j = nlohmann::json::parse(line);
            out[j.at("step").get<long long>()] = {j.at("loss").get<double>(), j.at("grad_norm").get<double>()};
        }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    std::string ma, mb, ca, cb;
    double loss_rtol = 1e-5, gnorm_rtol = 1e-4, param_tol = 1e-4;
    long long from = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const auto need = [&](int n) {
            if (i + n >= argc) {
                std::fprintf(stderr, "compare_runs: %s needs %d values\n", a.c_str(), n);
                std::exit(2);
            }
        };
        if (a == "--metrics") need(2), ma = argv[++i], mb = argv[++i];
        else if (a == "--checkpoint") need(2), ca = argv[++i], cb = argv[++i];
        else if (a == "--loss-rtol") need(1), loss_rtol = std::atof(argv[++i]);
        else if (a == "--gnorm-rtol") need(1), gnorm_rtol = std::atof(argv[++i]);
        else if (a == "--param-tol") need(1), param_tol = std::atof(argv[++i]);
        else if (a == "--from") need(1), from = std::atoll(argv[++i]);
        else {
            std::fprintf(stderr, "compare_runs: unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    int failed = 0;
    try {
        if (!ma.empty()) {
            const auto a = losses(ma), b = losses(mb);
            const auto rel = [](double x, double y) { return std::fabs(x - y) / std::max({std::fabs(x), std::fabs(y), 1e-30}); };
            double worst = 0, worst_gnorm = 0;
            long long worst_step = -1, worst_gnorm_step = -1, compared = 0;
            for (const auto& [step, lb] : b) {
                if (step < from) continue;
                const auto it = a.find(step);
                if (it == a.end()) {
                    std::printf("FAIL: step %lld of %s is not in %s\n", step, mb.c_str(), ma.c_str());
                    failed = 1;
                    continue;
                }
                ++compared;
                if (const double r = rel(it->second.first, lb.first); !(r <= worst)) worst = r, worst_step = step;
                if (const double r = rel(it->second.second, lb.second); !(r <= worst_gnorm)) worst_gnorm = r, worst_gnorm_step = step;
            }
            std::printf("losses: %lld steps compared, largest relative difference %.3g (step %lld), tolerance %.3g; gradient norms %.3g (step %lld), tolerance %.3g\n",
                        compared, worst, worst_step, loss_rtol, worst_gnorm, worst_gnorm_step, gnorm_rtol);
            if (compared == 0 || !(worst <= loss_rtol) || !(worst_gnorm <= gnorm_rtol)) failed = 1;
        }
        if (!ca.empty()) {
            const auto a = simmim::io::read_safetensors(ca), b = simmim::io::read_safetensors(cb);
            double worst = 0;
            std::string worst_name;
            std::size_t tensors = 0;
            for (const auto& name : a.names()) {
                const auto va = a.at(name).to<double>();
                if (!b.contains(name) || b.at(name).to<double>().size() != va.size()) {
                    std::printf("FAIL: tensor %s is missing from %s or has another size\n", name.c_str(), cb.c_str());
                    failed = 1;
                    continue;
                }
                const auto vb = b.at(name).to<double>();
                ++tensors;
                for (std::size_t i = 0; i < va.size(); ++i) {
                    const double x = va[i], y = vb[i];
                    const double d = std::fabs(x - y) / std::max({1.0, std::fabs(x), std::fabs(y)});
                    if (!(d <= worst)) worst = d, worst_name = name;  // NaN counts as the worst
                }
            }
            if (b.names().size() != a.names().size()) {
                std::printf("FAIL: %zu tensors in %s, %zu in %s\n", a.names().size(), ca.c_str(), b.names().size(), cb.c_str());
                failed = 1;
            }
            std::printf("checkpoints: %zu tensors compared, largest difference %.3g (%s), tolerance %.3g\n", tensors, worst, worst_name.c_str(),
                        param_tol);
            if (!(worst <= param_tol)) failed = 1;
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "compare_runs: %s\n", e.what());
        return 2;
    }
    return failed;
}
