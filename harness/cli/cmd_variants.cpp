// `df11 variants`: every registered decoder variant with its design traits, the layout it reads,
// its ptxas resources per architecture (from <build>/kernel_resources.json) and the instructions
// per iteration of its kernel's loops on sm_90 (from <build>/kernel_sass.json, which
// scripts/kernel_sass.py writes); with --occupancy, the shared memory of a block on a synthetic
// Nemo layer and the blocks per SM that it, the threads and the registers allow on sm_80 and
// sm_90 (CUDA's occupancy rules, no GPU needed); with --lanes, each decode loop's iterations per
// code and the share of a warp's lanes busy in it, from the host emulation on such a layer.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <utility>
#include <vector>

#include "cli/commands.hpp"
#include "codec/common.hpp"
#include "datasets/json_io.hpp"
#include "codec/encoder.hpp"
#include "common/variant_decoder.hpp"
#include "datasets/synthetic.hpp"
#include "decoder.hpp"

namespace df11::cli {
namespace {

std::filesystem::path default_build_file(const char* name) {
  // The binary lives in <build>/bin; the build writes its reports into <build>.
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  return exe.parent_path().parent_path() / name;
}

// The JSON document at `arg` (which must exist), else at the build's default path if it exists,
// else an empty object. Sets `used` to the path read.
nlohmann::json read_report(const std::string& arg, const char* name, std::filesystem::path& used) {
  used = arg.empty() ? default_build_file(name) : std::filesystem::path(arg);
  if (used.empty() || !std::filesystem::exists(used)) {
    if (!arg.empty()) throw Error(fmt::format("{}: no such file", arg));
    used.clear();
    return nlohmann::json::object();
  }
  nlohmann::json doc = read_json_file(used);
  // What scripts/kernel_resources.py and kernel_sass.py write: {"kernels": [{...}, ...]}.
  const bool kernels_ok = doc.is_object() && doc.contains("kernels") && doc["kernels"].is_array() &&
                          std::all_of(doc["kernels"].begin(), doc["kernels"].end(),
                                      [](const nlohmann::json& k) { return k.is_object(); });
  if (!kernels_ok) {
    throw Error(fmt::format("{}: not a {} (an object whose \"kernels\" is an array of objects), got {}", used.string(),
                            name, brief(doc)));
  }
  return doc;
}

// The demangled name ptxas reports for a variant's kernel instance.
std::string kernel_signature(const dec::VariantSpec& s) {
  return fmt::format("{}<(df11::dec::TableKind){}, (df11::dec::Partition){}, (df11::dec::Staging){}, {}, {}>",
                     s.schedule == dec::Schedule::dyn       ? "gap_decode_dynamic_kernel"
                     : s.schedule == dec::Schedule::persist ? "gap_decode_persistent_kernel"
                                                            : "gap_decode_kernel", static_cast<int>(s.table), static_cast<int>(s.partition), static_cast<int>(s.staging),
                     s.threads_per_block, s.bytes_per_thread);
}

nlohmann::json resources_for(const nlohmann::json& doc, const std::string& signature) {
  nlohmann::json out = nlohmann::json::object();
  if (!doc.contains("kernels")) return out;
  for (const auto& k : doc["kernels"]) {
    if (k.value("name", "").find(signature) == std::string::npos) continue;
    out[k.value("arch", "?")] = {{"registers", k.value("registers", 0)},
                                 {"spill_store_bytes", k.value("spill_store_bytes", 0)},
                                 {"spill_load_bytes", k.value("spill_load_bytes", 0)},
                                 {"stack_bytes", k.value("stack_bytes", 0)},
                                 {"static_smem_bytes", k.value("static_smem_bytes", 0)}};
  }
  return out;
}

// The kernel's loops from kernel_sass.json: [{min_cycle, max_cycle, span, depth, barrier, ops}]
// (empty when the file has no such kernel).
nlohmann::json sass_loops_for(const nlohmann::json& doc, const std::string& signature) {
  if (!doc.contains("kernels")) return nlohmann::json::array();
  for (const auto& k : doc["kernels"]) {
    if (k.value("name", "").find(signature) == std::string::npos) continue;
    nlohmann::json loops = nlohmann::json::array();
    for (const auto& l : k.value("loops", nlohmann::json::array())) {
      loops.push_back({{"min_cycle", l.value("min_cycle", 0)},
                       {"max_cycle", l.value("max_cycle", 0)},
                       {"span", l.value("span", 0)},
                       {"depth", l.value("depth", 0)},
                       {"barrier", l.value("barrier", false)},
                       {"ops", l.value("ops", nlohmann::json::object())}});
    }
    return loops;
  }
  return nlohmann::json::array();
}

// What one SM holds, per architecture (the figures the CUDA occupancy calculator uses: A100 for
// sm_80, H100/H200 for sm_90): shared memory per SM and the most one block may take, the
// shared memory the system reserves per block, threads, blocks, 32-bit registers (allocated per
// warp in units of 256).
struct SmLimits {
  const char* arch;
  unsigned smem_per_sm, smem_per_block, reserved_per_block, threads, blocks, registers;
};
constexpr SmLimits kSmLimits[] = {{"sm_80", 167936, 166912, 1024, 2048, 32, 65536},
                                  {"sm_90", 233472, 232448, 1024, 2048, 32, 65536}};

// Blocks of `threads` threads, `smem` bytes of dynamic shared memory and `registers` per thread
// (0: unknown, left out) resident on one SM, and what limits them.
nlohmann::json occupancy(const SmLimits& l, unsigned threads, unsigned smem, int registers) {
  // In this order, so that a tie names the thread slots first (a full SM) and blocks last.
  std::vector<std::pair<std::string, unsigned>> by{{"threads", l.threads / threads}};
  if (registers > 0) {
    const unsigned per_warp = (static_cast<unsigned>(registers) * 32 + 255) / 256 * 256;
    by.emplace_back("registers", l.registers / per_warp / ((threads + 31) / 32));
  }
  by.emplace_back("shared memory", smem > l.smem_per_block ? 0 : l.smem_per_sm / (smem + l.reserved_per_block));
  by.emplace_back("blocks", l.blocks);
  const auto least = std::min_element(by.begin(), by.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  const unsigned blocks = least->second;
  return {{"blocks_per_sm", blocks},
          {"threads_per_sm", blocks * threads},
          {"occupancy", static_cast<double>(blocks * threads) / l.threads},
          {"limited_by", least->first},
          {"registers_known", registers > 0}};
}

// Every variant's shared memory per block on a synthetic Nemo layer 1 (a fraction of its rows:
// the same code statistics, so nearly the same largest block), one encoding per layout.
std::map<std::string, unsigned> smem_on_nemo(const dec::Registry& reg, double fraction, std::string& unit_name) {
  const Unit u = synth::make_nemo_layer(1, 0, fraction);
  unit_name = fmt::format("synthetic Nemo layer 1, {:g} of its rows ({} weights)", fraction, u.n_elements());
  std::map<std::string, unsigned> out;
  for (const Layout& l : reg.layouts()) {
    const EncodedUnit enc = encode(u.view(), l);
    for (const auto& d : reg.all()) {
      const auto* v = dynamic_cast<const dec::VariantDecoder*>(d.get());
      if (v && v->layout() == l && v->can_implement(enc).ok) out[d->name()] = dec::smem_bytes(v->spec(), enc);
    }
  }
  return out;
}

// Every variant's decode loop, emulated on a synthetic Nemo layer 1 (a fraction of its rows), one
// encoding per layout: per pass, loop iterations per code (every lane's, and 32 x each warp's
// slowest lane's: the lane slots a GPU warp spends) and the share of those slots busy.
std::map<std::string, nlohmann::json> lanes_on_nemo(const dec::Registry& reg, double fraction, std::string& unit_name) {
  const Unit u = synth::make_nemo_layer(1, 0, fraction);
  unit_name = fmt::format("synthetic Nemo layer 1, {:g} of its rows ({} weights)", fraction, u.n_elements());
  const double n = static_cast<double>(u.n_elements());
  std::map<std::string, nlohmann::json> out;
  std::vector<uint16_t> decoded(u.n_elements());
  for (const Layout& l : reg.layouts()) {
    const EncodedUnit enc = encode(u.view(), l);
    for (const auto& d : reg.all()) {
      const auto* v = dynamic_cast<const dec::VariantDecoder*>(d.get());
      if (!v || !(v->layout() == l) || !v->can_implement(enc).ok) continue;
      dec::LoopStats st;
      {
        const dec::LoopStatsScope counting(st);
        d->decode_host(enc, decoded);
      }
      nlohmann::json j = nlohmann::json::object();
      for (const auto& [name, ps] : {std::pair{"pass1", st.pass1}, std::pair{"pass2", st.pass2}}) {
        if (ps.lane_iterations == 0) continue;
        j[name] = {{"iterations_per_code", static_cast<double>(ps.lane_iterations) / n},
                   {"lane_slots_per_code", static_cast<double>(ps.warp_iterations) / n},
                   {"lanes_busy", static_cast<double>(ps.lane_iterations) / static_cast<double>(ps.warp_iterations)}};
      }
      out[d->name()] = std::move(j);
    }
  }
  return out;
}

int run_variants(bool json, const std::string& resources_arg, const std::string& sass_arg, bool with_occupancy,
                 double fraction, bool with_lanes) {
  std::filesystem::path res_path, sass_path;
  const nlohmann::json res_doc = read_report(resources_arg, "kernel_resources.json", res_path);
  const nlohmann::json sass_doc = read_report(sass_arg, "kernel_sass.json", sass_path);
  dec::Registry reg;
  dec::register_all(reg);
  if ((with_occupancy || with_lanes) && !(fraction > 0 && fraction <= 1)) {
    throw Error(fmt::format("--fraction {} is not in (0, 1]", fraction));
  }
  std::string unit_name;
  const std::map<std::string, unsigned> smem = with_occupancy ? smem_on_nemo(reg, fraction, unit_name)
                                                              : std::map<std::string, unsigned>{};
  const std::map<std::string, nlohmann::json> lanes = with_lanes ? lanes_on_nemo(reg, fraction, unit_name)
                                                                 : std::map<std::string, nlohmann::json>{};
  nlohmann::json all = nlohmann::json::array();
  for (const auto& d : reg.all()) {
    const dec::Traits t = d->traits();
    nlohmann::json j = {{"name", d->name()},
                        {"layout", d->layout().name()},
                        {"table", t.table},
                        {"partition", t.partition},
                        {"staging", t.staging},
                        {"granularity", t.granularity},
                        {"threads_per_block", t.threads_per_block},
                        {"bytes_per_thread", t.bytes_per_thread}};
    if (const auto* v = dynamic_cast<const dec::VariantDecoder*>(d.get())) {
      j["resources"] = resources_for(res_doc, kernel_signature(v->spec()));
      j["sass_loops"] = sass_loops_for(sass_doc, kernel_signature(v->spec()));
      if (const auto it = smem.find(d->name()); it != smem.end()) {
        nlohmann::json occ = {{"unit", unit_name}, {"smem_bytes", it->second}};
        for (const SmLimits& l : kSmLimits) {
          const int regs = j["resources"].contains(l.arch) ? j["resources"][l.arch]["registers"].get<int>() : 0;
          occ[l.arch] = occupancy(l, static_cast<unsigned>(t.threads_per_block), it->second, regs);
        }
        j["occupancy"] = std::move(occ);
      }
      if (const auto it = lanes.find(d->name()); it != lanes.end()) {
        j["decode_loop"] = it->second;
        j["decode_loop"]["unit"] = unit_name;
      }
    } else {
      j["resources"] = nlohmann::json::object();  // loaded at run time (official-ptx)
      j["sass_loops"] = nlohmann::json::array();
    }
    all.push_back(std::move(j));
  }
  if (json) {
    std::cout << nlohmann::json{{"built_with_cuda", dec::built_with_cuda()},
                                {"resources_file", res_path.string()},
                                {"sass_file", sass_path.string()},
                                {"sass_arch", sass_doc.empty() ? "" : "sm_90"},
                                {"variants", all}}
                     .dump(1)
              << "\n";
    return 0;
  }
  fmt::print("{:<48} {:<27} {:<12} {:<8} {}\n", "variant", "layout", "granularity", "regs", "spills (sm_80/sm_90)");
  for (const auto& j : all) {
    std::string regs, spills;
    for (const auto& [arch, r] : j["resources"].items()) {
      regs += (regs.empty() ? "" : "/") + std::to_string(r["registers"].get<int>());
      spills += (spills.empty() ? "" : "/") + std::to_string(r["spill_store_bytes"].get<int>());
    }
    fmt::print("{:<48} {:<27} {:<12} {:<8} {}\n", j["name"].get<std::string>(), j["layout"].get<std::string>(),
               j["granularity"].get<std::string>(),
               regs.empty() ? "-" : regs, spills.empty() ? "-" : spills);
    fmt::print("    table: {}; partition: {}; staging: {}\n", j["table"].get<std::string>(),
               j["partition"].get<std::string>(), j["staging"].get<std::string>());
    std::string loops;  // a thread's own loops (decode, copy-out, GEMV steps), not the per-block ones
    for (const auto& l : j["sass_loops"]) {
      if (l["barrier"].get<bool>()) continue;
      const int lo = l["min_cycle"].get<int>(), hi = l["max_cycle"].get<int>();
      loops += lo == hi ? fmt::format(" {}", lo) : fmt::format(" {}..{}", lo, hi);
    }
    if (!loops.empty()) fmt::print("    sm_90 SASS, instructions per iteration of its thread loops:{}\n", loops);
    if (j.contains("occupancy")) {
      const auto& o = j["occupancy"];
      std::string per_arch;
      for (const SmLimits& l : kSmLimits) {
        const auto& a = o[l.arch];
        per_arch += fmt::format("; {} {} blocks/SM, {:.0f}% ({}{})", l.arch, a["blocks_per_sm"].get<unsigned>(),
                                100 * a["occupancy"].get<double>(), a["limited_by"].get<std::string>(),
                                a["registers_known"].get<bool>() ? "" : ", registers unknown");
      }
      fmt::print("    shared memory {} B/block{}\n", o["smem_bytes"].get<unsigned>(), per_arch);
    }
    if (j.contains("decode_loop")) {
      std::string passes;
      for (const char* pass : {"pass1", "pass2"}) {
        if (!j["decode_loop"].contains(pass)) continue;
        const auto& q = j["decode_loop"][pass];
        passes += fmt::format("{}{}: {:.3f} iterations per code, {:.3f} lane slots per code ({:.0f}% of lanes busy)",
                              passes.empty() ? "" : "; ", std::string(pass) == "pass1" ? "pass 1 (counting)" : "pass 2",
                              q["iterations_per_code"].get<double>(), q["lane_slots_per_code"].get<double>(),
                              100 * q["lanes_busy"].get<double>());
      }
      fmt::print("    decode loop (host emulation): {}\n", passes.empty() ? "no loop iterations counted" : passes);
    }
  }
  if (!unit_name.empty()) fmt::print("(occupancy and decode loops on {})\n", unit_name);
  if (res_doc.empty()) fmt::print("(no kernel_resources.json: built without CUDA or not built yet)\n");
  if (sass_doc.empty()) fmt::print("(no kernel_sass.json: scripts/kernel_sass.py writes it; ctest kernel_sass runs it)\n");
  return 0;
}

}  // namespace

void add_variants(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  auto resources = std::make_shared<std::string>();
  auto sass = std::make_shared<std::string>();
  auto with_occupancy = std::make_shared<bool>(false);
  auto fraction = std::make_shared<double>(0.05);
  auto with_lanes = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("variants",
                                 "List the decoder variants: traits, layout, ptxas resources, SASS instructions per loop iteration");
  cmd->add_flag("--json", *json, "Print JSON");
  cmd->add_option("--resources", *resources, "kernel_resources.json to read (default: the build's)");
  cmd->add_option("--sass", *sass, "kernel_sass.json to read (default: the build's)");
  cmd->add_flag("--occupancy", *with_occupancy,
                "Also each variant's shared memory per block on a synthetic Nemo layer 1 and the blocks per SM it, "
                "the threads and the registers allow on sm_80 and sm_90 (no GPU needed)");
  cmd->add_flag("--lanes", *with_lanes,
                "Also each variant's decode loop on a synthetic Nemo layer 1, by the host emulation: iterations per "
                "code, and the lane slots per code a GPU warp spends waiting for its slowest lane (no GPU needed)");
  auto* fraction_opt = cmd->add_option("--fraction", *fraction,
                                       "--occupancy, --lanes: the fraction of the layer's rows to encode (default 0.05)");
  cmd->callback([json, resources, sass, with_occupancy, fraction, with_lanes, fraction_opt] {
    if (fraction_opt->count() > 0 && !*with_occupancy && !*with_lanes) {
      throw Error("variants: --fraction sets the layer --occupancy and --lanes encode: it needs one of them");
    }
    exit_code() = run_variants(*json, *resources, *sass, *with_occupancy, *fraction, *with_lanes);
  });
}

}  // namespace df11::cli
