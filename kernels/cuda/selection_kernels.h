#pragma once
// Choosing tokens on the device (selection_kernels.cu), so a step copies back ids rather than
// rows of logits: the argmax of every output row (greedy decoding and verification), each
// Medusa head's top-k, and what typical acceptance reads (softmax summaries, single logits). The order is
// kernels/topk.h's: larger first, equal values by the smaller index, NaN below every number; exact, so the GPU picks
// what the CPU would from the same logits.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/layer_kernels.h"

namespace medusa::kernels::cuda {

// out[r] = the index of row r's largest value, for rows below the count (rows `cols` apart).
void LaunchArgmaxRows(const float* logits, RowCount rows, int cols, int32_t* out, cudaStream_t stream);

// For each row r < rows and segment h < segments of logits [rows, segments, cols]: the indices
// of its topk[h] largest values, best first, at out[r * total + offset[h] ...] (total: the sum
// of topk; offset[h]: the sum of topk before h), each mapped through `map` when it is not null
// (a Medusa draft vocabulary). topk and offset are device arrays of `segments` entries.
void LaunchTopKRows(const float* logits, int rows, int segments, int cols, const int32_t* topk, const int32_t* offset,
                    int total, const int32_t* map, int32_t* out, cudaStream_t stream);

// For each query q < count: kernels/softmax_stats.h's summary of logits row rows[q] (rows
// `cols` apart) at temperatures[q], as stats[3q + 0, 1, 2] = max logit, log Z, entropy.
void LaunchSoftmaxStats(const float* logits, int cols, const int32_t* rows, const float* temperatures, int count,
                        double* stats, cudaStream_t stream);
// out[q] = logits[rows[q] * cols + tokens[q]] for q < count.
void LaunchGatherLogits(const float* logits, int cols, const int32_t* rows, const int32_t* tokens, int count,
                        float* out, cudaStream_t stream);

}  // namespace medusa::kernels::cuda
