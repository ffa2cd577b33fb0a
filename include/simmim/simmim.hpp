// simmim/simmim.hpp: umbrella header of the simmim library (model, masking, optimizer, I/O).
#pragma once

#include "simmim/core/config.hpp"
#include "simmim/core/swin_config.hpp"
#include "simmim/core/random.hpp"
#include "simmim/core/tensor.hpp"
#include "simmim/masking/blockwise.hpp"
#include "simmim/masking/central_square.hpp"
#include "simmim/masking/masking.hpp"
#include "simmim/model/mlp_head.hpp"
#include "simmim/model/reconstruction_loss.hpp"
#include "simmim/model/simmim_model.hpp"
#include "simmim/model/swin_encoder.hpp"
#include "simmim/model/vit_official.hpp"
