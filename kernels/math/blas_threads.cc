#include "kernels/math/blas_threads.h"

#include <cblas.h>

namespace medusa::math {

void PinBlasToOneThread() { openblas_set_num_threads(1); }

}  // namespace medusa::math
