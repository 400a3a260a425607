// The layers, checked in the sources: nothing under kernels/ includes engine/, server/ or
// tools/; the CPU and CUDA backends include nothing of each other (and the CPU backend
// nothing of CUDA), so either builds alone; nothing above kernels/ names a backend's
// internals (it asks kernels/backend.h); nothing under engine/ includes gRPC, the gRPC
// API's generated code, server/ or tools/. The build enforces the same through per-target
// include roots (medusa_expose in the root CMakeLists.txt); this check names the file and
// line, and a planted violation shows that it can fail.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/support/temp_dir.h"

namespace medusa {
namespace {

namespace fs = std::filesystem;

struct Rule {
  std::string folder;                  // files under it, relative to the root
  std::vector<std::string> forbidden;  // include paths that start with one of these
};

const std::vector<Rule>& Rules() {
  static const std::vector<Rule> rules = {
      {"kernels", {"engine/", "server/", "tools/"}},
      {"kernels/cpu", {"kernels/cuda/", "kernels/cuda_plugin/", "cuda", "cublas"}},
      {"kernels/cuda", {"kernels/cpu/"}},
      {"kernels/cuda_plugin", {"kernels/cpu/"}},
      {"engine",
       {"server/", "tools/", "grpc/", "grpcpp/", "grpc++/", "medusa/v1/", "medusa/internal/", "kernels/cpu/",
        "kernels/cuda/", "kernels/cuda_plugin/"}},
      {"server", {"kernels/cpu/", "kernels/cuda/", "kernels/cuda_plugin/"}},
      {"tools", {"kernels/cpu/", "kernels/cuda/", "kernels/cuda_plugin/"}},
  };
  return rules;
}

bool IsSource(const fs::path& path) {
  const std::string ext = path.extension().string();
  return ext == ".h" || ext == ".cc" || ext == ".cu" || ext == ".cuh" || ext == ".inc";
}

// Every include under `root` that breaks a rule, as "file:line: path".
std::vector<std::string> FindLayerViolations(const fs::path& root) {
  static const std::regex include(R"(^\s*#\s*include\s*["<]([^">]+)[">])");
  std::vector<std::string> violations;
  for (const Rule& rule : Rules()) {
    if (!fs::exists(root / rule.folder)) continue;
    for (const fs::directory_entry& entry : fs::recursive_directory_iterator(root / rule.folder)) {
      if (!entry.is_regular_file() || !IsSource(entry.path())) continue;
      std::ifstream in(entry.path());
      std::string line;
      for (int number = 1; std::getline(in, line); ++number) {
        std::smatch match;
        if (!std::regex_search(line, match, include)) continue;
        for (const std::string& prefix : rule.forbidden) {
          if (match[1].str().rfind(prefix, 0) == 0) {
            violations.push_back(fs::relative(entry.path(), root).string() + ":" + std::to_string(number) + ": " +
                                 match[1].str());
          }
        }
      }
    }
  }
  return violations;
}

void WriteFile(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

TEST(LayeringTest, EachLayerIncludesOnlyWhatItMay) {
  const std::vector<std::string> violations = FindLayerViolations(MEDUSA_SOURCE_DIR);
  std::string listed;
  for (const std::string& v : violations) listed += v + "\n";
  EXPECT_TRUE(violations.empty()) << listed;
}

TEST(LayeringTest, APlantedViolationIsFound) {
  testing::TempDir dir;
  const fs::path root = dir.file("tree");
  WriteFile(root / "kernels/cpu/fine.cc", "#include \"kernels/model/config.h\"\n#include <vector>\n");
  WriteFile(root / "kernels/cpu/bad.cc", "#include <vector>\n\n#include \"engine/engine.h\"\n");
  WriteFile(root / "engine/generate/bad.h", "#pragma once\n#include <grpcpp/server.h>\n");
  WriteFile(root / "engine/scheduler/bad.cc", "  #  include \"server/service.h\"\n");
  WriteFile(root / "engine/model/fine.cc", "#include \"engine/model/gguf.h\"\n#include \"kernels/backend.h\"\n");
  WriteFile(root / "kernels/cuda/bad.cu", "#include \"kernels/cpu/matmul.h\"\n");
  WriteFile(root / "kernels/cpu/bad_cuda.cc", "#include <cuda_runtime.h>\n");
  WriteFile(root / "server/bad.cc", "#include \"kernels/cuda/cuda_backend.h\"\n");
  std::vector<std::string> violations = FindLayerViolations(root);
  std::sort(violations.begin(), violations.end());
  EXPECT_EQ(violations,
            (std::vector<std::string>{
                "engine/generate/bad.h:2: grpcpp/server.h", "engine/scheduler/bad.cc:1: server/service.h",
                "kernels/cpu/bad.cc:3: engine/engine.h", "kernels/cpu/bad_cuda.cc:1: cuda_runtime.h",
                "kernels/cuda/bad.cu:1: kernels/cpu/matmul.h", "server/bad.cc:1: kernels/cuda/cuda_backend.h"}));
}

}  // namespace
}  // namespace medusa
