#pragma once
// OpenBLAS's own threads, turned off: the CPU backend and the heads trainer split their
// products across their own pools (thread_pool.h), and OpenBLAS threads beside those would
// compete for the same cores.

namespace medusa::math {

// Pins OpenBLAS to one thread, process-wide.
void PinBlasToOneThread();

}  // namespace medusa::math
