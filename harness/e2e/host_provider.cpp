// CPU weight providers: resident BF16, and DF11 decoded per unit into one reused buffer.
#include "e2e/host_provider.hpp"

#include <chrono>

#include <fmt/format.h>

#include "codec/cpu_decoder.hpp"
#include "decoder.hpp"

namespace df11::e2e {

void HostProvider::set_map(const UnitFeed& feed) {
  const auto u = static_cast<std::size_t>(feed.unit());
  if (u >= maps_.size()) maps_.resize(u + 1);
  maps_[u] = feed.map();
}

namespace {

class Bf16HostProvider final : public HostProvider {
 public:
  explicit Bf16HostProvider(const ModelShape& s) : units_(static_cast<std::size_t>(n_units(s))) {}
  void add(UnitFeed& feed) override {
    set_map(feed);
    // Shared with the feed, not copied (a feed cache may keep it for later runs).
    units_.at(static_cast<std::size_t>(feed.unit())) = feed.shared_bf16();
  }
  const uint16_t* acquire(int unit) override {
    const auto& u = units_.at(static_cast<std::size_t>(unit));
    if (!u || u->empty()) throw Error(fmt::format("bf16 provider: unit {} was never loaded", unit));
    return u->data();
  }
  WeightsKind kind() const override { return WeightsKind::bf16; }
  std::string describe() const override { return "bf16"; }
  uint64_t weight_bytes() const override {
    uint64_t b = 0;
    for (const auto& u : units_) b += u ? 2 * u->size() : 0;
    return b;
  }

 private:
  std::vector<std::shared_ptr<const std::vector<uint16_t>>> units_;
};

class Df11HostProvider final : public HostProvider {
 public:
  Df11HostProvider(const ModelShape& s, const std::string& variant, int threads)
      : units_(static_cast<std::size_t>(n_units(s))), threads_(threads) {
    if (variant.empty()) {
      layout_ = Layout::df11();
      return;
    }
    dec::register_all(registry_);
    decoder_ = registry_.find(variant);
    if (!decoder_)
      throw Error(fmt::format("no decoder variant '{}' (see `df11 variants`)", variant));
    layout_ = decoder_->layout();
  }
  void add(UnitFeed& feed) override {
    set_map(feed);
    // Shared with the feed, not copied (a feed cache may keep it for later runs).
    const auto& e = units_.at(static_cast<std::size_t>(feed.unit())) = feed.shared_encoded(layout_);
    if (decoder_) {
      const dec::Status ok = decoder_->can_implement(*e);
      if (!ok.ok) throw Error(fmt::format("{}: {}", decoder_->name(), ok.reason));
    }
    // One buffer for all units, sized for the largest, as the official runtime allocates it
    // (scratch: a larger one replaces it, nothing copied).
    if (e->n_elements > buffer_.size()) {
      std::vector<uint16_t> larger;
      reserve_prefaulted(larger, e->n_elements, threads_, Pages::huge);
      larger.resize(e->n_elements);
      buffer_.swap(larger);
    }
  }
  const uint16_t* acquire(int unit) override {
    const auto& held = units_.at(static_cast<std::size_t>(unit));
    if (!held) throw Error(fmt::format("df11 provider: unit {} was never loaded", unit));
    const EncodedUnit& e = *held;
    const auto t0 = std::chrono::steady_clock::now();
    const std::span<uint16_t> out(buffer_.data(), e.n_elements);
    if (decoder_) {
      decoder_->decode_host(e, out);
    } else {
      decode_cpu(e, out, threads_);
    }
    decode_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return buffer_.data();
  }
  WeightsKind kind() const override { return WeightsKind::df11; }
  std::string describe() const override {
    return decoder_ ? fmt::format("df11 ({}, host emulation)", decoder_->name())
                    : "df11 (decode_cpu)";
  }
  uint64_t weight_bytes() const override {
    uint64_t b = 2 * buffer_.size();
    for (const auto& u : units_) b += u ? u->stored_bytes() : 0;
    return b;
  }
  uint64_t decode_buffer_bytes() const override { return 2 * buffer_.size(); }

 private:
  std::vector<std::shared_ptr<const EncodedUnit>> units_;
  std::vector<uint16_t> buffer_;
  int threads_;
  Layout layout_;
  dec::Registry registry_;
  const dec::Decoder* decoder_ = nullptr;
};

}  // namespace

std::unique_ptr<HostProvider> make_host_provider(WeightsKind kind, const ModelShape& shape,
                                                 const std::string& variant, int threads) {
  switch (kind) {
    case WeightsKind::bf16:
      return std::make_unique<Bf16HostProvider>(shape);
    case WeightsKind::df11:
      return std::make_unique<Df11HostProvider>(shape, variant, threads);
    case WeightsKind::cpu_offload:
      break;
  }
  throw Error(
      "--weights cpu-offload copies host weights to the GPU per block: it needs --backend cuda");
}

}  // namespace df11::e2e
