// Names, traits and layouts of variants; preparing what an upload puts on the device.
#include "common/variant.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>

#include <fmt/format.h>

#include "codec/common.hpp"
#include "codec/cpu_decoder.hpp"
#include "codec/tables.hpp"
#include "common/host_image.hpp"
#include "gap_decode/gap_decode.cuh"

namespace df11::dec {
namespace {

const char* table_name(TableKind t) {
  switch (t) {
    case TableKind::lut_global: return "lut8x4";
    case TableKind::lut_smem: return "lut8x4-smem";
    case TableKind::flat_lut: return "flat12";
    case TableKind::flat_canon: return "flat12c";
    case TableKind::canon: return "canon16";
    case TableKind::multi_lut: return "multi12";
    case TableKind::multi_canon: return "multi12c";
    case TableKind::multi_lut_n: return "multi12n";
    case TableKind::multi_lut_ng: return "multi12ng";
    case TableKind::multi_lut_w: return "multi11w";
  }
  return "?";
}

const char* partition_name(Partition p) {
  switch (p) {
    case Partition::gap_block: return "block";
    case Partition::gap_warp: return "warp";
    case Partition::thread_pos: return "tpos";
    case Partition::thread_count: return "cnt";
    case Partition::warp_count: return "wcnt";
    case Partition::fixed_out: return "fix64";
  }
  return "?";
}

const char* staging_name(Staging s) {
  switch (s) {
    case Staging::smem_out: return "smem-out";
    case Staging::direct: return "direct";
    case Staging::keep: return "keep";
    case Staging::cp_async: return "cp-async";
    case Staging::exp_smem: return "exp-smem-v16";
    case Staging::keep_vec: return "keep-v16";
    case Staging::exp_smem_pf: return "exp-smem-pf-v16";
    case Staging::exp_smem_reg: return "exp-smem-reg-v16";
    case Staging::exp_smem_nh: return "exp-smem-nh-v16";
    case Staging::exp_smem_reg_nh: return "exp-smem-reg-nh-v16";
    case Staging::exp_smem_late: return "exp-smem-late-v16";
  }
  return "?";
}

// Shared memory a block may use on the GPUs this project targets (A100: 163 KB opt-in).
constexpr unsigned kMaxSmem = 160 * 1024;

// The fixed-output index of a DF11-layout unit (Partition::fixed_out): the bit where code
// g * kFixedCodes starts, for every thread g, as a uint32 per warp of 32 threads (img.positions)
// and a uint16 per thread from its warp's (img.lane_off). One walk over the codes, DF11 block by
// block on all cores: a block's codes start at its first chunk's gap, and its last code must end
// where the next block that holds a code start has its first (within the stream for the last such
// block: a final block may hold only the end of the last code, its gap then meaning nothing), else
// the stream and its gaps and positions disagree: an error naming the unit and block, before any
// launch. Needs the flat root and the luts in img.
// The fix64 index holds 32-bit bit offsets into the padded stream.
constexpr uint64_t kFixedMaxStreamBytes = (uint64_t{1} << 29) - 1024;
bool fixed_index_fits(const EncodedUnit& unit) { return unit.encoded_exponent.size() <= kFixedMaxStreamBytes; }

// Bytes of fix64's stream copy: whole words, then kFixedReadPad more (more than 64 codes read
// past any start).
uint64_t fixed_stream_bytes(uint64_t encoded_bytes) { return (encoded_bytes + 3) / 4 * 4 + kFixedReadPad; }

void derive_fixed_index(const EncodedUnit& unit, HostImage& img) {
  constexpr uint64_t N = VariantSpec::kFixedCodes;
  const uint64_t n = unit.n_elements;
  const uint64_t threads = (n + N - 1) / N, warps = (threads + 31) / 32;
  const uint64_t total_bits = static_cast<uint64_t>(unit.encoded_exponent.size()) * 8;
  if (!fixed_index_fits(unit)) {
    throw Error(fmt::format("unit {}: {} bytes of encoded exponents; the fix64 partition's 32-bit bit offsets hold "
                            "at most {} bytes",
                            unit.name, unit.encoded_exponent.size(), kFixedMaxStreamBytes));
  }
  std::vector<uint32_t> start(threads, 0);
  const uint64_t n_blocks = unit.n_blocks();
  const uint64_t tpb = static_cast<uint64_t>(unit.layout.threads_per_block);
  const uint64_t block_bits = unit.layout.block_bytes() * 8;
  const FlatTables<VariantSpec::kFlatBits, LutTables<false>> table{img.flat_root.data(),
                                                                  {img.luts.data(), img.n_rows}};
  // The walk takes up to three codes a lookup where they lie whole in the next kFlatBits bits
  // (the multi-symbol root the multi12 kernels read; code lengths from the flat root for the
  // start of a 64th code inside one), else one (the flat root and the chained tables).
  constexpr int kK = VariantSpec::kFlatBits;
  const std::vector<uint32_t> multi = multi_root_from_flat(img.flat_root, kK);
  std::array<uint8_t, 256> code_len{};
  for (const uint16_t e : img.flat_root) {
    if (e >> 8) code_len[e & 0xFFu] = static_cast<uint8_t>(e >> 8);
  }
  auto first_bit = [&](uint64_t b) { return b * block_bits + unit.gap(b * tpb); };
  // The next block after b in which a code starts (n_blocks: none).
  std::vector<uint64_t> next_start(n_blocks, n_blocks);
  for (uint64_t b = n_blocks; b-- > 1;) {
    next_start[b - 1] = unit.position(b) < unit.position(b + 1) ? b : next_start[b];
  }
  parallel_for(n_blocks, 0, [&](std::size_t b) {
    uint64_t i = unit.position(b);
    const uint64_t end = unit.position(b + 1);
    if (i == end) return;
    uint64_t bit = first_bit(b);
    BitReader<false> br;
    br.init(img.stream.data() + (bit >> 5) * 4);
    br.skip(static_cast<unsigned>(bit & 31));
    while (i < end) {
      if (bit > total_bits) break;
      const uint32_t m = multi[br.peek() >> (32 - kK)];
      const unsigned cnt = m >> 28, used = (m >> 24) & 0xFu;
      // Whole entries only where all their codes are the block's and end within the stream (so
      // that every code starts where the one-by-one walk would have looked at it).
      if (cnt != 0 && i + cnt <= end && bit + used <= total_bits) {
        const uint64_t next = (i + N - 1) / N * N;  // the first 64th code at or after i
        if (next < i + cnt) {
          uint64_t at = bit;
          for (uint64_t j = i; j < next; ++j) at += code_len[(m >> (8 * (j - i))) & 0xFFu];
          start[next / N] = static_cast<uint32_t>(at);
        }
        br.skip(used);
        bit += used;
        i += cnt;
        continue;
      }
      if (i % N == 0) start[i / N] = static_cast<uint32_t>(bit);
      unsigned sym, len;
      table.lookup(br.peek(), sym, len);
      if (len == 0 || len > 32) {
        throw Error(fmt::format("unit {}: block {}: element {} decodes to a code of length {}", unit.name, b, i, len));
      }
      br.skip(len);
      bit += len;
      ++i;
    }
    const uint64_t c = next_start[b];
    const uint64_t want = c < n_blocks ? first_bit(c) : total_bits;
    if (c < n_blocks ? bit != want : bit > want) {
      throw Error(fmt::format("unit {}: block {}: its {} codes end at bit {}, where {} (the stream, its gaps and "
                              "output_positions disagree)",
                              unit.name, b, end - unit.position(b), bit,
                              c < n_blocks ? fmt::format("block {}'s first code starts at {}", c, want)
                                           : fmt::format("the stream ends at {}", want)));
    }
  });
  img.positions.assign(warps, 0);
  img.lane_off.assign(warps * 32, 0);
  for (uint64_t w = 0; w < warps; ++w) {
    img.positions[w] = start[32 * w];
    for (uint64_t g = 32 * w; g < std::min(32 * w + 32, threads); ++g) {
      // 31 threads of 64 codes of at most 32 bits: 63488 < 65536 for any valid stream.
      if (start[g] < start[32 * w] || start[g] - start[32 * w] > 0xFFFF) {
        throw Error(fmt::format("unit {}: thread {} starts at bit {}, its warp's first thread at {}", unit.name, g,
                                start[g], start[32 * w]));
      }
      img.lane_off[g] = static_cast<uint16_t>(start[g] - start[32 * w]);
    }
  }
  // The stream as native-order words (WordReader: no byte swap), padded so that no reader leaves
  // it (prepare_image copied it into fixed_stream_bytes or more, zeros after the stream).
  if (img.stream.size() < fixed_stream_bytes(unit.encoded_exponent.size()) || img.stream.size() % 4 != 0) {
    throw Error(fmt::format("unit {}: the fix64 stream copy holds {} bytes, fewer than {}", unit.name,
                            img.stream.size(), fixed_stream_bytes(unit.encoded_exponent.size())));
  }
  const std::size_t words = img.stream.size() / 4;
  constexpr std::size_t kPiece = std::size_t{1} << 22;  // words a task (16 MB)
  parallel_for((words + kPiece - 1) / kPiece, 0, [&](std::size_t t) {
    const std::size_t end = std::min(words, (t + 1) * kPiece);
    for (std::size_t k = t * kPiece; k < end; ++k) {
      uint8_t* b = img.stream.data() + 4 * k;
      const uint32_t v = (static_cast<uint32_t>(b[0]) << 24) | (static_cast<uint32_t>(b[1]) << 16) |
                         (static_cast<uint32_t>(b[2]) << 8) | b[3];
      static_assert(std::endian::native == std::endian::little, "the host stores the words as the GPU reads them");
      std::memcpy(b, &v, 4);
    }
  });
  img.gaps = {};
  img.counts = {};
  img.n_chunks = threads;
  img.n_blocks = warps;  // a launch's units: warps of 32 threads
  img.max_block_elements = static_cast<uint32_t>(32 * N);
  img.max_warp_elements = static_cast<uint32_t>(32 * N);
}

}  // namespace

Layout VariantSpec::layout() const {
  // The fixed-output partition reads DF11's stream and tables as they are (its index is derived).
  if (partition == Partition::fixed_out) return Layout::df11();
  const PositionScheme positions = partition == Partition::thread_pos     ? PositionScheme::thread
                                   : partition == Partition::thread_count || partition == Partition::warp_count
                                       ? PositionScheme::count
                                                                          : PositionScheme::block;
  if (canonical_layout()) return Layout::canonical(16, threads_per_block, bytes_per_thread, positions);
  // DF11's chained tables and gaps; with counts, DF11 plus one count byte per thread.
  Layout l = Layout::df11();
  l.threads_per_block = threads_per_block;
  l.bytes_per_thread = bytes_per_thread;
  l.positions = positions;
  return l;
}

std::string VariantSpec::name() const {
  return fmt::format("{}.gap{}-{}.{}.t{}.b{}{}{}", table_name(table), layout().gap_bits, partition_name(partition),
                     staging_name(staging), threads_per_block, bytes_per_thread, per_matrix ? ".matrix" : "",
                     schedule == Schedule::persist ? ".persist"
                     : schedule == Schedule::dyn  ? ".dyn"
                                                  : "");
}

// The staging words the hinted and unhinted twins share (exp-smem and exp-smem-nh; exp-smem-reg and
// exp-smem-reg-nh).
constexpr const char* kExpSmem = "exponents via shared memory, merged with sign/mantissa on the way out, 16-byte stores";
constexpr const char* kExpSmemReg =
    "exponents via shared memory, 16-byte stores; each thread's encoded chunk loaded into registers as the block "
    "starts (one vector load), no refills in the decode loop";

Traits VariantSpec::traits() const {
  Traits t;
  switch (table) {
    case TableKind::lut_global: t.table = "DF11 chained 8-bit tables, global memory via the read-only cache"; break;
    case TableKind::lut_smem: t.table = "DF11 chained 8-bit tables copied to shared memory"; break;
    case TableKind::flat_lut: t.table = "flat 2^12 root (shared) + chained tables (global) for longer codes"; break;
    case TableKind::flat_canon: t.table = "flat 2^12 root (shared) + canonical limits (shared)"; break;
    case TableKind::canon: t.table = "canonical per-length limits (shared), no large table"; break;
    case TableKind::multi_lut:
      t.table = "multi-symbol 2^12 root, up to 3 codes per lookup (shared) + flat12 (chained tables for longer codes)";
      break;
    case TableKind::multi_canon:
      t.table = "multi-symbol 2^12 root, up to 3 codes per lookup (shared) + flat12c (canonical limits)";
      break;
    case TableKind::multi_lut_n:
      t.table = "multi-symbol 2^12 root + flat12, read by a loop bounded by the thread's code count (three bytes "
                "stored per lookup, no end-of-chunk test)";
      break;
    case TableKind::multi_lut_ng:
      t.table = "multi-symbol 2^12 root (shared) + DF11's chained tables (global) for single codes, read by the "
                "counted loop";
      break;
    case TableKind::multi_lut_w:
      t.table = "wide multi-symbol 2^11 root, 8-byte entries of up to 5 codes (shared, 16 KB) + DF11's chained "
                "tables (global) for single codes, read by the counted loop (five bytes stored per lookup)";
      break;
  }
  switch (partition) {
    case Partition::gap_block: t.partition = "gaps + block positions, shared-memory block scan, two passes"; break;
    case Partition::gap_warp: t.partition = "gaps + block positions, warp-shuffle scan, two passes"; break;
    case Partition::thread_pos: t.partition = "gaps + per-thread positions, one pass"; break;
    case Partition::thread_count:
      t.partition = "gaps + block positions + a code count byte per thread, warp-shuffle scan of the counts, one pass";
      break;
    case Partition::warp_count:
      t.partition = "gaps + block positions + a code count byte per thread; each warp sums the counts before it and "
                    "decodes and copies out its own range: no block scan, no block barrier, one pass";
      break;
    case Partition::fixed_out:
      t.partition = "64 codes per thread from a start bit found on upload (uint32 per warp + uint16 per thread); "
                    "implicit positions, no scan, one block barrier (the table copy), every lane the same number of codes";
      break;
  }
  switch (staging) {
    case Staging::smem_out: t.staging = "outputs via shared memory, coalesced stores"; break;
    case Staging::direct: t.staging = "direct stores"; break;
    case Staging::keep: t.staging = "symbols kept from pass 1 in shared memory, coalesced stores"; break;
    case Staging::cp_async: t.staging = "encoded input staged with cp.async; outputs via shared memory"; break;
    case Staging::exp_smem: t.staging = kExpSmem; break;
    case Staging::keep_vec:
      t.staging = "symbols kept from pass 1; exponents merged with sign/mantissa on the way out, 16-byte stores";
      break;
    case Staging::exp_smem_pf:
      t.staging = "exponents via shared memory; sign/mantissa prefetched to shared memory (cp.async) during the decode; "
                  "16-byte stores";
      break;
    case Staging::exp_smem_reg: t.staging = std::string(kExpSmemReg) + "; sign/mantissa hinted into L2"; break;
    case Staging::exp_smem_nh: t.staging = std::string(kExpSmem) + "; no L2 hints of the next unit's bytes"; break;
    case Staging::exp_smem_reg_nh: t.staging = std::string(kExpSmemReg) + "; no L2 hints"; break;
    case Staging::exp_smem_late:
      t.staging = std::string(kExpSmem) + "; the next unit's bytes hinted into L2 after this unit's decode";
      break;
  }
  t.granularity = per_matrix ? "matrix" : "unit";
  // Persistent blocks: tables loaded once per CUDA block; dyn: later DF11 blocks from a counter.
  if (schedule == Schedule::persist) t.granularity += "/persist";
  if (schedule == Schedule::dyn) t.granularity += "/dyn";
  t.threads_per_block = threads_per_block;
  t.bytes_per_thread = bytes_per_thread;
  return t;
}

Status spec_can_implement(const VariantSpec& spec, const EncodedUnit& unit) {
  const Layout want = spec.layout();
  if (!(unit.layout == want)) {
    return Status::no(fmt::format("unit {} is in layout {}; {} reads layout {}", unit.name, unit.layout.name(),
                                  spec.name(), want.name()));
  }
  if (spec.canonical_layout() && unit.layout.max_code_length > 32) return Status::no("codes longer than 32 bits");
  if (spec.partition == Partition::fixed_out && !fixed_index_fits(unit)) {
    return Status::no(fmt::format("{} bytes of encoded exponents: the fix64 index's 32-bit bit offsets hold at most {}",
                                  unit.encoded_exponent.size(), kFixedMaxStreamBytes));
  }
  return Status::yes();
}

void fill_padded(std::span<uint8_t> out, std::span<const uint8_t> src, int n_threads) {
  if (out.size() < src.size()) {
    throw Error(fmt::format("fill_padded: {} bytes into {}", src.size(), out.size()));
  }
  constexpr std::size_t kPiece = std::size_t{1} << 24;
  const std::size_t total = out.size(), pieces = (total + kPiece - 1) / kPiece;
  parallel_for(pieces, total < 2 * kPiece ? 1 : n_threads, [&](std::size_t t) {
    const std::size_t lo = t * kPiece, hi = std::min(total, lo + kPiece);
    const std::size_t copy_end = std::clamp(src.size(), lo, hi);
    if (copy_end > lo) std::memcpy(out.data() + lo, src.data() + lo, copy_end - lo);
    if (hi > copy_end) std::memset(out.data() + copy_end, 0, hi - copy_end);
  });
}

PaddedBytes padded_copy(std::span<const uint8_t> src, std::size_t total, int n_threads) {
  PaddedBytes out(total);  // uninitialised (DefaultInitAllocator): fill_padded writes every byte
  fill_padded(out, src, n_threads);
  return out;
}

HostImage prepare_image(const VariantSpec& spec, const EncodedUnit& unit) {
  const Status st = spec_can_implement(spec, unit);
  if (!st.ok) throw Error(st.reason);
  validate_encoded(unit);  // refuses malformed metadata before any launch
  HostImage img;
  img.n_elements = unit.n_elements;
  img.n_bytes = unit.encoded_exponent.size();
  img.n_chunks = unit.n_chunks();
  img.n_blocks = unit.n_blocks();
  img.gap_bits = unit.layout.gap_bits;
  // Look-ahead reads up to 8 bytes past a chunk's last bit, in 4-byte words; staged copies
  // read 16 more. 32 zero bytes cover both.
  // A cp.async block stages tpb*bpt + 16 bytes, also for the last block.
  const uint64_t staged_end = img.n_blocks * unit.layout.block_bytes() + 16;
  // fix64 pads its native-order words further (derive_fixed_index): the same copy, larger.
  uint64_t stream_bytes = std::max<uint64_t>(((img.n_bytes + 3) / 4) * 4 + 32, staged_end + 32);
  if (spec.partition == Partition::fixed_out) {
    stream_bytes = std::max<uint64_t>(stream_bytes, fixed_stream_bytes(img.n_bytes));
  }
  img.stream = padded_copy(unit.encoded_exponent, stream_bytes);
  // 16 bytes of padding: the exp-smem-pf stagings copy whole aligned 16-byte pieces around a
  // block's elements, up to 15 bytes past the last one.
  img.sign_mantissa = padded_copy(unit.sign_mantissa, unit.sign_mantissa.size() + 16);
  const uint64_t n_pos = unit.output_positions.size() / 4;
  img.positions.resize(n_pos);
  for (uint64_t i = 0; i < n_pos; ++i) img.positions[i] = unit.position(i);
  img.gaps = unit.gaps;
  img.gaps.push_back(0);
  const bool counts = spec.partition == Partition::thread_count || spec.partition == Partition::warp_count;
  if (counts) img.counts = unit.thread_counts;
  if (spec.partition == Partition::warp_count) {
    // The largest element count of one warp's 32 chunks (sizes each warp's exponent buffer).
    for (uint64_t c = 0; c < img.counts.size(); c += 32) {
      uint32_t sum = 0;
      for (uint64_t i = c; i < c + 32 && i < img.counts.size(); ++i) sum += img.counts[i];
      img.max_warp_elements = std::max(img.max_warp_elements, sum);
    }
  }
  const bool per_thread = spec.partition == Partition::thread_pos;
  const uint64_t tpb = static_cast<uint64_t>(spec.threads_per_block);
  for (uint64_t b = 0; b < img.n_blocks; ++b) {
    const uint64_t first = per_thread ? img.positions[b * tpb] : img.positions[b];
    const uint64_t end = per_thread ? img.positions[std::min((b + 1) * tpb, img.n_chunks)] : img.positions[b + 1];
    img.max_block_elements = std::max<uint32_t>(img.max_block_elements, static_cast<uint32_t>(end - first));
  }
  if (spec.canonical_layout()) {
    const HuffmanCode code = canonical_code_from_luts(unit.luts, unit.layout.max_code_length, unit.name);
    img.canon = make_canonical_table(code.length);
    img.has_canon = true;
    if (spec.has_flat_root()) img.flat_root = flat_root_from_code(code, VariantSpec::kFlatBits);
  } else {
    img.luts = unit.luts;
    img.n_rows = static_cast<int>(unit.luts.size() / 256);
    // A walk that ends on a pointer (only in corrupt streams) reads the length row at 240..255;
    // giving those entries length 1 makes every thread finish. Valid streams never read them.
    for (int v = kDf11PointerBase; v < 256; ++v) {
      uint8_t& len = img.luts[static_cast<std::size_t>(img.n_rows - 1) * 256 + v];
      if (len == 0) len = 1;
    }
    // The multi root is built from the flat root, and the fixed-output index walks with it, even
    // where the kernel reads no flat root (multi12ng: dropped below).
    if (spec.has_flat_root() || spec.has_multi_root()) {
      img.flat_root = flat_root_from_df11_luts(unit.luts, VariantSpec::kFlatBits);
    }
  }
  if (spec.has_multi_root()) {
    img.multi_root = spec.wide_root() ? wide_root_from_flat(img.flat_root, VariantSpec::kWideBits)
                                      : multi_root_from_flat(img.flat_root, VariantSpec::kFlatBits);
  }
  if (spec.partition == Partition::fixed_out) derive_fixed_index(unit, img);
  if (!spec.has_flat_root()) img.flat_root = {};
  const SmemLayout sl = smem_layout(spec, img.n_rows, img.max_block_elements, 0, img.max_warp_elements);
  if (sl.total > kMaxSmem) {
    throw Error(fmt::format("unit {}: {} needs {} bytes of shared memory per block (a block holds {} elements); "
                            "the limit is {}",
                            unit.name, spec.name(), sl.total, img.max_block_elements, kMaxSmem));
  }
  return img;
}

LaunchParams launch_params(const HostImage& img, const LaunchParams& arrays, uint16_t* out, uint64_t lo,
                           uint64_t hi) {
  LaunchParams p = arrays;
  p.n_bytes = img.n_bytes;
  p.n_rows = img.n_rows;
  p.out = out;
  p.n_elements = img.n_elements;
  p.n_chunks = img.n_chunks;
  p.lo = lo;
  p.hi = hi;
  p.max_block_elements = img.max_block_elements;
  p.gap_bits = img.gap_bits;
  return p;
}

std::pair<uint64_t, uint64_t> block_range(const VariantSpec& spec, const HostImage& img, uint64_t lo, uint64_t hi) {
  if (lo >= hi || img.n_blocks == 0) return {0, 0};
  if (spec.partition == Partition::fixed_out) {  // units of 32 threads' codes, implicit positions
    constexpr uint64_t kUnit = 32 * static_cast<uint64_t>(VariantSpec::kFixedCodes);
    return {lo / kUnit, std::min((hi + kUnit - 1) / kUnit, img.n_blocks)};
  }
  const uint64_t tpb = static_cast<uint64_t>(spec.threads_per_block);
  auto first_of = [&](uint64_t b) -> uint64_t {
    if (b >= img.n_blocks) return img.n_elements;
    return spec.partition == Partition::thread_pos ? img.positions[b * tpb] : img.positions[b];
  };
  // First block whose elements reach past lo: the last block starting at or before lo.
  uint64_t a = 0, z = img.n_blocks;  // binary search on first_of, monotone
  while (a + 1 < z) {
    const uint64_t m = (a + z) / 2;
    if (first_of(m) <= lo) a = m; else z = m;
  }
  const uint64_t b0 = a;
  // One past the last block starting before hi.
  uint64_t b1 = b0;
  {
    uint64_t l = b0, r = img.n_blocks;
    while (l < r) {
      const uint64_t m = (l + r) / 2;
      if (first_of(m) < hi) l = m + 1; else r = m;
    }
    b1 = l;
  }
  return {b0, std::max(b1, b0 + 1)};
}

LaunchParams host_launch_params(const HostImage& img, uint16_t* out, uint64_t lo, uint64_t hi) {
  LaunchParams a{};
  a.stream = img.stream.data();
  a.sign_mantissa = img.sign_mantissa.data();
  a.positions = img.positions.data();
  a.gaps = img.gaps.data();
  a.counts = img.counts.empty() ? nullptr : img.counts.data();
  a.luts = img.luts.empty() ? nullptr : img.luts.data();
  a.flat_root = img.flat_root.empty() ? nullptr : img.flat_root.data();
  a.multi_root = img.multi_root.empty() ? nullptr : img.multi_root.data();
  a.canon = img.has_canon ? &img.canon : nullptr;
  a.lane_off = img.lane_off.empty() ? nullptr : img.lane_off.data();
  return launch_params(img, a, out, lo, hi);
}

}  // namespace df11::dec
