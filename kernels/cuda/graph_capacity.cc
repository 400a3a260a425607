#include "kernels/cuda/graph_capacity.h"

namespace medusa::kernels::cuda {

int GraphCapacityFor(int rows) {
  if (rows <= 0) return 0;
  for (int capacity : kGraphCapacities) {
    if (rows <= capacity) return capacity;
  }
  return 0;
}

}  // namespace medusa::kernels::cuda
