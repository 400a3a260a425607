#pragma once
// Element-wise pieces of a Llama layer: RMSNorm, rotary embedding, SwiGLU.

#include <cstdint>
#include <vector>

#include "kernels/math/thread_pool.h"

namespace medusa::kernels::cpu {

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, for `rows` rows of `dim` floats.
// `x` and `out` rows are `x_stride` / `out_stride` floats apart; out may equal x.
void RmsNorm(const float* x, int x_stride, const float* weight, int rows, int dim, float eps,
             float* out, int out_stride, math::ThreadPool* pool);

// Rotation of one position: cos_out[i], sin_out[i] of position * frequencies[i], i < half.
// Angles in double so large positions keep their precision.
void RopeAngles(int position, const double* frequencies, int half, float* cos_out, float* sin_out);

// Rotates adjacent pairs (x[2i], x[2i+1]) of each of `n_heads` heads of `head_dim` floats.
void ApplyRope(float* x, int n_heads, int head_dim, const float* cos_table, const float* sin_table);

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, hidden + i] for rows of [gate | up].
void SwiGlu(const float* gate_up, int rows, int hidden, float* out, math::ThreadPool* pool);

}  // namespace medusa::kernels::cpu
