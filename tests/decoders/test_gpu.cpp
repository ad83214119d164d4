// GPU tests (ctest label `gpu`): every variant uploaded and launched on the device with its
// output poisoned first, bit for bit against the input; ranges; malformed units refused before
// any launch. Exits 77 (ctest: skipped) when there is no device.
#include <cstdio>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>

#include "codec/bf16.hpp"
#include "codec/encoder.hpp"
#include "common/compare.hpp"
#include "gpu_ranges.hpp"
#include "common/cuda_util.hpp"
#include "datasets/synthetic.hpp"
#include "decoder.hpp"
#include "fused/fused_gemv.hpp"
#include "helpers.hpp"
#include "official_ptx/official_ptx.hpp"

using namespace df11;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAIL: %s\n", what.c_str());
  }
}

std::vector<uint16_t> run_on_device(const dec::Decoder& d, const EncodedUnit& enc, uint64_t lo, uint64_t hi,
                                    dec::Order order = dec::Order::ascending) {
  if (lo > hi) throw std::logic_error("test_gpu: range [" + std::to_string(lo) + ", " + std::to_string(hi) + ") is reversed");
  cuda::Stream s;
  auto img = d.upload(enc, s.get());
  cuda::DeviceBuffer<uint16_t> out(std::max<uint64_t>(hi - lo, 1));
  CUDA_CHECK(cudaMemsetAsync(out.get(), 0xFF, out.bytes(), s.get()));  // poison
  d.launch(*img, out.get(), lo, hi, s.get(), order);
  CUDA_CHECK(cudaStreamSynchronize(s.get()));
  std::vector<uint16_t> host(hi - lo);
  if (!host.empty()) CUDA_CHECK(cudaMemcpy(host.data(), out.get(), host.size() * 2, cudaMemcpyDeviceToHost));
  return host;
}

// Fused decode + GEMV on the device (each decode, in its layout): decoding gives bit for bit what
// the same kernels give on the BF16 weights, and both are within rounding of a double reference.
void check_fused(const Unit& u, int batch, dec::FusedDecode decode) {
  const EncodedUnit enc = encode(u.view(), dec::fused_spec(decode).layout(), 0);
  std::vector<dec::GemvMatrix> mats;
  std::vector<uint16_t> flat;
  uint64_t off = 0;
  for (const auto& t : u.tensors) {
    mats.push_back({off, t.shape[0], t.shape[1]});
    off += t.data.size();
    flat.insert(flat.end(), t.data.begin(), t.data.end());
  }
  const std::string what = "fused gemv (" + dec::fused_spec(decode).name() + ") on " + u.name + " batch " +
                           std::to_string(batch);
  try {
    cuda::Stream s;
    dec::FusedGemvDevice dev(enc, mats, batch, s.get(), dec::FusedGemvDevice::Source::own_image, nullptr, decode);
    const auto w = cuda::DeviceBuffer<uint16_t>::from(flat, s.get());
    std::mt19937_64 rng(static_cast<uint64_t>(batch));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<std::vector<uint16_t>> xh;
    std::vector<cuda::DeviceBuffer<uint16_t>> xd, yd, yr;
    std::vector<const uint16_t*> xp;
    std::vector<uint16_t*> ydp, yrp;
    for (const auto& m : mats) {
      std::vector<uint16_t> x(static_cast<std::size_t>(batch * m.in));
      for (auto& v : x) v = float_to_bf16(nd(rng));
      xd.push_back(cuda::DeviceBuffer<uint16_t>::from(x, s.get()));
      xh.push_back(std::move(x));
      yd.emplace_back(static_cast<std::size_t>(batch * m.out));
      yr.emplace_back(static_cast<std::size_t>(batch * m.out));
      CUDA_CHECK(cudaMemsetAsync(yd.back().get(), 0xFF, yd.back().bytes(), s.get()));
      CUDA_CHECK(cudaMemsetAsync(yr.back().get(), 0xFF, yr.back().bytes(), s.get()));
      xp.push_back(xd.back().get());
      ydp.push_back(yd.back().get());
      yrp.push_back(yr.back().get());
    }
    dev.run(xp, ydp, batch, s.get());
    dev.run(xp, yrp, batch, s.get(), w.get());
    // The float sums too: their rounding to BF16 hides most changes of summation order (such as
    // a whole-unit path that strayed from the loop's order).
    std::vector<cuda::DeviceBuffer<float>> fd, fr;
    auto float_run = [&](const uint16_t* weights, std::vector<cuda::DeviceBuffer<float>>& out) {
      dec::GemvRun run;
      run.batch = batch;
      run.weights = weights;
      for (std::size_t i = 0; i < mats.size(); ++i) {
        out.emplace_back(static_cast<std::size_t>(batch * mats[i].out));
        CUDA_CHECK(cudaMemsetAsync(out.back().get(), 0xFF, out.back().bytes(), s.get()));
        run.x.push_back(xp[i]);
        run.y.push_back(dec::GemvOut{nullptr, out.back().get(), mats[i].out, false});
      }
      dev.run(run, s.get());
    };
    float_run(nullptr, fd);
    float_run(w.get(), fr);
    CUDA_CHECK(cudaStreamSynchronize(s.get()));
    for (std::size_t i = 0; i < mats.size(); ++i) {
      std::vector<float> a(fd[i].size()), b(fr[i].size());
      CUDA_CHECK(cudaMemcpy(a.data(), fd[i].get(), fd[i].bytes(), cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(b.data(), fr[i].get(), fr[i].bytes(), cudaMemcpyDeviceToHost));
      expect(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0,
             what + ": matrix " + std::to_string(i) + " float sums, decoded vs BF16 through the same kernels");
    }
    for (std::size_t i = 0; i < mats.size(); ++i) {
      const auto& m = mats[i];
      std::vector<uint16_t> got(yd[i].size()), ref(yr[i].size());
      CUDA_CHECK(cudaMemcpy(got.data(), yd[i].get(), yd[i].bytes(), cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(ref.data(), yr[i].get(), yr[i].bytes(), cudaMemcpyDeviceToHost));
      expect(got == ref, what + ": matrix " + std::to_string(i) + " decoded vs BF16 through the same kernels");
      int bad = 0;
      for (int b = 0; b < batch; ++b) {
        for (int64_t r = 0; r < m.out; ++r) {
          if (!dec::fused_output_close(flat.data() + m.offset + static_cast<uint64_t>(r * m.in),
                                       xh[i].data() + b * m.in, m.in, got[static_cast<std::size_t>(b * m.out + r)])) {
            ++bad;
          }
        }
      }
      expect(bad == 0, what + ": matrix " + std::to_string(i) + ": " + std::to_string(bad) +
                           " outputs outside rounding of the double reference");
    }
  } catch (const std::exception& e) {
    expect(false, what + ": " + e.what());
  }
}

// One variant on one unit: the whole unit in both orders, ranges that cut blocks, each tensor
// (gpu_ranges.hpp; test_emulation decodes the same list on the host). official-ptx decodes
// whole units only, in its own order.
void check_variant(const dec::Decoder& d, const EncodedUnit& enc, const Unit& u,
                   const std::vector<uint16_t>& expect_all) {
  std::vector<uint64_t> sizes;
  for (const auto& t : u.tensors) sizes.push_back(t.data.size());
  for (const test::DecodeRange& r : test::gpu_test_ranges(expect_all.size(), sizes)) {
    const auto part = run_on_device(d, enc, r.lo, r.hi, r.order);
    expect(std::equal(part.begin(), part.end(), expect_all.begin() + static_cast<std::ptrdiff_t>(r.lo)),
           d.name() + " on " + u.name + ": " + r.what + " [" + std::to_string(r.lo) + ", " + std::to_string(r.hi) + ")");
    if (d.name() == "official-ptx") return;
  }
}

// The dyn schedule's counters: one image launched again and again (more launches than its 64
// counter words, so words are reused: 150, or 70 on a smaller unit under --small, for the
// sanitizers), on ranges of different DF11 block counts, each output
// poisoned and checked. A launch that left its word anywhere but 0 would make a later launch
// of that word skip DF11 blocks (no memset goes before a launch).
void check_dyn_relaunch(const dec::Registry& reg, const Unit& u, int launches) {
  std::vector<uint16_t> expect_all;
  for (const auto& t : u.tensors) expect_all.insert(expect_all.end(), t.data.begin(), t.data.end());
  const uint64_t n = expect_all.size();
  for (const dec::Decoder* d : reg.select("*.dyn")) {
    const EncodedUnit enc = encode(u.view(), d->layout(), 0);
    try {
      cuda::Stream s;
      auto img = d->upload(enc, s.get());
      cuda::DeviceBuffer<uint16_t> out(n);
      int bad = 0;
      for (int i = 0; i < launches; ++i) {
        const uint64_t lo = i % 3 == 0 ? 0 : (n / 7) * static_cast<uint64_t>(i % 5), hi = i % 2 == 0 ? n : n - n / 9;
        if (lo >= hi) continue;
        CUDA_CHECK(cudaMemsetAsync(out.get(), 0xFF, out.bytes(), s.get()));
        // Both orders: a descending launch must leave its counter word at 0 too.
        d->launch(*img, out.get(), lo, hi, s.get(), i % 4 < 2 ? dec::Order::ascending : dec::Order::descending);
        std::vector<uint16_t> got(hi - lo);
        CUDA_CHECK(cudaMemcpyAsync(got.data(), out.get(), got.size() * 2, cudaMemcpyDeviceToHost, s.get()));
        CUDA_CHECK(cudaStreamSynchronize(s.get()));
        bad += !std::equal(got.begin(), got.end(), expect_all.begin() + static_cast<std::ptrdiff_t>(lo));
      }
      expect(bad == 0, d->name() + " on " + u.name + ": " + std::to_string(bad) + " of " + std::to_string(launches) +
                           " launches of one image wrong");
    } catch (const std::exception& e) {
      expect(false, d->name() + " relaunched: " + e.what());
      CUDA_CHECK(cudaDeviceSynchronize());
    }
  }
}

// (all_exponent_layouts_only: the variants whose layout holds exponents >= 240, for a unit that has them.)
void check_unit(const dec::Registry& reg, const Unit& u, bool all_exponent_layouts_only = false) {
  std::vector<uint16_t> expect_all;
  for (const auto& t : u.tensors) expect_all.insert(expect_all.end(), t.data.begin(), t.data.end());
  std::map<std::string, EncodedUnit> encoded;
  for (const auto& d : reg.all()) {
    const Layout l = d->layout();
    if (all_exponent_layouts_only && !l.all_exponents()) continue;
    auto it = encoded.find(l.name());
    if (it == encoded.end()) it = encoded.emplace(l.name(), encode(u.view(), l, 0)).first;
    if (const dec::Status st = d->can_implement(it->second); !st.ok) {
      // Only official-ptx may refuse (without a PTX file); any other refusal would drop a variant
      // out of this test unseen (test_emulation checks the same units on the host).
      if (d->name() == "official-ptx") {
        std::printf("%s on %s: skipped (%s)\n", d->name().c_str(), u.name.c_str(), st.reason.c_str());
      } else {
        expect(false, d->name() + " refused " + u.name + ": " + st.reason);
      }
      continue;
    }
    // One variant's exception (e.g. a PTX the driver will not JIT) is its failure, not the end of
    // the test; a sticky fault (the context is gone) still ends it at the synchronize.
    try {
      check_variant(*d, it->second, u, expect_all);
    } catch (const std::exception& e) {
      expect(false, d->name() + " on " + u.name + ": " + e.what());
      CUDA_CHECK(cudaDeviceSynchronize());
    }
  }
}

// dec::compare_on_device, which the sweep verifies decoded units with: every element counted,
// each difference found (a group's halves, the tail, the last element), the first reported,
// in a buffer larger than one pass of its grid.
void check_compare(bool small) {
  cuda::Stream s;
  for (const uint64_t n : {uint64_t{1}, uint64_t{9}, uint64_t{4099}, small ? uint64_t{300001} : uint64_t{50000005}}) {
    std::vector<uint16_t> a(n);
    for (uint64_t i = 0; i < n; ++i) a[i] = static_cast<uint16_t>(i * 40503u + 7);
    const auto da = cuda::DeviceBuffer<uint16_t>::from(a, s.get());
    auto db = cuda::DeviceBuffer<uint16_t>::from(a, s.get());
    const std::string what = "compare_on_device n=" + std::to_string(n);
    const dec::DeviceComparison same = dec::compare_on_device(da.get(), db.get(), n, s.get());
    expect(same.checked == n && same.differ == 0, what + ": equal buffers");
    std::vector<uint64_t> spots{0, n - 1, n / 2};
    if (n > 8) spots.insert(spots.end(), {1, 7, 8, (n / 8) * 8 - 1});
    for (const uint64_t at : spots) {
      const uint16_t flipped = a[at] ^ 0x0100;
      CUDA_CHECK(cudaMemcpyAsync(db.get() + at, &flipped, 2, cudaMemcpyHostToDevice, s.get()));
      const dec::DeviceComparison one = dec::compare_on_device(da.get(), db.get(), n, s.get());
      expect(one.checked == n && one.differ == 1 && one.first == at,
             what + ": one difference at " + std::to_string(at) + " reported as " + std::to_string(one.differ) +
                 " at " + std::to_string(one.first));
      CUDA_CHECK(cudaMemcpyAsync(db.get() + at, &a[at], 2, cudaMemcpyHostToDevice, s.get()));
    }
    if (n > 1000) {
      for (const uint64_t at : {n - 1, uint64_t{601}, uint64_t{600}, uint64_t{17}}) {
        const uint16_t flipped = a[at] ^ 1;
        CUDA_CHECK(cudaMemcpyAsync(db.get() + at, &flipped, 2, cudaMemcpyHostToDevice, s.get()));
      }
      const dec::DeviceComparison many = dec::compare_on_device(da.get(), db.get(), n, s.get());
      expect(many.checked == n && many.differ == 4 && many.first == 17, what + ": four differences");
    }
  }
  bool refused = false;
  try {
    cuda::DeviceBuffer<uint16_t> buf(64);
    (void)dec::compare_on_device(buf.get() + 1, buf.get(), 8, s.get());
  } catch (const Error&) {
    refused = true;
  }
  expect(refused, "compare_on_device accepted an unaligned buffer");
}

// Damaged streams and gaps that validation cannot see (metadata intact): every variant must
// run to completion without a fault (under compute-sanitizer memcheck: without an access out
// of bounds). The output is garbage, never a fault; tests/fuzz/fuzz_unit checks the same on
// the host emulations, and that they agree with the CPU decoder wherever it accepts.
// official-ptx is left out: the published kernel bounds its writes by n_elements only, not by
// its block, so a damaged stream can make it write past its shared memory (a reference, not a
// hardened decoder).
void check_damaged(const dec::Registry& reg, bool small) {
  const auto words = test::random_weights(small ? 12001 : 40001, 8, 120, 0.8);
  std::mt19937_64 rng(17);
  for (const Layout& l : reg.layouts()) {
    const EncodedUnit good = encode(test::unit_of(words, "dmg").view(), l, 0);
    int launched = 0;  // damaged units some variant of the layout ran on (upload may refuse some)
    const std::vector<EncodedUnit> damaged = test::damaged_units(good, rng);
    for (std::size_t trial = 0; trial < damaged.size(); ++trial) {
      const EncodedUnit& bad = damaged[trial];
      for (const auto& d : reg.all()) {
        if (!(d->layout() == l) || !d->can_implement(bad).ok || d->name() == "official-ptx") continue;
        const std::string what = d->name() + " on damaged " + l.name() + " #" + std::to_string(trial);
        cuda::Stream s;
        std::unique_ptr<dec::DeviceImage> img;
        try {
          img = d->upload(bad, s.get());
        } catch (const Error&) {
          continue;  // refused before any launch: what upload is for
        }
        try {
          cuda::DeviceBuffer<uint16_t> out(bad.n_elements);
          d->launch(*img, out.get(), 0, bad.n_elements, s.get());
          CUDA_CHECK(cudaStreamSynchronize(s.get()));
          ++launched;
        } catch (const Error& e) {
          expect(false, what + ": " + e.what());
        }
        const cudaError_t st = cudaDeviceSynchronize();
        expect(st == cudaSuccess, what + ": " + cudaGetErrorString(st));
        if (st != cudaSuccess) throw Error(what + ": the device faulted; later checks cannot run");
      }
    }
    expect(launched > 0, "no variant of layout " + l.name() + " ran on a damaged unit: every upload refused");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (!cuda::device_available()) {
    std::puts("no CUDA device: GPU tests skipped");
    return 77;
  }
  // --small: only small units (for compute-sanitizer, which runs kernels ~100x slower).
  // --no-damaged: skip check_damaged (for racecheck: on a damaged stream a thread chunk can
  // decode more codes than its positions allow and write another chunk's shared-memory slots,
  // a hazard of garbage input, not of the kernels).
  bool small = false, damaged = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--small") {
      small = true;
    } else if (a == "--no-damaged") {
      damaged = false;
    } else if (a == "--official-ptx" && i + 1 < argc) {
      dec::OfficialPtxDecoder::set_ptx_path(argv[++i]);
    }
  }
  dec::Registry reg;
  dec::register_all(reg);
  try {
    check_unit(reg, test::unit_of(test::random_weights(1, 1), "one"));
    check_unit(reg, test::unit_of(test::random_weights(7, 2), "seven"));
    // Every BF16 pattern a layout can hold (the 61440 with exponent < 240 for all; all 65536,
    // Inf and NaN too, for the layouts that hold them), among trained-like words. Under --small
    // (the sanitizers, ~100x slower) only the layouts that hold every exponent, on the patterns
    // alone: their tables' paths for exponents >= 240 are what the other units never reach.
    if (!small) check_unit(reg, test::unit_of(test::every_pattern_among_trained(false, 100000, 4242), "holdable"));
    check_unit(reg, test::unit_of(test::every_pattern_among_trained(true, small ? 0 : 100000, 4243), "every"), true);
    check_unit(reg, test::unit_of(test::random_weights(small ? 40001 : 300001, 3, 120, 0.8), "rand"));
    if (!small) check_unit(reg, synth::make_nemo_layer(1, 3, 0.02, 0));
    check_dyn_relaunch(reg, test::unit_of(test::random_weights(small ? 20001 : 600001, 5, 120, 0.8), "rand-dyn"),
                       small ? 70 : 150);
    // Fused decode + GEMV: a few matrices of a Nemo layer's shapes (rows of 5120, 4096 and
    // 14336), at batch 1, 5 and 16.
    const Unit layer = synth::make_nemo_layer(1, 3, small ? 0.002 : 0.01, 0);
    for (const dec::FusedDecode fd : {dec::FusedDecode::two_pass, dec::FusedDecode::one_pass, dec::FusedDecode::fixed,
                                      dec::FusedDecode::fixed_nh, dec::FusedDecode::fixed_late,
                                      dec::FusedDecode::fixed_wide}) {
      for (const int batch : {1, 5, 16}) check_fused(layer, batch, fd);
    }
    // The tensor-core kernel (fixed_mma): whole tiles of Nemo's row lengths (5120: units cross
    // row ends), batches up to 64; its double-reference check is what shows the fragments' layout.
    {
      Unit mma;
      mma.name = "nemo-rows-mma";
      const int64_t k = small ? 1 : 2;
      const std::vector<std::pair<int64_t, int64_t>> shapes{{32 * k, 5120}, {16 * k, 4096}, {16 * k, 14336}};
      for (std::size_t i = 0; i < shapes.size(); ++i) {
        const auto [out, in] = shapes[i];
        std::string name = "m";  // (not "m" + to_string: GCC 12's -Wrestrict false positive)
        name += std::to_string(i);
        mma.tensors.push_back({std::move(name), {out, in},
                               test::random_weights(static_cast<std::size_t>(out * in), 40 + i, 120, 0.8)});
      }
      for (const int batch : {1, 5, 16, 17, 64}) check_fused(mma, batch, dec::FusedDecode::fixed_mma);
    }
    check_compare(small);
    if (damaged) check_damaged(reg, small);
    // Malformed metadata is refused by upload, before any launch.
    const EncodedUnit good = encode(test::unit_of(test::random_weights(50000, 4)).view(), Layout::df11());
    // (An inner position that is merely wrong passes validation: the kernels clamp every write
    // to their block, so it gives wrong output, never a fault. These are refused.)
    EncodedUnit bad_end = good;
    bad_end.output_positions[bad_end.output_positions.size() - 4] ^= 0x01;  // final position != n_elements
    EncodedUnit bad_gaps = good;
    bad_gaps.gaps.pop_back();
    for (const EncodedUnit* u : {&bad_end, &bad_gaps}) {
      for (const auto* d : reg.select("lut8x4*")) {
        if (!(d->layout() == good.layout)) continue;  // refused for its layout, not for the damage
        bool refused = false;
        try {
          cuda::Stream s;
          (void)d->upload(*u, s.get());
        } catch (const Error&) {
          refused = true;
        }
        expect(refused, d->name() + " accepted a malformed unit");
      }
    }
    CUDA_CHECK(cudaDeviceSynchronize());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d check(s) failed\n", failures == 0 ? "PASS" : "FAIL", failures);
  return failures == 0 ? 0 : 1;
}
