// The CPU forward pass (see cpu_model.hpp for the precision policy).
#include "e2e/cpu_model.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include <fmt/format.h>
#include <Eigen/Core>

#include "codec/bf16.hpp"
#include "e2e/rope.hpp"

namespace df11::e2e {
namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rows of W per GEMM task: fixed, so the split is the same for any thread count and every
// output is the same bits whatever --threads says. (Not across machines: Eigen sizes its GEMM
// blocks from the cache sizes it detects, which can change the order of a long sum when a GEMM
// has several rows, the prefill's.)
constexpr int64_t kTileRows = 64;

inline float bf16f(uint16_t w) {
  return std::bit_cast<float>(static_cast<uint32_t>(w) << 16);
}

std::vector<float> to_float(const std::vector<uint16_t>& w) {
  std::vector<float> f(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) f[i] = bf16f(w[i]);
  return f;
}

std::size_t sz(int64_t v) {
  return static_cast<std::size_t>(v);
}

}  // namespace

CpuModel::CpuModel(const ModelShape& s, const Norms& norms, std::unique_ptr<HostProvider> provider,
                   int batch, int max_positions, int threads)
    : s_(s),
      provider_(std::move(provider)),
      batch_(batch),
      max_positions_(max_positions),
      pool_(threads) {
  validate(s, "cpu model");
  if (batch <= 0 || max_positions <= 0)
    throw Error("cpu model: batch and max_positions must be positive");
  scratch_.resize(sz(pool_.size()));
  for (std::size_t l = 0; l < sz(s.n_layers); ++l) {
    norm_in_.push_back(to_float(norms.input.at(l)));
    norm_post_.push_back(to_float(norms.post.at(l)));
  }
  norm_final_ = to_float(norms.final_norm);
  rope_ = rope_table(s, max_positions);
  const std::size_t cache = sz(batch) * sz(s.n_kv_heads) * sz(max_positions) * sz(s.head_dim);
  k_cache_.assign(sz(s.n_layers), std::vector<float>(cache));
  v_cache_.assign(sz(s.n_layers), std::vector<float>(cache));
  logits_.assign(sz(batch) * sz(s.vocab), 0.0f);
}

std::string CpuModel::describe() const {
  return "cpu " + provider_->describe();
}

MemoryStats CpuModel::memory() const {
  MemoryStats m;
  m.weight_bytes = provider_->weight_bytes();
  m.decode_buffer_bytes = provider_->decode_buffer_bytes();
  m.kv_cache_bytes =
      2 * sizeof(float) * k_cache_.size() * (k_cache_.empty() ? 0 : k_cache_[0].size());
  return m;
}

void CpuModel::argmax(std::vector<int32_t>& out) {
  argmax_rows(logits_, batch_, s_.vocab, out);
}

void CpuModel::forward(std::span<const int32_t> tokens, int n_new) {
  check_forward_args(*this, tokens, n_new);
  const int chunk = std::max(1, kMaxRowsPerPass / batch_);
  std::vector<int32_t> part;
  for (int t0 = 0; t0 < n_new; t0 += chunk) {
    const int tn = std::min(chunk, n_new - t0);
    part.resize(sz(batch_) * sz(tn));
    for (int b = 0; b < batch_; ++b) {
      std::copy_n(tokens.data() + sz(b) * sz(n_new) + sz(t0), tn, part.data() + sz(b) * sz(tn));
    }
    pass(part.data(), tn);
  }
}

void CpuModel::matmul(const float* x, int64_t m, int64_t k, const uint16_t* w, int64_t n, float* y,
                      int64_t ldy, bool accumulate) {
  const std::size_t tiles = sz((n + kTileRows - 1) / kTileRows);
  pool_.run(tiles, [&](std::size_t tile, int worker) {
    const int64_t n0 = static_cast<int64_t>(tile) * kTileRows;
    const int64_t nt = std::min(kTileRows, n - n0);
    std::vector<float>& buf = scratch_[sz(worker)];
    buf.resize(sz(nt) * sz(k));
    const uint16_t* src = w + sz(n0) * sz(k);
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = bf16f(src[i]);
    const Eigen::Map<const RowMat> X(x, m, k);
    const Eigen::Map<const RowMat> W(buf.data(), nt, k);
    Eigen::Map<RowMat, 0, Eigen::OuterStride<>> Y(y + n0, m, nt, Eigen::OuterStride<>(ldy));
    if (accumulate) {
      Y.noalias() += X * W.transpose();
    } else {
      Y.noalias() = X * W.transpose();
    }
  });
}

void CpuModel::rmsnorm(const float* x, int64_t rows, int64_t x_stride, const std::vector<float>& w,
                       float* out) {
  const int64_t h = s_.hidden;
  const auto eps = static_cast<float>(s_.rms_norm_eps);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + sz(r) * sz(x_stride);
    float ss = 0.0f;
    for (int64_t i = 0; i < h; ++i) ss += xr[i] * xr[i];
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(h) + eps);
    float* o = out + sz(r) * sz(h);
    for (int64_t i = 0; i < h; ++i) o[i] = w[sz(i)] * (xr[i] * inv);
  }
}

void CpuModel::pass(const int32_t* tokens, int t_new) {
  const ModelShape& s = s_;
  const int64_t rows = int64_t{batch_} * t_new;
  const int64_t H = s.hidden, D = s.head_dim, half = D / 2, Hq = s.n_heads, Hkv = s.n_kv_heads;
  const int64_t nq = Hq * D, nkv = Hkv * D, nqkv = nq + 2 * nkv, I = s.intermediate;
  const int pos0 = position_;
  h_.resize(sz(rows * H));
  x_.resize(sz(rows * H));
  qkv_.resize(sz(rows * nqkv));
  att_.resize(sz(rows * nq));
  gu_.resize(sz(rows * 2 * I));
  act_.resize(sz(rows * I));

  {
    const uint16_t* E =
        provider_->acquire(embed_unit(s)) + provider_->map(embed_unit(s)).slices[0].offset;
    for (int64_t r = 0; r < rows; ++r) {
      const uint16_t* e = E + sz(tokens[r]) * sz(H);
      for (int64_t i = 0; i < H; ++i) h_[sz(r * H + i)] = bf16f(e[i]);
    }
  }

  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (int64_t l = 0; l < s.n_layers; ++l) {
    const uint16_t* W = provider_->acquire(static_cast<int>(l));
    const UnitMap& m = provider_->map(static_cast<int>(l));
    auto mat = [&](Role r) { return W + m.slices[r].offset; };

    rmsnorm(h_.data(), rows, H, norm_in_[sz(l)], x_.data());
    if (m.qkv_fused()) {
      matmul(x_.data(), rows, H, mat(q_proj), nqkv, qkv_.data(), nqkv, false);
    } else {
      matmul(x_.data(), rows, H, mat(q_proj), nq, qkv_.data(), nqkv, false);
      matmul(x_.data(), rows, H, mat(k_proj), nkv, qkv_.data() + nq, nqkv, false);
      matmul(x_.data(), rows, H, mat(v_proj), nkv, qkv_.data() + nq + nkv, nqkv, false);
    }

    // Rotary embeddings (rotate_half convention) on q and k; k and v into the cache.
    float* kc = k_cache_[sz(l)].data();
    float* vc = v_cache_[sz(l)].data();
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = r / t_new, pos = pos0 + r % t_new;
      const float* cs = rope_.data() + sz(pos) * sz(half) * 2;
      float* row = qkv_.data() + sz(r * nqkv);
      for (int64_t head = 0; head < Hq + Hkv; ++head) {
        float* v = row + head * D;
        for (int64_t i = 0; i < half; ++i) {
          const float c = cs[2 * i], sn = cs[2 * i + 1];
          const float x1 = v[i], x2 = v[i + half];
          v[i] = x1 * c - x2 * sn;
          v[i + half] = x2 * c + x1 * sn;
        }
      }
      for (int64_t kh = 0; kh < Hkv; ++kh) {
        const std::size_t at = sz(((b * Hkv + kh) * max_positions_ + pos) * D);
        std::memcpy(kc + at, row + nq + kh * D, sz(D) * sizeof(float));
        std::memcpy(vc + at, row + nq + nkv + kh * D, sz(D) * sizeof(float));
      }
    }

    // Causal grouped-query attention over the cache, one task per (row of the batch, query head).
    const int64_t group = Hq / Hkv;
    pool_.run(sz(batch_ * Hq), [&](std::size_t task, int worker) {
      const int64_t b = static_cast<int64_t>(task) / Hq, hq = static_cast<int64_t>(task) % Hq,
                    kh = hq / group;
      const float* K = kc + sz((b * Hkv + kh) * max_positions_ * D);
      const float* V = vc + sz((b * Hkv + kh) * max_positions_ * D);
      std::vector<float>& p = scratch_[sz(worker)];
      p.resize(sz(max_positions_) + sz(D));
      float* acc = p.data() + max_positions_;
      for (int64_t t = 0; t < t_new; ++t) {
        const int64_t n = pos0 + t + 1;  // causal: positions 0..pos0+t
        const float* q = qkv_.data() + sz((b * t_new + t) * nqkv + hq * D);
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; ++j) {
          float d = 0.0f;
          for (int64_t i = 0; i < D; ++i) d += q[i] * K[j * D + i];
          p[sz(j)] = d * scale;
          mx = std::max(mx, p[sz(j)]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < n; ++j) {
          p[sz(j)] = std::exp(p[sz(j)] - mx);
          sum += p[sz(j)];
        }
        std::fill_n(acc, D, 0.0f);
        for (int64_t j = 0; j < n; ++j)
          for (int64_t i = 0; i < D; ++i) acc[i] += p[sz(j)] * V[j * D + i];
        float* o = att_.data() + sz((b * t_new + t) * nq + hq * D);
        for (int64_t i = 0; i < D; ++i) o[i] = acc[i] / sum;
      }
    });
    matmul(att_.data(), rows, nq, mat(o_proj), H, h_.data(), H, true);

    rmsnorm(h_.data(), rows, H, norm_post_[sz(l)], x_.data());
    if (m.gate_up_fused()) {
      matmul(x_.data(), rows, H, mat(gate_proj), 2 * I, gu_.data(), 2 * I, false);
    } else {
      matmul(x_.data(), rows, H, mat(gate_proj), I, gu_.data(), 2 * I, false);
      matmul(x_.data(), rows, H, mat(up_proj), I, gu_.data() + I, 2 * I, false);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float* g = gu_.data() + sz(r * 2 * I);
      const float* u = g + I;
      float* a = act_.data() + sz(r * I);
      for (int64_t i = 0; i < I; ++i) a[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];  // silu(g) * u
    }
    matmul(act_.data(), rows, I, mat(down_proj), H, h_.data(), H, true);
  }

  // Final norm and lm_head on the last position of each row only.
  xf_.resize(sz(batch_) * sz(H));
  rmsnorm(h_.data() + sz((t_new - 1) * H), batch_, int64_t{t_new} * H, norm_final_, xf_.data());
  const uint16_t* LM =
      provider_->acquire(lm_head_unit(s)) + provider_->map(lm_head_unit(s)).slices[0].offset;
  matmul(xf_.data(), batch_, H, LM, s.vocab, logits_.data(), s.vocab, false);
  position_ += t_new;
}

}  // namespace df11::e2e
