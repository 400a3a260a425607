// `medusa make-model`: a random-weight Hugging Face checkpoint of a known Llama shape, for
// benchmarks and checks at real sizes without downloading weights; or, with --from, a model
// of another format written in Hugging Face's layout.

#include <chrono>
#include <cstdio>

#include "absl/strings/str_format.h"
#include "engine/model/hf_writer.h"
#include "engine/model/loader.h"
#include "engine/model/random_checkpoint.h"
#include "kernels/base/status_macros.h"
#include "nlohmann/json.hpp"
#include "tools/commands.h"
#include "tools/fail.h"

namespace medusa::tools {

namespace {

absl::StatusOr<HfCheckpointReport> Write(const MakeModelCommand& command, safetensors::DType dtype) {
  if (!command.from.empty()) {
    ASSIGN_OR_RETURN(const LoadedModel model, LoadModel(command.from));
    return ExportHfCheckpoint(model.config, model.weights, dtype, command.out);
  }
  ASSIGN_OR_RETURN(const ModelConfig shape, KnownShape(command.shape));
  return WriteRandomCheckpoint(shape, dtype, command.seed, command.out);
}

absl::Status MakeModel(const MakeModelCommand& command) {
  const safetensors::DType dtype = command.dtype == "f32"   ? safetensors::DType::kF32
                                   : command.dtype == "f16" ? safetensors::DType::kF16
                                                            : safetensors::DType::kBF16;
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(const HfCheckpointReport report, Write(command, dtype));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (command.json) {
    std::printf("%s\n", nlohmann::json{{"shape", command.shape},
                                       {"from", command.from},
                                       {"dtype", command.dtype},
                                       {"out", command.out},
                                       {"parameters", report.parameters},
                                       {"bytes", report.bytes},
                                       {"shards", report.shards},
                                       {"seconds", seconds}}
                            .dump()
                            .c_str());
  } else {
    std::fprintf(stderr, "wrote %s: %s, %.2f billion parameters, %.2f GB in %d shards (%s), %.1f s\n",
                 command.out.c_str(), command.from.empty() ? command.shape.c_str() : command.from.c_str(),
                 report.parameters / 1e9, report.bytes / 1e9, report.shards, command.dtype.c_str(), seconds);
  }
  return absl::OkStatus();
}

}  // namespace

int RunMakeModel(const MakeModelCommand& command) {
  const absl::Status status = MakeModel(command);
  return status.ok() ? 0 : Fail(status);
}

}  // namespace medusa::tools
