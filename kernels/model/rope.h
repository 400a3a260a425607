#pragma once
// Rotary position embedding's frequencies, the same for every backend.

#include <vector>

#include "kernels/model/config.h"

namespace medusa {

// theta^(-2i / head_dim) for i < head_dim / 2: the rotation frequency of each pair of a head,
// in double so large positions keep their angles' precision; scaled as config.rope_scaling says.
std::vector<double> RopeFrequencies(const ModelConfig& config);

}  // namespace medusa
