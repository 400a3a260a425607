// Tree files (`--tree FILE`): JSON paths parsed (ParseTreePaths), built into a tree with no
// head limit and for four heads (MedusaTree::FromPaths), and read from a file by LoadTree
// (which takes only a path: the input is given as an in-memory file, MemoryFile). A tree
// that builds must give its paths back.

#include <string>

#include "engine/medusa/tree.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto paths = medusa::ParseTreePaths(text, "fuzz");
  if (medusa::fuzz::Accepted(paths.status(), "ParseTreePaths")) {
    for (const int num_heads : {0, 4}) {
      auto tree = medusa::MedusaTree::FromPaths(*paths, num_heads);
      if (!tree.ok()) continue;
      FUZZ_CHECK(tree->num_nodes() == static_cast<int>(paths->size()) + 1, "a node count other than paths + root");
      auto again = medusa::MedusaTree::FromPaths(tree->paths(), num_heads);
      FUZZ_CHECK(again.ok() && again->paths() == tree->paths(), "a tree's own paths do not rebuild it");
    }
  }
  medusa::fuzz::MemoryFile input(data, size);
  medusa::LoadTree(input.path(), 4).IgnoreError();
  return 0;
}
