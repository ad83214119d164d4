// Tests of the safetensors reader and writer: bit-exact round trips, and hand-built corrupt files
// that must each fail with a df11::Error naming the file and the culprit tensor.
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include "tests/temp_dir.hpp"

#include "datasets/safetensors.hpp"

namespace fs = std::filesystem;
using Catch::Contains;
using df11::st::DType;
using df11::st::File;
using df11::st::Writer;

namespace {

// Each suite's directories carry its own prefix, so leftovers say where they came from.
class TempDir : public df11::test::TempDir {
 public:
  TempDir() : df11::test::TempDir("df11_st_test") {}
};

template <class T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

template <class T>
std::vector<T> random_values(std::size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<T> v(n);
  for (auto& x : v) {
    const uint64_t bits = rng();
    std::memcpy(&x, &bits, sizeof(T));
  }
  return v;
}

bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

// A file laid out by hand: 8-byte little-endian header length (default: the real one), header
// text, then `data_size` bytes of data.
void write_raw(const fs::path& path, const std::string& header, std::size_t data_size,
               std::optional<uint64_t> header_length = std::nullopt) {
  const uint64_t n = header_length.value_or(header.size());
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xFF));
  out << header;
  for (std::size_t i = 0; i < data_size; ++i) out.put(static_cast<char>(i));
  REQUIRE(out.good());
}

void write_bytes(const fs::path& path, std::size_t size) {
  std::ofstream out(path, std::ios::binary);
  for (std::size_t i = 0; i < size; ++i) out.put('\x01');
  REQUIRE(out.good());
}

// The message of the df11::Error that File::open(path) throws; a failed check if it returns.
// Any other exception type escapes and fails the test.
std::string open_error(const fs::path& path) {
  try {
    const File file = File::open(path);
  } catch (const df11::Error& e) {
    return e.what();
  }
  FAIL_CHECK("File::open(" << path << ") did not throw");
  return {};
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.push_back(entry.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

uint64_t header_length_of(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::array<unsigned char, 8> b{};
  in.read(reinterpret_cast<char*>(b.data()), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | b[i];
  return n;
}

}  // namespace

TEST_CASE("dtype names and sizes", "[safetensors]") {
  const std::vector<std::pair<DType, std::size_t>> all = {
      {DType::BOOL, 1}, {DType::U8, 1},      {DType::I8, 1},     {DType::U16, 2},
      {DType::I16, 2},  {DType::F16, 2},     {DType::BF16, 2},   {DType::U32, 4},
      {DType::I32, 4},  {DType::F32, 4},     {DType::U64, 8},    {DType::I64, 8},
      {DType::F64, 8},  {DType::F8_E4M3, 1}, {DType::F8_E5M2, 1}};
  for (const auto& [dtype, size] : all) {
    CHECK(df11::st::dtype_size(dtype) == size);
    CHECK(df11::st::parse_dtype(df11::st::dtype_name(dtype)) == dtype);
  }
  CHECK(df11::st::dtype_name(DType::BF16) == "BF16");
  CHECK(df11::st::dtype_name(DType::F8_E4M3) == "F8_E4M3");
  CHECK_FALSE(df11::st::parse_dtype("bf16").has_value());
  CHECK_FALSE(df11::st::parse_dtype("").has_value());
  CHECK_FALSE(df11::st::parse_dtype("F128").has_value());
}

TEST_CASE("write then read back bit-exactly", "[safetensors]") {
  const TempDir dir;
  const fs::path path = dir / "model.safetensors";

  const auto bf16 = random_values<uint16_t>(3 * 5, 1);
  const auto f32 = random_values<float>(7, 2);
  const auto i64 = random_values<int64_t>(4, 3);
  const auto u8 = random_values<uint8_t>(5, 4);  // odd length: later tensors start unaligned
  const auto boolean = std::vector<uint8_t>{0, 1, 1, 0};
  const auto f8 = random_values<uint8_t>(6, 5);
  const std::vector<uint16_t> empty_f16;
  const std::vector<double> scalar = {3.25};

  Writer writer;
  writer.add("a.bf16", DType::BF16, {3, 5}, bytes_of(bf16));
  writer.add("b.f32", DType::F32, {7}, bytes_of(f32));
  writer.add("c.i64", DType::I64, {2, 2}, bytes_of(i64));
  writer.add("d.u8", DType::U8, {5}, bytes_of(u8));
  writer.add("e.bool", DType::BOOL, {2, 1, 2}, bytes_of(boolean));
  writer.add("f.empty", DType::F16, {0, 4}, bytes_of(empty_f16));
  writer.add("g.scalar", DType::F64, {}, bytes_of(scalar));
  {
    // add_owned must keep its own copy: the source dies before write().
    std::vector<std::byte> copy(bytes_of(f8).begin(), bytes_of(f8).end());
    writer.add_owned("h.f8", DType::F8_E4M3, {2, 3}, std::move(copy));
  }
  const uint64_t expected_data = 30 + 28 + 32 + 5 + 4 + 0 + 8 + 6;
  CHECK(writer.data_bytes() == expected_data);
  CHECK(writer.size() == 8);
  writer.write(path);

  const File file = File::open(path);
  CHECK(file.path() == path);
  CHECK(file.metadata().empty());
  const uint64_t n = header_length_of(path);
  CHECK(n % 8 == 0);
  CHECK(file.header_size() == n);
  CHECK(file.file_size() == 8 + n + expected_data);
  CHECK(fs::file_size(path) == file.file_size());

  // Offsets follow the order of add(), contiguously.
  const auto& tensors = file.tensors();
  REQUIRE(tensors.size() == 8);
  const std::vector<std::string> order = {"a.bf16", "b.f32",   "c.i64",    "d.u8",
                                          "e.bool", "f.empty", "g.scalar", "h.f8"};
  uint64_t offset = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    CHECK(tensors[i].name == order[i]);
    CHECK(tensors[i].begin == offset);
    offset = tensors[i].end;
  }
  CHECK(offset == expected_data);

  const auto& a = file.at("a.bf16");
  CHECK(a.dtype == DType::BF16);
  CHECK(a.shape == std::vector<int64_t>{3, 5});
  CHECK(a.n_elements() == 15);
  CHECK(same_bytes(file.bytes(a), bytes_of(bf16)));
  const auto a_values = file.data<uint16_t>(a, DType::BF16);
  CHECK(std::vector<uint16_t>(a_values.begin(), a_values.end()) == bf16);

  CHECK(same_bytes(file.bytes(file.at("b.f32")), bytes_of(f32)));
  CHECK(same_bytes(file.bytes(file.at("c.i64")), bytes_of(i64)));
  CHECK(same_bytes(file.bytes(file.at("d.u8")), bytes_of(u8)));
  CHECK(same_bytes(file.bytes(file.at("e.bool")), bytes_of(boolean)));
  CHECK(file.at("e.bool").shape == std::vector<int64_t>{2, 1, 2});
  CHECK(same_bytes(file.bytes(file.at("h.f8")), bytes_of(f8)));
  CHECK(file.at("h.f8").dtype == DType::F8_E4M3);

  const auto& empty = file.at("f.empty");
  CHECK(empty.shape == std::vector<int64_t>{0, 4});
  CHECK(empty.n_elements() == 0);
  CHECK(file.bytes(empty).empty());
  CHECK(file.data<uint16_t>(empty, DType::F16).empty());

  const auto& g = file.at("g.scalar");
  CHECK(g.shape.empty());
  CHECK(g.n_elements() == 1);
  CHECK(same_bytes(file.bytes(g), bytes_of(scalar)));
}

TEST_CASE("metadata round trip", "[safetensors]") {
  const TempDir dir;
  const std::vector<uint16_t> w = {1, 2, 3, 4};

  SECTION("set metadata comes back, later values win") {
    Writer writer;
    writer.add("w", DType::BF16, {4}, bytes_of(w));
    writer.set_metadata("format", "pt");
    writer.set_metadata("note", "héllo \"quoted\" \\ tab\t");
    writer.set_metadata("format", "df11");
    writer.write(dir / "m.safetensors");
    const File file = File::open(dir / "m.safetensors");
    CHECK(file.metadata() == std::map<std::string, std::string>{
                                 {"format", "df11"}, {"note", "héllo \"quoted\" \\ tab\t"}});
  }
  SECTION("no metadata: no __metadata__ key in the header") {
    Writer writer;
    writer.add("w", DType::BF16, {4}, bytes_of(w));
    writer.write(dir / "m.safetensors");
    std::ifstream in(dir / "m.safetensors", std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(text.find("__metadata__") == std::string::npos);
    CHECK(File::open(dir / "m.safetensors").metadata().empty());
  }
}

TEST_CASE("find, at and typed views", "[safetensors]") {
  const TempDir dir;
  const fs::path path = dir / "lookup.safetensors";
  const std::vector<uint16_t> w = {0x3f80, 0xbf80, 0x7fc0};
  const std::vector<uint8_t> odd = {9};
  Writer writer;
  writer.add("model.w", DType::BF16, {3}, bytes_of(w));
  writer.add("odd", DType::U8, {1}, bytes_of(odd));
  writer.add("shifted", DType::BF16, {3}, bytes_of(w));  // starts at an odd offset
  writer.write(path);
  File file = File::open(path);

  CHECK(file.find("model.w") != nullptr);
  CHECK(file.find("model.w")->name == "model.w");
  CHECK(file.find("model") == nullptr);
  CHECK(&file.at("model.w") == file.find("model.w"));
  CHECK_THROWS_AS(file.at("missing.weight"), df11::Error);
  CHECK_THROWS_WITH(file.at("missing.weight"),
                    Contains("lookup.safetensors") && Contains("missing.weight"));

  const auto& t = file.at("model.w");
  CHECK(file.data<uint16_t>(t, DType::BF16)[2] == 0x7fc0);
  CHECK(file.data<int16_t>(t, DType::BF16).size() == 3);
  CHECK_THROWS_AS(file.data<uint16_t>(t, DType::F16), df11::Error);
  CHECK_THROWS_WITH(file.data<uint16_t>(t, DType::F16), Contains("lookup.safetensors") &&
                                                            Contains("model.w") &&
                                                            Contains("BF16") && Contains("F16"));
  CHECK_THROWS_WITH(file.data<uint32_t>(t, DType::BF16),
                    Contains("lookup.safetensors") && Contains("model.w"));

  // Unaligned data refuses a typed view but stays readable as bytes.
  const auto& shifted = file.at("shifted");
  CHECK(shifted.begin == 7);
  CHECK_THROWS_WITH(file.data<uint16_t>(shifted, DType::BF16),
                    Contains("shifted") && Contains("aligned"));
  CHECK(same_bytes(file.bytes(shifted), bytes_of(w)));

  // Moving keeps the mapping alive in the new owner.
  const File moved = std::move(file);
  CHECK(moved.data<uint16_t>(moved.at("model.w"), DType::BF16)[0] == 0x3f80);
  File reassigned = File::open(path);
  reassigned = File::open(path);
  CHECK(reassigned.tensors().size() == 3);
}

TEST_CASE("empty writer and hand-made valid files", "[safetensors]") {
  const TempDir dir;
  SECTION("a writer with nothing added writes {} and an empty data section") {
    Writer().write(dir / "empty.safetensors");
    const File file = File::open(dir / "empty.safetensors");
    CHECK(file.tensors().empty());
    CHECK(file.metadata().empty());
    CHECK(file.file_size() == 16);
  }
  SECTION("unpadded {} header") {
    write_raw(dir / "bare.safetensors", "{}", 0);
    CHECK(File::open(dir / "bare.safetensors").tensors().empty());
  }
  SECTION("trailing-space padding, zero-length tensors sharing offsets, entries in any order") {
    write_raw(dir / "pad.safetensors",
              R"({"__metadata__":{"k":"v"},"z":{"dtype":"F32","shape":[2,0],"data_offsets":[4,4]},)"
              R"("x":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},)"
              R"("y":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})"
              "      ",
              8);
    const File file = File::open(dir / "pad.safetensors");
    REQUIRE(file.tensors().size() == 3);
    CHECK(file.tensors()[0].name == "y");
    CHECK(file.tensors()[1].name == "z");
    CHECK(file.tensors()[2].name == "x");
    CHECK(file.metadata().at("k") == "v");
    CHECK(std::to_integer<int>(file.bytes(file.at("x"))[0]) == 4);
  }
  SECTION("huge dimensions next to a zero one are an empty tensor, not an overflow") {
    write_raw(dir / "huge.safetensors",
              R"({"e":{"dtype":"F64","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}})", 0);
    const File file = File::open(dir / "huge.safetensors");
    CHECK(file.at("e").n_elements() == 0);
  }
}

TEST_CASE("corrupt files are rejected with a precise df11::Error", "[safetensors]") {
  const TempDir dir;
  const fs::path path = dir / "bad.safetensors";
  const std::string ok_x = R"("x.weight":{"dtype":"BF16","shape":[4,5],"data_offsets":[0,40]})";

  SECTION("valid baseline opens") {
    write_raw(path, "{" + ok_x + "}", 40);
    CHECK(File::open(path).at("x.weight").n_elements() == 20);
  }
  SECTION("truncated file, cut inside the data section") {
    const std::vector<uint16_t> a(64, 0x1234);
    const std::vector<uint16_t> b(64, 0x4321);
    Writer writer;
    writer.add("first", DType::BF16, {64}, bytes_of(a));
    writer.add("second", DType::BF16, {8, 8}, bytes_of(b));
    writer.write(path);
    fs::resize_file(path, fs::file_size(path) - 100);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("'second'") &&
                                     Contains("[128,256]") && Contains("156 bytes"));
  }
  SECTION("header length past the end of the file") {
    write_raw(path, "{}", 0, 1000);
    CHECK_THAT(open_error(path),
               Contains("bad.safetensors") && Contains("1000") && Contains("only 10"));
  }
  SECTION("absurd header length") {
    write_raw(path, "{}", 0, ~uint64_t{0});
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("18446744073709551615"));
  }
  SECTION("invalid JSON") {
    write_raw(path, R"({"x.weight":{"dtype":"BF16",)", 40);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("not valid JSON"));
  }
  SECTION("invalid UTF-8 in the header") {
    write_raw(path, "{\"x\xff\":{}}", 0);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("not valid JSON"));
  }
  SECTION("a header nested 100000 deep (a 200 KB file): refused at the parse, not a stack overflow later") {
    const std::string deep = std::string(100000, '[') + "1" + std::string(100000, ']');
    write_raw(path, R"({"x.weight":{"dtype":"BF16","shape":)" + deep + R"(,"data_offsets":[0,2]}})", 2);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("nested deeper than 64 levels"));
  }
  SECTION("a tensor name of 200000 bytes") {
    write_raw(path, R"({"model.layers.)" + std::string(200000, '1') + R"(.x.weight":{"dtype":"BF16","shape":[1],)"
                    R"("data_offsets":[0,2]}})", 2);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("names may have at most 1024"));
  }
  SECTION("a FIFO, not a file: refused without waiting for a writer") {
    fs::remove(path);
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("not a regular file"));
  }
  SECTION("header is JSON but not an object") {
    write_raw(path, "[1,2,3]", 0);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("array"));
  }
  SECTION("zero header length") {
    write_raw(path, "", 8, 0);
    CHECK_THAT(open_error(path), Contains("bad.safetensors"));
  }
  SECTION("entry is not an object") {
    write_raw(path, R"({"x.weight":[1,2]})", 0);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("'x.weight'"));
  }
  SECTION("missing or ill-typed fields") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {R"({"dtype":"BF16","data_offsets":[0,40]})", "'shape'"},
        {R"({"shape":[4,5],"data_offsets":[0,40]})", "'dtype'"},
        {R"({"dtype":7,"shape":[4,5],"data_offsets":[0,40]})", "'dtype'"},
        {R"({"dtype":"BF16","shape":[4,5]})", "'data_offsets'"},
        {R"({"dtype":"BF16","shape":[4,5],"data_offsets":[0]})", "'data_offsets'"},
        {R"({"dtype":"BF16","shape":[4,5],"data_offsets":[-2,40]})", "'data_offsets'"},
        {R"({"dtype":"BF16","shape":[4,5],"data_offsets":[0,40.0]})", "'data_offsets'"},
        {R"({"dtype":"BF16","shape":"4x5","data_offsets":[0,40]})", "'shape'"},
        {R"({"dtype":"BF16","shape":[4,5.5],"data_offsets":[0,40]})", "not an array of integers"},
        {R"({"dtype":"BF16","shape":[4,"5"],"data_offsets":[0,40]})", "not an array of integers"},
    };
    for (const auto& [entry, what] : cases) {
      INFO(entry);
      write_raw(path, R"({"x.weight":)" + entry + "}", 40);
      CHECK_THAT(open_error(path),
                 Contains("bad.safetensors") && Contains("'x.weight'") && Contains(what));
    }
  }
  SECTION("unknown dtype") {
    write_raw(path, R"({"x.weight":{"dtype":"BF17","shape":[4,5],"data_offsets":[0,40]}})", 40);
    CHECK_THAT(open_error(path),
               Contains("bad.safetensors") && Contains("'x.weight'") && Contains("BF17"));
  }
  SECTION("negative dimension") {
    write_raw(path, R"({"x.weight":{"dtype":"BF16","shape":[-4,5],"data_offsets":[0,40]}})", 40);
    CHECK_THAT(open_error(path),
               Contains("bad.safetensors") && Contains("'x.weight'") && Contains("-4"));
  }
  SECTION("overflowing element count") {
    write_raw(
        path,
        R"({"x.weight":{"dtype":"BF16","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0);
    CHECK_THAT(open_error(path),
               Contains("bad.safetensors") && Contains("'x.weight'") && Contains("64 bits"));
  }
  SECTION("shape and byte range disagree") {
    write_raw(path, R"({"x.weight":{"dtype":"BF16","shape":[4,5],"data_offsets":[0,38]}})", 40);
    CHECK_THAT(open_error(path), Contains("bad.safetensors: tensor 'x.weight': shape [4,5] x BF16 "
                                          "needs 40 bytes but data_offsets span 38"));
  }
  SECTION("begin after end") {
    write_raw(path, R"({"x.weight":{"dtype":"BF16","shape":[4,5],"data_offsets":[40,0]}})", 40);
    CHECK_THAT(open_error(path),
               Contains("bad.safetensors") && Contains("'x.weight'") && Contains("[40,0]"));
  }
  SECTION("range past the end of the data section") {
    write_raw(path, R"({"x.weight":{"dtype":"BF16","shape":[4,5],"data_offsets":[8,48]}})", 40);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("'x.weight'") &&
                                     Contains("[8,48]") && Contains("40 bytes"));
  }
  SECTION("overlapping ranges name both tensors") {
    write_raw(path,
              R"({"a.weight":{"dtype":"U8","shape":[10],"data_offsets":[0,10]},)"
              R"("b.weight":{"dtype":"U8","shape":[2],"data_offsets":[20,22]},)"
              R"("c.weight":{"dtype":"F32","shape":[2],"data_offsets":[6,14]}})",
              40);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("'a.weight'") &&
                                     Contains("'c.weight'") && Contains("overlap"));
  }
  SECTION("identical ranges overlap") {
    write_raw(path,
              R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
              R"("b":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})",
              4);
    CHECK_THAT(open_error(path), Contains("'a'") && Contains("'b'") && Contains("overlap"));
  }
  SECTION("duplicate tensor name") {
    write_raw(path, "{" + ok_x + "," + ok_x + "}", 40);
    CHECK_THAT(open_error(path),
               Contains("bad.safetensors") && Contains("'x.weight'") && Contains("twice"));
  }
  SECTION("a key twice in one entry (nlohmann keeps the last: one of two dtypes)") {
    write_raw(path, R"({"x.weight":{"dtype":"BF16","shape":[4,5],"dtype":"F16","data_offsets":[0,40]}})", 40);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("tensor 'x.weight': key 'dtype'") &&
                                     Contains("twice in its header entry"));
    // The same key in two entries is fine.
    write_raw(path, "{" + ok_x + R"(,"y":{"dtype":"U8","shape":[1],"data_offsets":[40,41]}})", 41);
    CHECK(File::open(path).tensors().size() == 2);
  }
  SECTION("a gap between tensors, or bytes after the last (the reference loader refuses both)") {
    write_raw(path, "{" + ok_x + R"(,"y":{"dtype":"U8","shape":[1],"data_offsets":[44,45]}})", 45);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("tensor 'y' starts at byte 44") &&
                                     Contains("'x.weight' ends at 40") && Contains("gap"));
    write_raw(path, R"({"y":{"dtype":"U8","shape":[1],"data_offsets":[3,4]}})", 4);
    CHECK_THAT(open_error(path), Contains("tensor 'y' starts at byte 3") && Contains("nothing ends at 0"));
    write_raw(path, "{" + ok_x + "}", 48);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("8 bytes after the last tensor ('x.weight')"));
    write_raw(path, "{}", 1);
    CHECK_THAT(open_error(path), Contains("1 bytes after the last tensor"));
  }
  SECTION("a NUL byte in the header hides what follows it from the JSON parser") {
    write_raw(path, "{" + ok_x + "}" + std::string(1, '\0') + R"({"garbage": [1,2,3 not json)", 40);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("a NUL byte at offset"));
  }
  SECTION("a UTF-8 byte-order mark before the header") {
    write_raw(path, "\xEF\xBB\xBF{" + ok_x + "}", 40);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("byte-order mark"));
  }
  SECTION("__metadata__ not an object of strings") {
    write_raw(path, R"({"__metadata__":{"a":"b","n":3},)" + ok_x + "}", 40);
    CHECK_THAT(open_error(path),
               Contains("bad.safetensors") && Contains("__metadata__") && Contains("'n'"));
    write_raw(path, R"({"__metadata__":"nope",)" + ok_x + "}", 40);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("__metadata__"));
  }
  SECTION("empty file") {
    write_bytes(path, 0);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("0 bytes"));
  }
  SECTION("7-byte file") {
    write_bytes(path, 7);
    CHECK_THAT(open_error(path), Contains("bad.safetensors") && Contains("7 bytes"));
  }
  SECTION("missing file and directory") {
    CHECK_THAT(open_error(dir / "absent.safetensors"), Contains("absent.safetensors"));
    CHECK_THAT(open_error(dir.path()), Contains(dir.path().string()));
  }
}

TEST_CASE("writer validates add() and writes atomically", "[safetensors]") {
  const TempDir dir;
  const std::vector<uint16_t> w(20, 0x3f80);

  SECTION("add() checks size, names and shapes") {
    Writer writer;
    CHECK_THROWS_AS(writer.add("x.weight", DType::BF16, {4, 4}, bytes_of(w)), df11::Error);
    CHECK_THROWS_WITH(writer.add("x.weight", DType::BF16, {4, 4}, bytes_of(w)),
                      Contains("'x.weight'") && Contains("32") && Contains("40"));
    CHECK_THROWS_AS(writer.add_owned("y", DType::F32, {3}, std::vector<std::byte>(8)), df11::Error);
    CHECK_THROWS_AS(writer.add("neg", DType::U8, {-1, -20}, std::span<const std::byte>()),
                    df11::Error);
    CHECK_THROWS_AS(writer.add("__metadata__", DType::BF16, {20}, bytes_of(w)), df11::Error);
    CHECK(writer.size() == 0);
    writer.add("x.weight", DType::BF16, {4, 5}, bytes_of(w));
    CHECK_THROWS_WITH(writer.add("x.weight", DType::BF16, {20}, bytes_of(w)),
                      Contains("'x.weight'") && Contains("twice"));
    CHECK(writer.size() == 1);
    CHECK(writer.data_bytes() == 40);
  }
  SECTION("a path in a missing directory throws and leaves nothing") {
    Writer writer;
    writer.add("x.weight", DType::BF16, {20}, bytes_of(w));
    const fs::path target = dir / "no_such_dir" / "out.safetensors";
    CHECK_THROWS_AS(writer.write(target), df11::Error);
    CHECK_THROWS_WITH(writer.write(target), Contains("out.safetensors"));
    CHECK_FALSE(fs::exists(target));
    CHECK_FALSE(fs::exists(dir / "no_such_dir"));
    CHECK(names_in(dir.path()).empty());
  }
  SECTION("a failed rename removes the temporary file") {
    // The target is a non-empty directory, so everything but the final rename succeeds.
    fs::create_directories(dir / "out.safetensors" / "inside");
    Writer writer;
    writer.add("x.weight", DType::BF16, {20}, bytes_of(w));
    CHECK_THROWS_WITH(writer.write(dir / "out.safetensors"), Contains("out.safetensors"));
    CHECK(names_in(dir.path()) == std::vector<std::string>{"out.safetensors"});
    CHECK(fs::is_directory(dir / "out.safetensors"));
  }
  SECTION("success leaves only the target, and overwrites replace it whole") {
    const std::vector<uint16_t> v(20, 0x4000);
    Writer first;
    first.add("x.weight", DType::BF16, {20}, bytes_of(w));
    first.write(dir / "out.safetensors");
    CHECK(names_in(dir.path()) == std::vector<std::string>{"out.safetensors"});

    Writer second;
    second.add("x.weight", DType::BF16, {4, 5}, bytes_of(v));
    second.add("extra", DType::U8, {0}, std::span<const std::byte>());
    second.set_metadata("k", "v");
    second.write(dir / "out.safetensors");
    CHECK(names_in(dir.path()) == std::vector<std::string>{"out.safetensors"});
    const File file = File::open(dir / "out.safetensors");
    CHECK(file.tensors().size() == 2);
    CHECK(file.at("x.weight").shape == std::vector<int64_t>{4, 5});
    CHECK(same_bytes(file.bytes(file.at("x.weight")), bytes_of(v)));
    CHECK(file.metadata().at("k") == "v");
  }
  SECTION("names and metadata that are not UTF-8 fail before any file is created") {
    Writer writer;
    writer.add("bad\xff", DType::BF16, {20}, bytes_of(w));
    CHECK_THROWS_AS(writer.write(dir / "out.safetensors"), df11::Error);
    CHECK(names_in(dir.path()).empty());
  }
}
