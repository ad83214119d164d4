// The CUDA forward pass's small kernels (harness/e2e/kernel_bodies.cuh) on the host SIMT
// executor, with the launch shapes of cuda_kernels.cu, against plain double-precision
// references: embedding, RMSNorm, rotary embeddings + KV-cache store (layout, untouched
// entries), causal grouped-query attention, SwiGLU, argmax (ties, NaN). BF16 results may differ
// from the rounded reference by one BF16 step (float vs double arithmetic, and the GPU's
// rsqrtf/expf); everything else is exact.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "codec/bf16.hpp"
#include "datasets/synthetic.hpp"
#include "e2e/kernel_bodies.cuh"
#include "simt/simt_host.hpp"

using namespace df11;
namespace body = df11::e2e::body;

namespace {

double bf(uint16_t h) { return body::bf2f(h); }

// |got - want| within one BF16 step of want (8 significant bits), or a tiny absolute amount.
bool close_bf16(uint16_t got, double want) {
  const double g = bf(got);
  return std::abs(g - want) <= std::max(std::abs(want) * (1.0 / 128), 1e-6);
}

std::vector<float> normals(std::size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

std::vector<uint16_t> bf16_normals(std::size_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<uint16_t> v;
  for (float x : normals(n, seed, scale)) v.push_back(float_to_bf16(x));
  return v;
}

}  // namespace

TEST_CASE("simt e2e: embedding rows are the table's rows, gathered from pieces of the table", "[e2e][simt]") {
  const int64_t hidden = 300, vocab = 50;
  const auto table = bf16_normals(static_cast<std::size_t>(vocab * hidden), 1);
  const std::vector<int32_t> tokens{3, 0, 49, 3, 17};
  const auto rows = static_cast<unsigned>(tokens.size());
  auto gather = [&](int64_t r0, int64_t r1, std::vector<float>& out) {  // table rows r0..r1-1 only
    simt::launch({rows}, {256}, 0, [&](uint8_t*) {
      body::embed(tokens.data(), table.data() + r0 * hidden, hidden, out.data(), r0, r1);
    });
  };
  std::vector<float> whole(rows * hidden, -1.0f), pieces(rows * hidden, -1.0f), one(rows * hidden, -1.0f);
  gather(0, vocab, whole);
  for (int64_t r0 = 0; r0 < vocab; r0 += 16) gather(r0, std::min<int64_t>(vocab, r0 + 16), pieces);  // as in slices
  gather(3, 4, one);  // as for one distinct token: only its rows change
  for (std::size_t r = 0; r < tokens.size(); ++r)
    for (int64_t d = 0; d < hidden; ++d) {
      const float want = body::bf2f(table[tokens[r] * hidden + d]);
      REQUIRE(whole[r * hidden + d] == want);
      REQUIRE(pieces[r * hidden + d] == want);
      REQUIRE(one[r * hidden + d] == (tokens[r] == 3 ? want : -1.0f));
    }
}

TEST_CASE("simt e2e: RMSNorm of strided rows", "[e2e][simt]") {
  const int64_t rows = 3, hidden = 1000, stride = 1100;
  const auto x = normals(static_cast<std::size_t>(rows * stride), 2, 3.0f);
  const auto w = bf16_normals(hidden, 3);
  std::vector<uint16_t> out(rows * hidden, 0xFFFF);
  simt::launch({rows}, {256}, 32 * sizeof(float), [&](uint8_t* smem) {
    body::rmsnorm(x.data(), stride, w.data(), hidden, 1e-5f, out.data(), reinterpret_cast<float*>(smem));
  });
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t d = 0; d < hidden; ++d) ss += double(x[r * stride + d]) * x[r * stride + d];
    const double inv = 1.0 / std::sqrt(ss / hidden + 1e-5);
    for (int64_t d = 0; d < hidden; ++d) {
      INFO("row " << r << " d " << d);
      REQUIRE(close_bf16(out[r * hidden + d], bf(w[d]) * x[r * stride + d] * inv));
    }
  }
}

TEST_CASE("simt e2e: rotary embeddings rotate q in place and fill the KV cache at their positions",
          "[e2e][simt]") {
  const int batch = 2, t_new = 3, pos0 = 4, n_heads = 4, n_kv = 2, hd = 16, half = hd / 2, maxp = 10;
  const int64_t ld = (n_heads + 2 * n_kv) * hd + 5;  // padded rows
  auto qkv = normals(static_cast<std::size_t>(batch * t_new * ld), 4);
  const auto before = qkv;
  std::vector<float> rope(static_cast<std::size_t>(maxp * half * 2));
  for (int p = 0; p < maxp; ++p)
    for (int i = 0; i < half; ++i) {
      const double a = p * std::pow(10000.0, -2.0 * i / hd);
      rope[(p * half + i) * 2] = static_cast<float>(std::cos(a));
      rope[(p * half + i) * 2 + 1] = static_cast<float>(std::sin(a));
    }
  const std::size_t cache_n = static_cast<std::size_t>(batch * n_kv * maxp * hd);
  std::vector<uint16_t> kc(cache_n, 0xDEAD), vc(cache_n, 0xDEAD);
  simt::launch({static_cast<unsigned>(batch * t_new)}, {256}, 0, [&](uint8_t*) {
    body::rope_store(qkv.data(), ld, t_new, pos0, n_heads, n_kv, hd, rope.data(), kc.data(), vc.data(), maxp);
  });
  std::vector<bool> written(cache_n, false);
  for (int b = 0; b < batch; ++b)
    for (int t = 0; t < t_new; ++t) {
      const int r = b * t_new + t, pos = pos0 + t;
      const float* in = before.data() + r * ld;
      const float* got = qkv.data() + r * ld;
      for (int head = 0; head < n_heads + n_kv; ++head)
        for (int i = 0; i < half; ++i) {
          const double c = rope[(pos * half + i) * 2], s = rope[(pos * half + i) * 2 + 1];
          const double x1 = in[head * hd + i], x2 = in[head * hd + i + half];
          const double y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
          INFO("b " << b << " t " << t << " head " << head << " i " << i);
          if (head < n_heads) {
            REQUIRE(std::abs(got[head * hd + i] - y1) < 1e-5);
            REQUIRE(std::abs(got[head * hd + i + half] - y2) < 1e-5);
          } else {
            const std::size_t at = ((static_cast<std::size_t>(b) * n_kv + (head - n_heads)) * maxp + pos) * hd;
            REQUIRE(close_bf16(kc[at + i], y1));
            REQUIRE(close_bf16(kc[at + i + half], y2));
            written[at + i] = written[at + i + half] = true;
          }
        }
      for (int kh = 0; kh < n_kv; ++kh)
        for (int d = 0; d < hd; ++d) {
          const std::size_t at = ((static_cast<std::size_t>(b) * n_kv + kh) * maxp + pos) * hd + d;
          REQUIRE(vc[at] == float_to_bf16(in[(n_heads + n_kv + kh) * hd + d]));
        }
      // v heads and the padding are not rotated.
      for (int64_t j = (n_heads + n_kv) * hd; j < ld; ++j) REQUIRE(got[j] == in[j]);
    }
  for (std::size_t i = 0; i < cache_n; ++i) {
    const bool pos_written = written[i];
    if (!pos_written) REQUIRE(kc[i] == 0xDEAD);  // nothing outside the new positions
  }
}

namespace {

// attention() on the host executor against a double-precision reference: batch 2, three new
// positions after pos0 = 37 (rows attend to 38..40 positions), 4 query heads over 2 KV heads.
void check_attention(int hd) {
  const int batch = 2, t_new = 3, pos0 = 37, n_heads = 4, n_kv = 2, maxp = 48;
  const int64_t ld = (n_heads + 2 * n_kv) * hd;
  const auto qkv = normals(static_cast<std::size_t>(batch * t_new * ld), 5);
  const auto kc = bf16_normals(static_cast<std::size_t>(batch * n_kv * maxp * hd), 6);
  const auto vc = bf16_normals(static_cast<std::size_t>(batch * n_kv * maxp * hd), 7);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::vector<uint16_t> out(static_cast<std::size_t>(batch * t_new * n_heads * hd), 0xFFFF);
  const std::size_t smem = sizeof(float) * body::attention_smem_floats(hd, pos0 + t_new);
  simt::launch({t_new, n_heads, batch}, {body::kAttnThreads}, smem, [&](uint8_t* sm) {
    body::attention(qkv.data(), ld, kc.data(), vc.data(), t_new, pos0, n_heads, n_kv, hd, maxp, scale, out.data(),
                    reinterpret_cast<float*>(sm));
  });
  for (int b = 0; b < batch; ++b)
    for (int t = 0; t < t_new; ++t)
      for (int h = 0; h < n_heads; ++h) {
        const int kh = h / (n_heads / n_kv), n = pos0 + t + 1;
        const float* q = qkv.data() + (b * t_new + t) * ld + h * hd;
        const std::size_t base = (static_cast<std::size_t>(b) * n_kv + kh) * maxp * hd;
        std::vector<double> p(n);
        double m = -1e300, sum = 0;
        for (int j = 0; j < n; ++j) {
          double s = 0;
          for (int d = 0; d < hd; ++d) s += double(q[d]) * bf(kc[base + j * hd + d]);
          p[j] = s * scale;
          m = std::max(m, p[j]);
        }
        for (auto& x : p) sum += (x = std::exp(x - m));
        for (int d = 0; d < hd; ++d) {
          double acc = 0;
          for (int j = 0; j < n; ++j) acc += p[j] * bf(vc[base + j * hd + d]);
          INFO("head_dim " << hd << " b " << b << " t " << t << " h " << h << " d " << d);
          REQUIRE(close_bf16(out[((b * t_new + t) * n_heads + h) * hd + d], acc / sum));
        }
      }
}

}  // namespace

// head_dim 64: the output by warps over positions, two values a lane (its barriers are the ones
// the ThreadSanitizer pass checks).
TEST_CASE("simt e2e: causal grouped-query attention over the cache", "[e2e][simt]") { check_attention(64); }

// The other head sizes (outside the TSan pass's names: the same barriers): 128 and 256 (four and
// eight values a lane; Mistral's is 128), 48 (the output a thread a dimension, the scores in
// loads of four) and 30 (both one value at a time).
TEST_CASE("simt e2e (head sizes): attention with four and eight values a lane, and the one-by-one paths",
          "[e2e][simt]") {
  for (const int hd : {128, 256, 48, 30}) check_attention(hd);
}

TEST_CASE("simt e2e: SwiGLU over a grid-stride loop", "[e2e][simt]") {
  const int64_t rows = 3, inter = 700;
  const auto gu = normals(static_cast<std::size_t>(rows * 2 * inter), 8, 2.0f);
  std::vector<uint16_t> out(rows * inter, 0xFFFF);
  simt::launch({3}, {256}, 0, [&](uint8_t*) { body::swiglu(gu.data(), rows, inter, out.data()); });  // < n threads
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < inter; ++i) {
      const double g = gu[r * 2 * inter + i], u = gu[r * 2 * inter + inter + i];
      REQUIRE(close_bf16(out[r * inter + i], g / (1 + std::exp(-g)) * u));
    }
}

TEST_CASE("simt e2e: argmax takes the first maximum and never a NaN", "[e2e][simt]") {
  const int64_t vocab = 5000;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> logits = normals(static_cast<std::size_t>(5 * vocab), 9);
  logits[0 * vocab + 4321] = 50.0f;                                 // row 0: a clear maximum
  logits[1 * vocab + 2000] = logits[1 * vocab + 777] = 60.0f;       // row 1: a tie -> 777
  logits[1 * vocab + 4999] = 60.0f;
  logits[2 * vocab + 10] = nan;                                     // row 2: NaN above everything
  logits[2 * vocab + 11] = 70.0f;
  logits[2 * vocab + 12] = nan;
  for (int64_t i = 0; i < vocab; ++i) logits[3 * vocab + i] = nan;  // row 3: all NaN -> 0
  for (int64_t i = 0; i < vocab; ++i) logits[4 * vocab + i] = -1.0f; // row 4: all equal -> 0
  std::vector<int32_t> out(5, -7);
  simt::launch({5}, {body::kArgmaxThreads}, 32 * (sizeof(float) + sizeof(int64_t)), [&](uint8_t* sm) {
    body::argmax(logits.data(), vocab, out.data(), reinterpret_cast<float*>(sm + 32 * sizeof(int64_t)),
                 reinterpret_cast<int64_t*>(sm));
  });
  CHECK(out == std::vector<int32_t>{4321, 777, 11, 0, 0});
}

TEST_CASE("simt e2e: synthetic weights generated by the kernel body are the host generator's bits", "[e2e][simt]") {
  namespace synth = df11::synth;
  // Slices as cuda_synth_filler makes them: a window [first, first + n) that crosses an RNG block
  // boundary, with fewer threads than elements (the grid-stride loop) and a partial last block.
  const uint64_t first = synth::kBlockElements - 700, n = 1500;
  const synth::MatrixRecipe r = synth::matrix_recipe("self_attn.k_proj", 5120, 31, 4);
  std::vector<uint16_t> host(first + n);
  synth::fill_weights(host, "self_attn.k_proj", 5120, 31, 4, 1);
  std::vector<uint16_t> out(n + 1, 0xBEEF);  // one guard element past the end
  simt::launch({3}, {64}, sizeof(synth::AliasColumn) * 256, [&](uint8_t* smem) {
    body::synth_fill(out.data(), n, first, r.columns, r.seed, r.stream_id, reinterpret_cast<synth::AliasColumn*>(smem));
  });
  CHECK(std::equal(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n), host.begin() + static_cast<std::ptrdiff_t>(first)));
  CHECK(out[n] == 0xBEEF);
}
