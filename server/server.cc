#include "server/server.h"

#include <future>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/chat_template.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "kernels/base/status_macros.h"
#include "server/connection_gate.h"
#include "server/listen_address.h"
#include "spdlog/spdlog.h"

namespace medusa::server {
namespace {

// Warm-up: enough steps to time both modes, few enough to be quick on any model.
constexpr int kWarmUpTokens = 12;
constexpr char kWarmUpPrompt[] = "Once upon a time";
// After the scheduler drained, how long streams get to deliver their last messages.
constexpr absl::Duration kFlushTime = absl::Seconds(2);

int Milliseconds(absl::Duration d) { return static_cast<int>(absl::ToInt64Milliseconds(d)); }

// The connection limits as channel arguments; a zero duration leaves gRPC's default (off).
void ApplyConnectionLimits(const ConnectionLimits& limits, grpc::ServerBuilder& builder) {
  const std::pair<const char*, absl::Duration> durations[] = {
      {GRPC_ARG_KEEPALIVE_TIME_MS, limits.keepalive_time},
      {GRPC_ARG_KEEPALIVE_TIMEOUT_MS, limits.keepalive_timeout},
      {GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, limits.min_client_ping_interval},
      {GRPC_ARG_MAX_CONNECTION_IDLE_MS, limits.max_connection_idle},
      {GRPC_ARG_MAX_CONNECTION_AGE_MS, limits.max_connection_age},
      {GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, limits.max_connection_age_grace},
      {GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, limits.handshake_timeout},
  };
  for (const auto& [name, value] : durations) {
    if (value > absl::ZeroDuration()) builder.AddChannelArgument(name, Milliseconds(value));
  }
  // Keepalive pings also on connections without calls (a vanished idle client is found),
  // and without a cap on pings sent while no data flows.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, limits.max_metadata_bytes);
}

// Leaves gRPC's reflection plugin out of one server. Loading gRPC's reflection library
// registers the plugin for every server built in the process (a static initializer), so
// "off" has to take it out again.
class WithoutReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    std::erase_if(*plugins, [](const std::unique_ptr<grpc::ServerBuilderPlugin>& plugin) {
      return plugin->name() == "proto_server_reflection";
    });
  }
};

// A tree source as GetModelInfo shows it: presets and "auto" by name, a file only as "file"
// unless the server was asked to expose file paths.
std::string TreeSourceShown(const std::string& source, bool expose_file_paths) {
  const bool file = source.find('/') != std::string::npos || source.find('.') != std::string::npos;
  return file && !expose_file_paths ? "file" : source;
}

// What a request decoding alone verifies, for the start-up log: draft nodes besides the
// base model's own token, or plain decoding (an auto tree may choose it).
std::string MedusaSummary(const Engine& engine) {
  const MedusaTree* tree = engine.medusa_tree();
  if (tree == nullptr) return "off";
  const int drafts = tree->num_nodes() - 1;
  const std::string alone =
      drafts == 0 ? std::string("plain decoding") : absl::StrCat(drafts, drafts == 1 ? " draft node" : " draft nodes");
  return engine.auto_tree() != nullptr ? absl::StrCat("auto tree: ", alone, " at batch size 1") : alone;
}

}  // namespace

MedusaServer::MedusaServer(const ServerOptions& options)
    : options_(options), metrics_(std::make_unique<Metrics>()),
      service_(std::make_unique<GeneratorService>(*metrics_)) {}

MedusaServer::~MedusaServer() {
  Shutdown();
  metrics_->set_load_probe(nullptr);
  health_server_.reset();
  server_.reset();
  scheduler_.reset();
}

absl::StatusOr<std::unique_ptr<MedusaServer>> MedusaServer::Start(const ServerOptions& options) {
  // The credentials first: a bad certificate or token file is an error before anything listens.
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, MakeServerCredentials(options.security));
  std::unique_ptr<MedusaServer> server(new MedusaServer(options));
  const std::string metrics_address = HostPort(options.metrics_host, options.metrics_port);
  RETURN_IF_ERROR(server->metrics_->Serve(metrics_address));

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (!options.enable_reflection) builder.SetOption(std::make_unique<WithoutReflection>());
  const std::string address = HostPort(options.host, options.port);
  int bound_port = 0;
  if (options.connection.max_connections > 0) {
    // The gate owns the public port; gRPC listens on its private Unix socket.
    ASSIGN_OR_RETURN(server->gate_,
                     ConnectionGate::Bind(options.host, options.port, options.connection.max_connections));
    builder.AddListeningPort(server->gate_->backend_address(), credentials, &bound_port);
  } else {
    builder.AddListeningPort(address, credentials, &bound_port);
  }
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, options.max_concurrent_streams);
  // gRPC sets SO_REUSEPORT by default: a second server on a taken port would start and take
  // half of the first one's connections. A taken port is an error instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  ApplyConnectionLimits(options.connection, builder);
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || bound_port == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, " (in use?)"));
  }
  server->port_ = bound_port;
  if (server->gate_ != nullptr) {
    server->port_ = server->gate_->port();
    server->gate_->Start();
  }
  // gRPC's health service starts out SERVING for "": not before the model is ready. Between
  // BuildAndStart and this call "" is SERVING for an instant; the Generator's own status
  // (medusa.v1.Generator) is never SERVING before the model is, which is what probes ask.
  if (options.health_port > 0) {
    // Its own server: only the health service, and no credentials to get past.
    grpc::ServerBuilder health_builder;
    health_builder.SetOption(std::make_unique<WithoutReflection>());
    // gRPC's default generic service answers every method but health's UNIMPLEMENTED; it also
    // makes this a callback server, which gRPC needs (a server without any service is refused).
    server->health_only_ = std::make_unique<grpc::CallbackGenericService>();
    health_builder.RegisterCallbackGenericService(server->health_only_.get());
    int bound_health_port = 0;
    health_builder.AddListeningPort(HostPort(options.host, options.health_port), grpc::InsecureServerCredentials(),
                                    &bound_health_port);
    health_builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    if (options.connection.handshake_timeout > absl::ZeroDuration()) {
      health_builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                                        Milliseconds(options.connection.handshake_timeout));
    }
    server->health_server_ = health_builder.BuildAndStart();
    if (server->health_server_ == nullptr || bound_health_port == 0) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", HostPort(options.host, options.health_port), " (in use?)"));
    }
    server->health_port_ = bound_health_port;
  }
  server->SetServing(false);
  for (grpc::Server* s : {server->server_.get(), server->health_server_.get()}) {
    if (s != nullptr) s->GetHealthCheckService()->SetServingStatus(kLivenessName, true);
  }
  const TransportSecurity& security = options.security;
  spdlog::info("listening on {} (gRPC: {}{}{}{}), {}{} (metrics); loading the model",
               HostPort(options.host, server->port_), security.tls() ? "TLS" : "plaintext",
               security.tls_client_ca_file.empty() ? "" : ", client certificates",
               security.token() ? ", bearer token" : "",
               server->gate_ ? absl::StrCat(", at most ", options.connection.max_connections, " connections") : "",
               server->health_port_ > 0
                   ? absl::StrCat(HostPort(options.host, server->health_port_), " (health only, plaintext), ")
                   : "",
               metrics_address);
  return server;
}

void MedusaServer::SetServing(bool serving) {
  for (grpc::Server* s : {server_.get(), health_server_.get()}) {
    if (s == nullptr) continue;
    grpc::HealthCheckServiceInterface* health = s->GetHealthCheckService();
    health->SetServingStatus("", serving);
    health->SetServingStatus(kServiceName, serving);
  }
}

absl::Status MedusaServer::LoadModel() {
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::Create(options_.engine));
  engine_ = std::move(engine);
  SchedulerOptions scheduler_options = options_.scheduler;
  scheduler_options.step_observer = [metrics = metrics_.get()](const StepReport& report) {
    metrics->ObserveStep(report);
  };
  scheduler_ = std::make_unique<Scheduler>(*engine_, scheduler_options);
  metrics_->set_load_probe([scheduler = scheduler_.get()] { return scheduler->load(); });
  const absl::Duration load_time = absl::Now() - start;

  metrics_->set_counting(false);
  absl::Status warm = WarmUpRequest(/*medusa=*/false);
  if (warm.ok() && engine_->medusa_tree() != nullptr) warm = WarmUpRequest(/*medusa=*/true);
  metrics_->set_counting(true);
  if (!warm.ok()) return absl::Status(warm.code(), absl::StrCat("warm-up: ", warm.message()));

  RequestLimits limits;
  limits.context_length = engine_->config().max_seq_len;
  limits.vocab_size = engine_->config().vocab_size;
  limits.max_prompt_bytes = PromptByteLimit(engine_->tokenizer(), limits.context_length);
  v1::ModelInfo info = BuildModelInfo(limits);
  const std::string model_name = info.name();
  const std::string tree_source = info.has_tree() ? info.tree().source() : std::string("off");
  service_->Activate(*engine_, *scheduler_, std::move(info), limits);
  SetServing(true);
  // After SERVING: a scrape that shows medusa_model_info finds the server answering.
  metrics_->SetModelInfo(model_name, tree_source);
  spdlog::info("serving {} ({}: {}, Medusa {}) on port {}: loaded in {:.2f} s, warmed up in {:.2f} s",
               engine_->config().name, engine_->backend().Name(), engine_->backend().MachineId(),
               MedusaSummary(*engine_), port_, absl::ToDoubleSeconds(load_time),
               absl::ToDoubleSeconds(absl::Now() - start - load_time));
  return absl::OkStatus();
}

absl::Status MedusaServer::WarmUpRequest(bool medusa) {
  const Tokenizer& tokenizer = engine_->tokenizer();
  GenerationRequest request;
  request.prompt_ids = tokenizer.Encode(kWarmUpPrompt, tokenizer.add_bos_default());
  request.max_tokens = kWarmUpTokens;
  request.ignore_eos = true;
  request.use_medusa = medusa;
  // A promise rather than absl::Notification: Debian's Abseil is not built with TSan, which
  // would then not see the hand-over and report the status as a race.
  std::promise<absl::Status> done;
  std::future<absl::Status> status = done.get_future();
  RequestCallbacks callbacks;
  callbacks.on_text = [](absl::Span<const int32_t>, std::string_view) {};
  callbacks.on_done = [&](absl::StatusOr<GenerationResult> result) { done.set_value(result.status()); };
  RETURN_IF_ERROR(scheduler_->Submit(std::move(request), std::move(callbacks)).status());
  return status.get();
}

v1::ModelInfo MedusaServer::BuildModelInfo(const RequestLimits& limits) const {
  const ModelConfig& config = engine_->config();
  v1::ModelInfo info;
  info.set_name(config.name);
  info.set_architecture(config.architecture);
  info.set_vocab_size(config.vocab_size);
  info.set_context_length(config.max_seq_len);
  info.set_num_layers(config.n_layers);
  info.set_dim(config.dim);
  info.set_has_chat_template(ChatFormatOf(engine_->tokenizer()).ok());
  info.set_backend(engine_->backend().Name());
  info.set_device(engine_->backend().MachineId());
  if (const MedusaTree* tree = engine_->medusa_tree()) {
    if (options_.expose_file_paths) info.mutable_heads()->set_path(options_.engine.heads_path);
    info.mutable_heads()->set_num_heads(engine_->backend().num_medusa_heads());
    v1::MedusaTreeInfo* tree_info = info.mutable_tree();
    tree_info->set_source(TreeSourceShown(engine_->tree_source(), options_.expose_file_paths));
    tree_info->set_num_nodes(tree->num_nodes());
    tree_info->set_depth(tree->max_depth());
    for (const std::vector<int>& path : tree->paths()) {
      tree_info->add_paths()->mutable_ranks()->Add(path.begin(), path.end());
    }
    if (const AutoTree* auto_tree = engine_->auto_tree()) {
      for (int batch : auto_tree->batch_sizes()) {
        (*tree_info->mutable_auto_nodes_by_batch_size())[batch] = auto_tree->TreeForBatch(batch).num_nodes();
      }
    }
  }
  const SchedulerLoad load = scheduler_->load();
  v1::Limits* out = info.mutable_limits();
  out->set_context_length(limits.context_length);
  out->set_max_stop_strings(limits.max_stop_strings);
  out->set_max_stop_string_bytes(limits.max_stop_string_bytes);
  out->set_max_message_bytes(options_.max_message_bytes);
  out->set_max_chat_messages(limits.max_chat_messages);
  out->set_max_prompt_bytes(limits.max_prompt_bytes);
  out->set_max_running(options_.scheduler.max_running);
  out->set_max_waiting(options_.scheduler.max_waiting);
  out->set_max_concurrent_streams(options_.max_concurrent_streams);
  out->set_kv_blocks_total(load.kv_blocks_total);
  out->set_kv_block_size(engine_->kv_block_size());
  return info;
}

bool MedusaServer::Shutdown() {
  if (shut_down_ || server_ == nullptr) return true;
  shut_down_ = true;
  const absl::Time start = absl::Now();
  // New calls are refused first, then health turns NOT_SERVING so load balancers stop
  // sending: whoever sees NOT_SERVING can count on a late call's UNAVAILABLE. The listener
  // stays open so that late calls get that clear answer instead of a refused connection.
  // Not the health service's own Shutdown(): it would turn every name NOT_SERVING, the
  // liveness name too, and a liveness probe failing mid-drain restarts the container and
  // cuts the streams the drain is there to finish. Nothing turns SERVING again after this.
  service_->StopAccepting();
  SetServing(false);
  const bool finished = scheduler_ == nullptr || scheduler_->Drain(options_.shutdown_grace);
  if (!finished) {
    spdlog::warn("shutdown: streams still running after the {:.1f} s grace period ended UNAVAILABLE",
                 absl::ToDoubleSeconds(options_.shutdown_grace));
  }
  // Every request is over: let the streams deliver their last messages, then close.
  server_->Shutdown(absl::ToChronoTime(absl::Now() + kFlushTime));
  if (health_server_ != nullptr) health_server_->Shutdown(absl::ToChronoTime(absl::Now()));
  spdlog::info("shut down in {:.2f} s", absl::ToDoubleSeconds(absl::Now() - start));
  return finished;
}

}  // namespace medusa::server
