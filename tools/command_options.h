#pragma once
// What each `medusa` command is given: its command-line flags as plain values, read once
// in main (tools/flags.cc). Commands never read flags themselves.

#include <cstdint>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace medusa::tools {

// Where prompts come from: --prompt TEXT or --prompts FILE.jsonl (exactly one).
struct PromptSource {
  std::string prompt;
  std::string prompts_file;
  bool chat = false;  // --chat: the model's chat template applies to a plain prompt
};

// How each prompt is generated (generate, client, bench).
struct RequestFlags {
  int max_tokens = 256;
  double temperature = 0;
  double top_p = 1;
  int top_k = 0;
  uint64_t seed = 0;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool no_medusa = false;
  std::string acceptance = "typical";
  double typical_epsilon = 0.09;
  double typical_delta = 0.3;
};

// How client and bench reach a medusa-server: its address, and the TLS and token the server
// asks for (empty: plaintext, no token).
struct ServerConnection {
  std::string addr;
  std::string tls_ca_file;    // PEM CA that signed the server's certificate: use TLS
  std::string tls_cert_file;  // client certificate for mutual TLS (with tls_key_file)
  std::string tls_key_file;
  std::string auth_token_file;  // sent as `authorization: Bearer <token>`
  std::string lb_policy = "pick_first";  // gRPC load-balancing policy: pick_first or round_robin
};

// `medusa health`: one gRPC health check (grpc.health.v1), for container HEALTHCHECKs and scripts.
struct HealthCommand {
  ServerConnection server;
  std::string service;  // "": the server as a whole; "medusa.v1.Generator": ready to generate
  double timeout_seconds = 5;
};

struct GenerateCommand {
  EngineOptions engine;
  PromptSource prompts;
  RequestFlags request;
  bool json = false;
};

struct ClientCommand {
  ServerConnection server;
  PromptSource prompts;
  RequestFlags request;
  bool json = false;
};

struct BenchCommand {
  ServerConnection server;
  std::string prompts_file;
  bool chat = false;
  int concurrency = 1;
  int requests = 0;  // 0: one per prompt
  RequestFlags request;
  bool json = false;
};

struct TreeCommand {
  EngineOptions engine;  // --auto: the model and heads to time on
  std::string calibration;
  int nodes = 0;
  std::string out;
  bool automatic = false;  // --auto
  std::vector<std::string> batch_sizes;
  std::vector<std::string> tree_sizes;
  int repeats = 15;
  int context_tokens = 128;
};

// How the frozen model answers prompts for training and calibration rows.
struct DistillFlags {
  int max_prompt_tokens = 512;  // longer prompts are skipped
  int gen_tokens = 192;         // most tokens per answer
  int concurrency = 16;         // answers per forward pass
};

// Held-out prompts whose answers measure the heads' top-k accuracy (train, calibrate).
struct CalibrationFlags {
  std::string prompts_file;
  int count = 100;
  std::string out;  // empty: beside the heads
};

struct TrainCommand {
  EngineOptions engine;  // the base model (no heads)
  std::string out;
  std::string seed_prompts;
  int num_prompts = 1000;
  int train_rows = 0;  // the first rows of the answers alone; 0: all
  double gen_temperature = 0;
  int answers_per_prompt = 1;  // the first at gen_temperature, the others sampled at extra_answer_temperature
  double extra_answer_temperature = 0.7;
  int num_heads = 4;
  std::string head_type = "medusa";  // or "hydra"
  int num_layers = 1;
  bool share_lm_head = false;
  int epochs = 1;
  int batch_size = 64;
  double lr = 1e-3;
  double weight_decay = 0;
  double teacher_weight = 0;  // TrainerOptions::teacher_weight
  uint64_t seed = 0;
  std::string dtype = "f16";
  double draft_coverage = 0.995;
  int draft_min_tokens = 1024;
  std::string checkpoint;  // empty: <out>.ckpt
  std::string data_cache;  // empty: <out>.distill.safetensors; "none": no cache
  DistillFlags distill;
  CalibrationFlags calibration;
};

struct CalibrateCommand {
  EngineOptions engine;  // the base model (no heads)
  std::string heads;
  DistillFlags distill;
  CalibrationFlags calibration;
};

// medusa make-model: a random-weight Hugging Face checkpoint of a known shape.
struct MakeModelCommand {
  std::string shape;
  std::string from;  // a model to write in Hugging Face's layout instead of random weights
  std::string out;
  std::string dtype = "f16";
  uint64_t seed = 0;
  bool json = false;
};

}  // namespace medusa::tools
