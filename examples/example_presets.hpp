// examples/example_presets.hpp: which model presets the example programs are compiled for.
//
// Every preset a program offers is a separate instantiation of the model, its backward and the training loop,
// and these dominate the build: simmim_pretrain, simmim_finetune and simmim_reconstruct take about 11 minutes
// of one core at -O3 for the twelve presets. A build that only needs some of them (the test suite, a packager,
// a user who trains one model) sets the CMake option SIMMIM_EXAMPLE_PRESETS, a list of preset names, which
// becomes the macro SIMMIM_EXAMPLE_PRESETS ("name,name,..."). The programs then instantiate those presets only;
// every preset name is still recognised (the option validators list all of them), and asking for one that was
// left out is a usage error that says how to get it. Unset (the default): every preset.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "cli_errors.hpp"
#include "simmim/core/config.hpp"
#include "simmim/core/swin_config.hpp"

namespace simmim::examples {

#ifdef SIMMIM_EXAMPLE_PRESETS
inline constexpr std::string_view kExamplePresets = SIMMIM_EXAMPLE_PRESETS;
#else
inline constexpr std::string_view kExamplePresets = "";
#endif

/// True when the programs are compiled for the preset called `name` (every preset when the list is empty).
constexpr bool preset_compiled(std::string_view name) {
    if (kExamplePresets.empty()) return true;
    std::string_view rest = kExamplePresets;
    while (!rest.empty()) {
        const std::size_t comma = rest.find(',');
        if (rest.substr(0, comma) == name) return true;
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
    }
    return false;
}

/// True when every name in SIMMIM_EXAMPLE_PRESETS is a preset (a misspelt name would silently leave it out).
constexpr bool example_presets_known() {
    std::string_view rest = kExamplePresets;
    while (!rest.empty()) {
        const std::size_t comma = rest.find(',');
        const std::string_view name = rest.substr(0, comma);
        bool known = false;  // (not presets::find() != nullptr: GCC 12 under -fsanitize=address rejects that comparison in a constant expression)
        for (const auto& p : presets::all) known = known || p.name == name;
        for (const auto& p : presets::swin_all) known = known || p.name == name;
        if (!known) return false;
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
    }
    return true;
}
static_assert(example_presets_known(), "SIMMIM_EXAMPLE_PRESETS names a preset that does not exist (see simmim_reconstruct --list-models)");

/// The usage error for a known preset that this build left out.
inline UsageError preset_not_compiled(std::string_view name) {
    return UsageError("the preset '" + std::string(name) + "' is not compiled into this build of the programs (built with SIMMIM_EXAMPLE_PRESETS=" +
                      std::string(kExamplePresets) + "); configure with -DSIMMIM_EXAMPLE_PRESETS= (empty: every preset) to get it");
}

namespace detail {
template <const auto& List, class F>
bool dispatch_compiled(std::string_view name, F&& f) {
    bool found = false;
    auto visit = [&]<std::size_t... I>(std::index_sequence<I...>) {
        auto one = [&]<std::size_t J>() {
            if (name != List[J].name) return;
            found = true;
            if constexpr (preset_compiled(List[J].name)) f.template operator()<List[J].config>();
            else throw preset_not_compiled(name);
        };
        (one.template operator()<I>(), ...);
    };
    visit(std::make_index_sequence<List.size()>{});
    return found;
}
}  // namespace detail

/// simmim::dispatch_preset over the ViT presets this build offers: f.template operator()<Config>() for the preset
/// called `name`; false for an unknown name; UsageError for a preset left out of this build.
template <class F>
bool dispatch_vit_preset(std::string_view name, F&& f) {
    return detail::dispatch_compiled<presets::all>(name, std::forward<F>(f));
}

/// The same over the Swin presets (presets::swin_all).
template <class F>
bool dispatch_swin(std::string_view name, F&& f) {
    return detail::dispatch_compiled<presets::swin_all>(name, std::forward<F>(f));
}

}  // namespace simmim::examples
