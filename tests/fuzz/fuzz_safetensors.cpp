// Fuzz target: a safetensors file. File::open validates the header; afterwards every tensor it
// lists must lie inside the mapping (each byte is read here, so ASan or a SIGSEGV/SIGBUS would
// tell), typed views must match their dtype, and refusals are df11::Error naming the file.
#include <string>

#include "datasets/safetensors.hpp"
#include "scratch.hpp"

using namespace df11;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::ScratchCleanup cleanup;
  const auto path = fuzz::scratch_dir() / "input.safetensors";
  fuzz::write_bytes(path, data, size);
  try {
    const st::File f = st::File::open(path);
    unsigned sum = 0;
    for (const st::TensorInfo& t : f.tensors()) {
      const auto bytes = f.bytes(t);
      if (bytes.size() != t.end - t.begin) fuzz::finding("tensor " + t.name + ": bytes() size differs from its range");
      if (t.n_elements() * st::dtype_size(t.dtype) != bytes.size())
        fuzz::finding("tensor " + t.name + ": element count and byte range disagree");
      for (std::byte b : bytes) sum += static_cast<unsigned>(b);
      if (f.find(t.name) != &t) fuzz::finding("tensor " + t.name + ": find() does not return it");
      try {
        if (t.dtype == st::DType::BF16) sum += f.data<uint16_t>(t, st::DType::BF16).size();
        (void)f.data<uint8_t>(t, st::DType::U8);
      } catch (const Error& e) {
        if (std::string(e.what()).find("input.safetensors") == std::string::npos)
          fuzz::finding(std::string("typed view refused without naming the file: ") + e.what());
      }
    }
    for (const auto& [k, v] : f.metadata()) sum += static_cast<unsigned>(k.size() + v.size());
    volatile unsigned sink = sum;
    (void)sink;
    fuzz::accepted("opened");
  } catch (const Error& e) {
    fuzz::refused("open", e.what());
    if (std::string(e.what()).find("input.safetensors") == std::string::npos)
      fuzz::finding(std::string("refused without naming the file: ") + e.what());
  }
  return 0;
}

namespace df11::fuzz {

std::vector<Bytes> fuzz_seeds() {
  std::vector<Bytes> seeds;
  const auto path = scratch_dir() / "seed.safetensors";
  {
    st::Writer w;
    std::vector<std::byte> a(24), b(6), c(0);
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<std::byte>(i * 7);
    w.add("model.layers.0.weight", st::DType::BF16, {3, 4}, a);
    w.add("model.norm.weight", st::DType::U8, {6}, b);
    w.add("empty", st::DType::F32, {0, 5}, c);
    w.set_metadata("format", "pt");
    w.write(path);
    seeds.push_back(read_bytes(path));
  }
  {
    st::Writer w;
    std::vector<std::byte> s(8);
    w.add("scalar", st::DType::I64, {}, s);
    w.write(path);
    seeds.push_back(read_bytes(path));
  }
  std::filesystem::remove(path);
  return seeds;
}

}  // namespace df11::fuzz
