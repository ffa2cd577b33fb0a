// tests/consumer/main.cpp: the outside program built by tests/consumer_builds.sh. It composes a tiny
// SimMIM model, takes one AdamW step and checks that the loss went down.
#include <simmim/data/image_folder.hpp>
#include <simmim/io/model_io.hpp>
#include <simmim/optim/adamw.hpp>
#include <simmim/simmim.hpp>

// simmim::data must supply the include paths of the data loaders' dependencies.
#include <stb_image.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

int main() {
    constexpr simmim::ViTConfig cfg{16, 1, 4, 16, 1, 2, 2};  // 16 px, 1 channel, tiny
    constexpr simmim::MaskSpec cfgMask{8, 0.5};
    simmim::ViTSimMIM<float, cfg> model(simmim::random_mask_patch<cfg, cfgMask>(), 1);
    simmim::AdamW<float> opt(model.params());
    std::vector<float> images(2 * cfg.image_numel()), mask(2 * cfg.num_patches());
    simmim::Rng rng(2);
    for (auto& v : images) v = static_cast<float>(rng.normal());
    model.draw_mask(3, 0, 2, mask.data());
    float first = 0, last = 0;
    for (int step = 0; step < 5; ++step) {
        model.zero_grad();
        last = model.forward(images.data(), mask.data(), 2);
        if (step == 0) first = last;
        model.backward();
        opt.step(1e-2);
    }
    std::printf("consumer: loss %.4f -> %.4f\n", first, last);
    // simmim::data must link the image decoders (libpng, libjpeg-turbo): a PNG signature followed by an
    // IEND chunk alone has whole chunks (simmim's own walk of the chunks passes it to libpng) but no IHDR,
    // which libpng reports and the dataset turns into a DataError.
    const std::vector<std::uint8_t> truncated_png{0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A,
                                                  0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82};
    bool decoder_error = false;
    try {
        (void)simmim::data::decode_image(truncated_png, "probe.png");
    } catch (const simmim::data::DataError& e) {
        decoder_error = std::string(e.what()).find("libpng") != std::string::npos;
    }
    std::printf("consumer: truncated PNG %s\n", decoder_error ? "refused by libpng" : "NOT refused by libpng");
    return last < first && decoder_error ? 0 : 1;
}
