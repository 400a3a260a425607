#pragma once
// The shapes decode and Medusa steps are captured at as CUDA graphs. A graph is captured per
// row capacity, its kernels launched for that many rows and reading the step's true counts
// from the step plan; a step of n rows replays the graph of the smallest capacity >= n. The
// ladder grows by at most 1.5x past 2, so a launch pads a step by at most half its rows.

namespace medusa::kernels::cuda {

inline constexpr int kGraphCapacities[] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512};

// The capacity whose graph runs a step of `rows` rows, or 0 when the step is larger than every
// capacity (it runs without a graph).
int GraphCapacityFor(int rows);

}  // namespace medusa::kernels::cuda
