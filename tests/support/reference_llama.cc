#include "tests/support/reference_llama.h"

#include <algorithm>
#include <cmath>
#include <utility>

namespace medusa::testing {
namespace {

std::vector<double> RefRmsNorm(const std::vector<double>& x, const std::vector<float>& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / std::sqrt(ss / x.size() + eps);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] * inv * w[i];
  return out;
}

// y = W x with W [rows, cols].
std::vector<double> RefMatVec(const std::vector<float>& w, const std::vector<double>& x, int rows) {
  const size_t cols = x.size();
  std::vector<double> y(rows, 0.0);
  for (int r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) y[r] += static_cast<double>(w[r * cols + c]) * x[c];
  }
  return y;
}

void RefRope(std::vector<double>* v, int n_heads, int head_dim, int pos, double theta) {
  for (int h = 0; h < n_heads; ++h) {
    for (int i = 0; i < head_dim / 2; ++i) {
      const double angle = pos * std::pow(theta, -2.0 * i / head_dim);
      double& a = (*v)[h * head_dim + 2 * i];
      double& b = (*v)[h * head_dim + 2 * i + 1];
      const double a0 = a, b0 = b;
      a = a0 * std::cos(angle) - b0 * std::sin(angle);
      b = a0 * std::sin(angle) + b0 * std::cos(angle);
    }
  }
}

}  // namespace

ModelConfig SmallConfig(int dim, int hidden, int layers, int heads, int kv_heads, int vocab) {
  ModelConfig c;
  c.name = "random";
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = dim / heads;
  c.vocab_size = vocab;
  c.max_seq_len = 256;
  c.rms_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  return c;
}

std::vector<float> Uniform(std::mt19937* rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(*rng);
  return v;
}

ModelWeights RandomWeights(const ModelConfig& c, uint32_t seed) {
  std::mt19937 rng(seed);
  auto matrix = [&](int rows, int cols) {
    const float a = 1.7f / std::sqrt(static_cast<float>(cols));
    return Uniform(&rng, static_cast<size_t>(rows) * cols, -a, a);
  };
  ModelWeights w;
  w.token_embedding = Uniform(&rng, static_cast<size_t>(c.vocab_size) * c.dim, -1.0f, 1.0f);
  for (int l = 0; l < c.n_layers; ++l) {
    LayerWeights L;
    L.attn_norm = Uniform(&rng, c.dim, 0.8f, 1.2f);
    L.wq = matrix(c.q_dim(), c.dim);
    L.wk = matrix(c.kv_dim(), c.dim);
    L.wv = matrix(c.kv_dim(), c.dim);
    L.wo = matrix(c.dim, c.q_dim());
    L.ffn_norm = Uniform(&rng, c.dim, 0.8f, 1.2f);
    L.w_gate = matrix(c.hidden_dim, c.dim);
    L.w_down = matrix(c.dim, c.hidden_dim);
    L.w_up = matrix(c.hidden_dim, c.dim);
    w.layers.push_back(std::move(L));
  }
  w.final_norm = Uniform(&rng, c.dim, 0.8f, 1.2f);
  if (!c.tied_classifier) w.classifier = matrix(c.vocab_size, c.dim);
  return w;
}

RefOutput RefForward(const ModelConfig& c, const ModelWeights& w, const std::vector<int>& tokens) {
  const int hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
  std::vector<std::vector<std::vector<double>>> keys(c.n_layers), values(c.n_layers);
  RefOutput out;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    std::vector<double> x(w.token_embedding.values.begin() + static_cast<size_t>(tokens[pos]) * c.dim,
                          w.token_embedding.values.begin() + static_cast<size_t>(tokens[pos] + 1) * c.dim);
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& L = w.layers[l];
      std::vector<double> xn = RefRmsNorm(x, L.attn_norm, c.rms_eps);
      std::vector<double> q = RefMatVec(L.wq.values, xn, c.q_dim());
      std::vector<double> k = RefMatVec(L.wk.values, xn, c.kv_dim());
      std::vector<double> v = RefMatVec(L.wv.values, xn, c.kv_dim());
      RefRope(&q, c.n_heads, hd, static_cast<int>(pos), c.rope_theta);
      RefRope(&k, c.n_kv_heads, hd, static_cast<int>(pos), c.rope_theta);
      keys[l].push_back(k);
      values[l].push_back(v);
      std::vector<double> att(c.q_dim(), 0.0);
      for (int h = 0; h < c.n_heads; ++h) {
        const int kvh = h / group;
        std::vector<double> scores(pos + 1);
        double max_score = -1e300;
        for (size_t j = 0; j <= pos; ++j) {
          double s = 0;
          for (int d = 0; d < hd; ++d) s += q[h * hd + d] * keys[l][j][kvh * hd + d];
          scores[j] = s / std::sqrt(static_cast<double>(hd));
          max_score = std::max(max_score, scores[j]);
        }
        double sum = 0;
        for (double& s : scores) sum += (s = std::exp(s - max_score));
        for (size_t j = 0; j <= pos; ++j) {
          for (int d = 0; d < hd; ++d) att[h * hd + d] += scores[j] / sum * values[l][j][kvh * hd + d];
        }
      }
      std::vector<double> o = RefMatVec(L.wo.values, att, c.dim);
      for (int i = 0; i < c.dim; ++i) x[i] += o[i];
      xn = RefRmsNorm(x, L.ffn_norm, c.rms_eps);
      std::vector<double> g = RefMatVec(L.w_gate.values, xn, c.hidden_dim);
      std::vector<double> u = RefMatVec(L.w_up.values, xn, c.hidden_dim);
      for (int i = 0; i < c.hidden_dim; ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      std::vector<double> d = RefMatVec(L.w_down.values, g, c.dim);
      for (int i = 0; i < c.dim; ++i) x[i] += d[i];
    }
    std::vector<double> h = RefRmsNorm(x, w.final_norm, c.rms_eps);
    out.logits.push_back(
        RefMatVec(c.tied_classifier ? w.token_embedding.values : w.classifier.values, h, c.vocab_size));
    out.hidden.push_back(std::move(h));
  }
  return out;
}

double RelativeError(const float* a, const std::vector<double>& b) {
  double max_diff = 0, scale = 1;
  for (size_t i = 0; i < b.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return max_diff / scale;
}

double RelativeError(const float* a, const float* b, size_t n) {
  return RelativeError(a, std::vector<double>(b, b + n));
}

}  // namespace medusa::testing
