// `df11 variants`: every registered decoder variant with its design traits, the layout it reads
// and its ptxas resources per architecture (from <build>/kernel_resources.json).
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "codec/common.hpp"
#include "common/variant_decoder.hpp"
#include "decoder.hpp"

namespace df11::cli {
namespace {

std::filesystem::path default_resources_path() {
  // The binary lives in <build>/bin; the build writes <build>/kernel_resources.json.
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  return exe.parent_path().parent_path() / "kernel_resources.json";
}

// The demangled name ptxas reports for a variant's kernel instance.
std::string kernel_signature(const dec::VariantSpec& s) {
  return fmt::format("{}<(df11::dec::TableKind){}, (df11::dec::Partition){}, (df11::dec::Staging){}, {}, {}>",
                     s.persistent ? "gap_decode_persistent_kernel" : "gap_decode_kernel", static_cast<int>(s.table), static_cast<int>(s.partition), static_cast<int>(s.staging),
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

int run_variants(bool json, const std::string& resources_arg) {
  const std::filesystem::path res_path =
      resources_arg.empty() ? default_resources_path() : std::filesystem::path(resources_arg);
  nlohmann::json res_doc = nlohmann::json::object();
  if (!res_path.empty() && std::filesystem::exists(res_path)) {
    std::ifstream in(res_path);
    try {
      res_doc = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      throw Error(fmt::format("{}: not valid JSON: {}", res_path.string(), e.what()));
    }
  } else if (!resources_arg.empty()) {
    throw Error(fmt::format("{}: no such file", resources_arg));
  }
  dec::Registry reg;
  dec::register_all(reg);
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
    } else {
      j["resources"] = nlohmann::json::object();  // loaded at run time (official-ptx)
    }
    all.push_back(std::move(j));
  }
  if (json) {
    std::cout << nlohmann::json{{"built_with_cuda", dec::built_with_cuda()},
                                {"resources_file", res_doc.empty() ? "" : res_path.string()},
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
  }
  if (res_doc.empty()) fmt::print("(no kernel_resources.json: built without CUDA or not built yet)\n");
  return 0;
}

}  // namespace

void add_variants(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  auto resources = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("variants", "List the decoder variants: traits, layout, ptxas resources");
  cmd->add_flag("--json", *json, "Print JSON");
  cmd->add_option("--resources", *resources, "kernel_resources.json to read (default: the build's)");
  cmd->callback([json, resources] { exit_code() = run_variants(*json, *resources); });
}

}  // namespace df11::cli
