#pragma once
// Quantized products of many rows on Intel AMX tiles (Sapphire Rapids and later), found at
// run time. A tile multiply (TDPBSUD: signed activations times unsigned weights) computes a
// block's integer dot products for 16 rows and 16 outputs at once; the float part per block
// is the VNNI kernel's, in its order. The integer sums are exact either way, so a row's
// result is bitwise the same whichever kernel ran it: AMX for a tree's many rows and VNNI for
// a decode row agree to the last bit.

#include "kernels/cpu/quantized_panels.h"

namespace medusa::kernels::cpu {

// Off by default: on the 2-core Sapphire Rapids development machine, SmolLM2's products of 6 to
// 64 rows took 1.1-1.4x the VNNI kernel's time (BENCHMARKS.md, issue 24). With a scale per
// 32-value block, each block's sums leave the tile for the float part, and that round trip
// costs what the VNNI instructions it saves did. MEDUSA_CPU_AMX=1 turns it on to measure again.

// Whether this processor has AMX-INT8 and the kernel lets this process use its tiles (asked
// once, on the first call).
bool AmxSupported();
// Whether products of kAmxMinRows rows or more use the tiles: AmxSupported() and turned on
// (MEDUSA_CPU_AMX=1 at start, or SetAmxEnabled). Process-wide.
bool AmxEnabled();
void SetAmxEnabled(bool enabled);

// Rows fewer than this go to the VNNI kernel: a tile multiply covers 16 rows at a time.
constexpr int kAmxMinRows = 6;

// QuantizedLinearPanels on AMX tiles (precondition: AmxEnabled(); x.q padded to a multiple of 16 rows).
void AmxLinearPanels(const QuantizedActivations& x, const PanelView& w, int out, int p_begin, int p_end, float* y,
                     int ldy, bool accumulate);

}  // namespace medusa::kernels::cpu
