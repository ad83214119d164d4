// safetensors reader and writer (see safetensors.hpp): header validation against the mapped file,
// mapping lifetime, and the write-to-temp-then-rename path that keeps the final name whole.
#include "datasets/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <system_error>
#include <tuple>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "datasets/json_io.hpp"

namespace df11::st {
namespace {

using nlohmann::json;

struct DTypeRow {
  DType dtype;
  std::string_view name;
  std::size_t size;
};

constexpr std::array<DTypeRow, 15> kDTypes{{
    {DType::BOOL, "BOOL", 1},
    {DType::U8, "U8", 1},
    {DType::I8, "I8", 1},
    {DType::U16, "U16", 2},
    {DType::I16, "I16", 2},
    {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},
    {DType::U32, "U32", 4},
    {DType::I32, "I32", 4},
    {DType::F32, "F32", 4},
    {DType::U64, "U64", 8},
    {DType::I64, "I64", 8},
    {DType::F64, "F64", 8},
    {DType::F8_E4M3, "F8_E4M3", 1},
    {DType::F8_E5M2, "F8_E5M2", 1},
}};

const DTypeRow& row_of(DType dtype) {
  for (const DTypeRow& row : kDTypes) {
    if (row.dtype == dtype) return row;
  }
  // Only reachable through a value cast from outside the enum's range.
  throw Error(fmt::format("safetensors: invalid DType value {}", static_cast<int>(dtype)));
}

// Same limit as the reference implementation: anything larger is a corrupt length field rather
// than a real header, and refusing it early avoids parsing garbage.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Longest tensor name accepted (real ones are under 100 bytes).
constexpr std::size_t kMaxNameBytes = 1024;
constexpr uint64_t kLengthFieldBytes = 8;

std::string errno_text(int err) {
  return std::system_category().message(err);
}

std::string shape_text(std::span<const int64_t> shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i != 0) text += ',';
    text += std::to_string(shape[i]);
  }
  text += ']';
  return text;
}

struct ByteSize {
  uint64_t elements = 0;
  uint64_t bytes = 0;
  bool overflow = false;
};

// prod(shape) * elem_size for non-negative dimensions. A zero dimension empties the tensor
// whatever the others are, so it is checked first: [2^40, 2^40, 0] is a valid empty shape.
ByteSize byte_size(std::span<const int64_t> shape, std::size_t elem_size) {
  ByteSize size;
  if (std::find(shape.begin(), shape.end(), int64_t{0}) != shape.end()) return size;
  size.elements = 1;
  for (const int64_t dim : shape) {
    if (__builtin_mul_overflow(size.elements, static_cast<uint64_t>(dim), &size.elements)) {
      size.overflow = true;
      return size;
    }
  }
  size.overflow = __builtin_mul_overflow(size.elements, uint64_t{elem_size}, &size.bytes);
  return size;
}

// A non-negative JSON integer (signed or unsigned representation) as uint64.
std::optional<uint64_t> as_u64(const json& value) {
  if (value.is_number_unsigned()) return value.get<uint64_t>();
  if (value.is_number_integer()) {
    const int64_t v = value.get<int64_t>();
    if (v >= 0) return static_cast<uint64_t>(v);
  }
  return std::nullopt;
}

uint64_t read_le64(const std::byte* p) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | std::to_integer<uint64_t>(p[i]);
  return value;
}

// Closes a descriptor on every path out of File::open.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }

 private:
  int fd_;
};

// Parses and checks one header entry. `where` is the file path used to prefix messages.
TensorInfo parse_entry(const std::string& where, const std::string& name, const json& entry,
                       uint64_t data_size) {
  if (name.size() > kMaxNameBytes) {
    // Names go into error messages and are matched against pattern_dict regexes (in time linear
    // in the name, datasets/regex.hpp): a bound far above any real name.
    throw Error(fmt::format("{}: a tensor name of {} bytes (starting '{}'); names may have at most {}", where,
                            name.size(), name.substr(0, 60), kMaxNameBytes));
  }
  const std::string who = fmt::format("{}: tensor '{}'", where, name);
  if (!entry.is_object()) {
    throw Error(fmt::format("{}: entry must be a JSON object, got {}", who, entry.type_name()));
  }
  TensorInfo info;
  info.name = name;

  const auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end() || !dtype_it->is_string()) {
    throw Error(fmt::format("{}: 'dtype' is missing or not a string", who));
  }
  const auto& dtype_str = dtype_it->get_ref<const std::string&>();
  const std::optional<DType> dtype = parse_dtype(dtype_str);
  if (!dtype) throw Error(fmt::format("{}: unknown dtype '{}'", who, dtype_str));
  info.dtype = *dtype;

  const auto shape_it = entry.find("shape");
  if (shape_it == entry.end() || !shape_it->is_array()) {
    throw Error(fmt::format("{}: 'shape' is missing or not an array", who));
  }
  info.shape.reserve(shape_it->size());
  for (const json& dim : *shape_it) {
    if (dim.is_number_integer() && !dim.is_number_unsigned() && dim.get<int64_t>() < 0) {
      throw Error(fmt::format("{}: negative dimension {} in shape {}", who, dim.get<int64_t>(),
                              brief(*shape_it)));
    }
    const std::optional<uint64_t> value = as_u64(dim);
    if (!value)
      throw Error(fmt::format("{}: shape {} is not an array of integers", who, brief(*shape_it)));
    if (*value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      throw Error(
          fmt::format("{}: dimension {} in shape {} is too large", who, *value, brief(*shape_it)));
    }
    info.shape.push_back(static_cast<int64_t>(*value));
  }

  const auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
      !as_u64((*offsets_it)[0]) || !as_u64((*offsets_it)[1])) {
    throw Error(
        fmt::format("{}: 'data_offsets' must be an array of two non-negative integers, got {}", who,
                    offsets_it == entry.end() ? "nothing" : brief(*offsets_it)));
  }
  info.begin = *as_u64((*offsets_it)[0]);
  info.end = *as_u64((*offsets_it)[1]);
  if (info.begin > info.end) {
    throw Error(
        fmt::format("{}: data_offsets [{},{}] have begin after end", who, info.begin, info.end));
  }
  if (info.end > data_size) {
    throw Error(fmt::format(
        "{}: data_offsets [{},{}] run past the end of the data section, which has {} bytes "
        "(file truncated?)",
        who, info.begin, info.end, data_size));
  }

  const ByteSize size = byte_size(info.shape, dtype_size(info.dtype));
  if (size.overflow) {
    throw Error(fmt::format("{}: shape {} x {} has more bytes than fit in 64 bits", who,
                            shape_text(info.shape), dtype_str));
  }
  if (size.bytes != info.end - info.begin) {
    throw Error(fmt::format("{}: shape {} x {} needs {} bytes but data_offsets span {}", who,
                            shape_text(info.shape), dtype_str, size.bytes, info.end - info.begin));
  }
  return info;
}

std::map<std::string, std::string> parse_metadata(const std::string& where, const json& value) {
  if (!value.is_object()) {
    throw Error(fmt::format("{}: '__metadata__' must be an object of strings, got {}", where,
                            value.type_name()));
  }
  std::map<std::string, std::string> metadata;
  for (const auto& [key, item] : value.items()) {
    if (!item.is_string()) {
      throw Error(fmt::format("{}: '__metadata__' value of '{}' must be a string, got {}", where,
                              key, item.type_name()));
    }
    metadata.emplace(key, item.get<std::string>());
  }
  return metadata;
}

// Zero-length ranges hold no bytes and so cannot collide; the reference writer even places them
// at the same offset as their neighbour.
// The non-empty tensors (sorted by begin) must tile the data: no overlap, no gap, nothing after
// the last, as the reference loader requires (its InvalidOffset, MetadataIncompleteBuffer); a
// gap or a tail is what a damaged header or a file spliced from two would show.
void check_layout(const std::string& where, const std::vector<TensorInfo>& sorted, uint64_t data_size) {
  const TensorInfo* furthest = nullptr;  // the non-empty tensor seen so far that ends last
  for (const TensorInfo& t : sorted) {
    if (t.begin == t.end) continue;
    // Sorted by begin, so if any earlier tensor reaches past t.begin, the one ending last does.
    if (furthest != nullptr && t.begin < furthest->end) {
      throw Error(fmt::format("{}: tensors '{}' [{},{}) and '{}' [{},{}) overlap", where,
                              furthest->name, furthest->begin, furthest->end, t.name, t.begin,
                              t.end));
    }
    const uint64_t expected = furthest == nullptr ? 0 : furthest->end;
    if (t.begin != expected) {
      throw Error(fmt::format("{}: tensor '{}' starts at byte {} of the data, but {} ends at {}: the data has a gap",
                              where, t.name, t.begin,
                              furthest == nullptr ? std::string("nothing") : "'" + furthest->name + "'", expected));
    }
    furthest = &t;
  }
  const uint64_t end = furthest == nullptr ? 0 : furthest->end;
  if (end != data_size) {
    throw Error(fmt::format("{}: the data has {} bytes after the last tensor{}", where, data_size - end,
                            furthest == nullptr ? "" : " ('" + furthest->name + "')"));
  }
}

// Writes all of [data, data+size) or throws; write(2) may stop early and caps each call at ~2 GiB.
void write_all(int fd, const std::byte* data, uint64_t size, const std::string& where,
               const std::filesystem::path& tmp, uint64_t& written) {
  std::size_t done = 0;
  const int err = write_fully(fd, data, static_cast<std::size_t>(size), &done);
  written += done;
  if (err != 0) {
    throw Error(fmt::format("{}: writing temporary file {} failed after {} bytes: {}", where, tmp.string(), written,
                            errno_text(err)));
  }
}

// Owns the temporary file of Writer::write: unless committed, it is closed and unlinked, so a
// failed write leaves nothing behind.
class TempFile {
 public:
  TempFile(std::filesystem::path path, int fd) : path_(std::move(path)), fd_(fd) {}
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  [[nodiscard]] int fd() const { return fd_; }
  // close() is where NFS and friends report deferred write errors, so its result matters.
  [[nodiscard]] int close() {
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc;
  }
  void commit() { committed_ = true; }

 private:
  std::filesystem::path path_;
  int fd_;
  bool committed_ = false;
};

// Makes the rename itself durable. Best effort: some filesystems refuse fsync on directories, and
// the file content is already synced, so a failure here is not worth failing the write.
void sync_directory_of(const std::filesystem::path& path) {
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

// The checks every writer makes before accepting a tensor; `who` prefixes the message.
void check_tensor(const std::string& who, const std::set<std::string, std::less<>>& names,
                  const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                  std::size_t n_bytes) {
  if (name == "__metadata__") throw Error(fmt::format("{}: the name is reserved", who));
  if (names.contains(name)) throw Error(fmt::format("{}: added twice", who));
  for (const int64_t dim : shape) {
    if (dim < 0) {
      throw Error(fmt::format("{}: negative dimension in shape {}", who, shape_text(shape)));
    }
  }
  const ByteSize size = byte_size(shape, dtype_size(dtype));
  if (size.overflow) {
    throw Error(fmt::format("{}: shape {} x {} has more bytes than fit in 64 bits", who,
                            shape_text(shape), dtype_name(dtype)));
  }
  if (size.bytes != n_bytes) {
    throw Error(fmt::format("{}: shape {} x {} needs {} bytes but the data has {}", who,
                            shape_text(shape), dtype_name(dtype), size.bytes, n_bytes));
  }
}

struct HeaderEntry {
  std::string_view name;
  DType dtype;
  std::span<const int64_t> shape;
  uint64_t size;
};

// The JSON header of tensors laid out contiguously in the given order, padded with spaces (valid
// JSON whitespace) so the data section starts 8-aligned, as the reference writer does; aligned
// data lets readers view small dtypes in place.
std::string header_text(const std::map<std::string, std::string>& metadata,
                        std::span<const HeaderEntry> entries) {
  // ordered_json keeps insertion order, so the header lists tensors as they were added.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json& meta = header["__metadata__"];
    meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
  }
  uint64_t offset = 0;
  for (const HeaderEntry& e : entries) {
    const uint64_t end = offset + e.size;
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(dtype_name(e.dtype));
    entry["shape"] = std::vector<int64_t>(e.shape.begin(), e.shape.end());
    entry["data_offsets"] = nlohmann::ordered_json::array({offset, end});
    header[std::string(e.name)] = std::move(entry);
    offset = end;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');
  return text;
}

std::array<std::byte, kLengthFieldBytes> length_field(uint64_t header_size) {
  std::array<std::byte, kLengthFieldBytes> length{};
  for (std::size_t i = 0; i < length.size(); ++i) {
    length[i] = static_cast<std::byte>((header_size >> (8 * i)) & 0xFF);
  }
  return length;
}

// pwrite of all of [data, data+size) at `offset`, or throws naming `where`.
void pwrite_all(int fd, const std::byte* data, uint64_t size, uint64_t offset,
                const std::string& where) {
  constexpr uint64_t kChunk = uint64_t{1} << 30;
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, data, static_cast<std::size_t>(std::min(size, kChunk)),
                               static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string reason = n < 0 ? errno_text(errno) : "write returned 0";
      throw Error(fmt::format("{}: writing at offset {} failed: {}", where, offset, reason));
    }
    data += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

// The page-aligned range covering [p, p+size) (madvise wants page-aligned starts).
std::pair<void*, std::size_t> page_range(const std::byte* p, uint64_t size) {
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(p) & ~(page - 1);
  const auto end = reinterpret_cast<std::uintptr_t>(p) + size;
  return {reinterpret_cast<void*>(begin), static_cast<std::size_t>(end - begin)};
}

}  // namespace

std::size_t dtype_size(DType dtype) {
  return row_of(dtype).size;
}

std::string_view dtype_name(DType dtype) {
  return row_of(dtype).name;
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const DTypeRow& row : kDTypes) {
    if (row.name == name) return row.dtype;
  }
  return std::nullopt;
}

uint64_t TensorInfo::n_elements() const {
  uint64_t n = 1;
  for (const int64_t dim : shape) n *= static_cast<uint64_t>(dim);
  return n;
}

// ---------------------------------------------------------------------------------------------
// File

File File::open(const std::filesystem::path& path) {
  const std::string where = path.string();
  File file;
  file.path_ = path;

  // O_NONBLOCK: a FIFO would otherwise block the open until a writer came (the S_ISREG check
  // below refuses it).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", where, errno_text(errno)));
  const FdCloser closer(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0)
    throw Error(fmt::format("{}: cannot stat: {}", where, errno_text(errno)));
  if (!S_ISREG(st.st_mode)) throw Error(fmt::format("{}: not a regular file", where));
  const auto size = static_cast<uint64_t>(st.st_size);
  // Also keeps mmap away from length 0, which it rejects.
  if (size < kLengthFieldBytes) {
    throw Error(
        fmt::format("{}: file has {} bytes, too short for the 8-byte header length", where, size));
  }
  void* map = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) throw Error(fmt::format("{}: cannot mmap: {}", where, errno_text(errno)));
  file.map_ = map;  // from here on the File's destructor unmaps, also when validation throws
  file.file_size_ = size;
  const auto* base = static_cast<const std::byte*>(map);

  const uint64_t header_size = read_le64(base);
  if (header_size > kMaxHeaderBytes) {
    throw Error(
        fmt::format("{}: header length {} exceeds the limit of {} bytes (file has {} bytes)", where,
                    header_size, kMaxHeaderBytes, size));
  }
  if (kLengthFieldBytes + header_size > size) {
    throw Error(fmt::format("{}: header length {} needs {} bytes but the file has only {}", where,
                            header_size, kLengthFieldBytes + header_size, size));
  }
  file.header_size_ = header_size;
  file.data_ = base + kLengthFieldBytes + header_size;
  file.data_size_ = size - kLengthFieldBytes - header_size;

  // nlohmann keeps the last of duplicate keys; a duplicated tensor name would silently hide a
  // tensor (and its byte range from the overlap check), and a duplicated field of an entry
  // ("dtype" twice) would pick one of two, so duplicates are caught here: tensor names, and the
  // keys of each entry.
  std::set<std::string, std::less<>> seen, entry_keys;
  std::string duplicate, current, duplicate_field;
  const json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (depth == 1) {
        if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
        current = key;
        entry_keys.clear();
      } else if (depth == 2 && !entry_keys.insert(key).second && duplicate_field.empty()) {
        duplicate_field = fmt::format("tensor '{}': key '{}'", current, key);
      }
    }
    return true;
  };
  const auto* text = reinterpret_cast<const char*>(base + kLengthFieldBytes);
  // nlohmann's parser takes a NUL byte for the end of its input, so whatever follows one would
  // pass unread; JSON text has none (a string holds it as \u0000). Nor a byte-order mark, which
  // the reference loader refuses.
  if (const void* nul = std::memchr(text, 0, static_cast<std::size_t>(header_size)); nul != nullptr) {
    throw Error(fmt::format("{}: header: a NUL byte at offset {} (JSON text has none)", where,
                            static_cast<const char*>(nul) - text));
  }
  if (header_size >= 3 && std::string_view(text, 3) == "\xEF\xBB\xBF") {
    throw Error(fmt::format("{}: header: starts with a UTF-8 byte-order mark", where));
  }
  const json header = parse_json(std::string_view(text, header_size), where + ": header", on_event);
  if (!header.is_object()) {
    throw Error(fmt::format("{}: header must be a JSON object, got {}", where, header.type_name()));
  }
  if (!duplicate.empty()) {
    throw Error(fmt::format("{}: tensor '{}' appears twice in the header", where, duplicate));
  }
  if (!duplicate_field.empty()) {
    throw Error(fmt::format("{}: {} appears twice in its header entry", where, duplicate_field));
  }

  file.tensors_.reserve(header.size());
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      file.metadata_ = parse_metadata(where, entry);
      continue;
    }
    file.tensors_.push_back(parse_entry(where, name, entry, file.data_size_));
  }
  std::sort(file.tensors_.begin(), file.tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  check_layout(where, file.tensors_, file.data_size_);
  for (std::size_t i = 0; i < file.tensors_.size(); ++i)
    file.index_.emplace(file.tensors_[i].name, i);
  return file;
}

File::File(File&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      file_size_(std::exchange(other.file_size_, 0)),
      header_size_(std::exchange(other.header_size_, 0)),
      data_(std::exchange(other.data_, nullptr)),
      data_size_(std::exchange(other.data_size_, 0)),
      tensors_(std::move(other.tensors_)),
      index_(std::move(other.index_)),
      metadata_(std::move(other.metadata_)) {}

File& File::operator=(File&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    file_size_ = std::exchange(other.file_size_, 0);
    header_size_ = std::exchange(other.header_size_, 0);
    data_ = std::exchange(other.data_, nullptr);
    data_size_ = std::exchange(other.data_size_, 0);
    tensors_ = std::move(other.tensors_);
    index_ = std::move(other.index_);
    metadata_ = std::move(other.metadata_);
  }
  return *this;
}

File::~File() {
  release();
}

void File::release() noexcept {
  if (map_ != nullptr) ::munmap(map_, static_cast<std::size_t>(file_size_));
  map_ = nullptr;
  data_ = nullptr;
}

const TensorInfo* File::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::at(std::string_view name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) {
    throw Error(fmt::format("{}: no tensor '{}' (file has {} tensors)", path_.string(), name,
                            tensors_.size()));
  }
  return *info;
}

std::span<const std::byte> File::bytes(const TensorInfo& tensor) const {
  // open() guarantees this for its own TensorInfos; this catches ones from another File.
  if (tensor.begin > tensor.end || tensor.end > data_size_) {
    throw Error(
        fmt::format("{}: tensor '{}': range [{},{}) is outside the data section of {} bytes",
                    path_.string(), tensor.name, tensor.begin, tensor.end, data_size_));
  }
  return {data_ + tensor.begin, static_cast<std::size_t>(tensor.end - tensor.begin)};
}

void File::release(const TensorInfo& tensor) const {
  const std::span<const std::byte> raw = bytes(tensor);
  if (raw.empty()) return;
  const auto [start, length] = page_range(raw.data(), raw.size());
  // Cannot fail for a range inside our own mapping; a failure would only cost memory.
  (void)::madvise(start, length, MADV_DONTNEED);
}

void File::prefetch(const TensorInfo& tensor) const {
  const std::span<const std::byte> raw = bytes(tensor);
  if (raw.empty()) return;
  const auto [start, length] = page_range(raw.data(), raw.size());
  (void)::madvise(start, length, MADV_WILLNEED);
}

std::span<const std::byte> File::typed_bytes(const TensorInfo& tensor, DType expected,
                                             std::size_t elem_size, std::size_t elem_align) const {
  if (tensor.dtype != expected) {
    throw Error(fmt::format("{}: tensor '{}': dtype is {} but {} was expected", path_.string(),
                            tensor.name, dtype_name(tensor.dtype), dtype_name(expected)));
  }
  if (elem_size != dtype_size(expected)) {
    throw Error(fmt::format("{}: tensor '{}': a {}-byte element type cannot view {} ({} bytes)",
                            path_.string(), tensor.name, elem_size, dtype_name(expected),
                            dtype_size(expected)));
  }
  const std::span<const std::byte> raw = bytes(tensor);
  // An empty tensor has no element to misalign; hand out a null span rather than an odd pointer.
  if (raw.empty()) return {};
  if (reinterpret_cast<std::uintptr_t>(raw.data()) % elem_align != 0) {
    throw Error(fmt::format(
        "{}: tensor '{}': data at file offset {} is not {}-byte aligned; read it through bytes()",
        path_.string(), tensor.name, kLengthFieldBytes + header_size_ + tensor.begin, elem_align));
  }
  return raw;
}

// ---------------------------------------------------------------------------------------------
// Writer

void Writer::check_new(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                       std::size_t n_bytes) const {
  check_tensor(fmt::format("safetensors writer: tensor '{}'", name), names_, name, dtype, shape,
               n_bytes);
}

void Writer::add(std::string name, DType dtype, std::vector<int64_t> shape,
                 std::span<const std::byte> data) {
  check_new(name, dtype, shape, data.size());
  names_.insert(name);
  data_bytes_ += data.size();
  entries_.push_back(Entry{std::move(name), dtype, std::move(shape), data, {}, false});
}

void Writer::add_owned(std::string name, DType dtype, std::vector<int64_t> shape,
                       std::vector<std::byte> data) {
  check_new(name, dtype, shape, data.size());
  names_.insert(name);
  data_bytes_ += data.size();
  entries_.push_back(Entry{std::move(name), dtype, std::move(shape), {}, std::move(data), true});
}

void Writer::set_metadata(std::string key, std::string value) {
  metadata_.insert_or_assign(std::move(key), std::move(value));
}

std::string Writer::header_json() const {
  std::vector<HeaderEntry> entries;
  entries.reserve(entries_.size());
  for (const Entry& e : entries_) entries.push_back({e.name, e.dtype, e.shape, e.view().size()});
  return header_text(metadata_, entries);
}

void Writer::write(const std::filesystem::path& path) const {
  const std::string where = path.string();
  std::string header;
  try {
    header = header_json();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: cannot encode the header (names and metadata must be UTF-8): {}",
                            where, e.what()));
  }
  const std::array<std::byte, kLengthFieldBytes> length = length_field(header.size());

  // pid keeps concurrent processes apart, the counter concurrent writes within this one.
  static std::atomic<uint64_t> counter{0};
  std::filesystem::path tmp = path;
  tmp += fmt::format(".tmp.{}.{}", ::getpid(), counter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw Error(fmt::format("{}: cannot create temporary file {}: {}", where, tmp.string(),
                            errno_text(errno)));
  }
  TempFile temp(tmp, fd);

  uint64_t written = 0;
  write_all(fd, length.data(), length.size(), where, tmp, written);
  write_all(fd, reinterpret_cast<const std::byte*>(header.data()), header.size(), where, tmp,
            written);
  for (const Entry& e : entries_) {
    const std::span<const std::byte> data = e.view();
    write_all(fd, data.data(), data.size(), where, tmp, written);
  }
  if (::fsync(fd) != 0) {
    throw Error(fmt::format("{}: fsync of temporary file {} failed: {}", where, tmp.string(),
                            errno_text(errno)));
  }
  if (temp.close() != 0) {
    throw Error(fmt::format("{}: closing temporary file {} failed: {}", where, tmp.string(),
                            errno_text(errno)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    throw Error(fmt::format("{}: cannot rename temporary file {} onto it: {}", where, tmp.string(),
                            errno_text(errno)));
  }
  temp.commit();
  sync_directory_of(path);
}

// ---------------------------------------------------------------------------------------------
// PlannedWriter

void sort_like_reference(std::vector<Planned>& tensors) {
  // The reference orders dtypes by its enum's declaration order, descending.
  const auto rank = [](DType d) {
    constexpr std::array<DType, 15> kOrder{DType::BOOL,    DType::U8,  DType::I8,  DType::F8_E5M2,
                                           DType::F8_E4M3, DType::I16, DType::U16, DType::F16,
                                           DType::BF16,    DType::I32, DType::U32, DType::F32,
                                           DType::F64,     DType::I64, DType::U64};
    return static_cast<int>(std::find(kOrder.begin(), kOrder.end(), d) - kOrder.begin());
  };
  std::stable_sort(tensors.begin(), tensors.end(), [&](const Planned& a, const Planned& b) {
    const int ra = rank(a.dtype), rb = rank(b.dtype);
    return ra != rb ? ra > rb : a.name < b.name;
  });
}

PlannedWriter::PlannedWriter(std::filesystem::path path, std::vector<Planned> tensors,
                             const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)) {
  const std::string where = path_.string();
  std::set<std::string, std::less<>> names;
  std::vector<HeaderEntry> entries;
  entries.reserve(tensors.size());
  std::vector<uint64_t> sizes;
  for (const Planned& t : tensors) {
    const ByteSize size = byte_size(t.shape, dtype_size(t.dtype));
    check_tensor(fmt::format("{}: tensor '{}'", where, t.name), names, t.name, t.dtype, t.shape,
                 size.bytes);
    names.insert(t.name);
    entries.push_back({t.name, t.dtype, t.shape, size.bytes});
    sizes.push_back(size.bytes);
  }
  std::string header;
  try {
    header = header_text(metadata, entries);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: cannot encode the header (names and metadata must be UTF-8): {}",
                            where, e.what()));
  }
  uint64_t offset = kLengthFieldBytes + header.size();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    index_.emplace(tensors[i].name, Slot{offset, sizes[i], false});
    offset += sizes[i];
  }
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(fmt::format("{}: cannot create: {}", where, errno_text(errno)));
  const std::array<std::byte, kLengthFieldBytes> length = length_field(header.size());
  pwrite_all(fd_, length.data(), length.size(), 0, where);
  pwrite_all(fd_, reinterpret_cast<const std::byte*>(header.data()), header.size(),
             kLengthFieldBytes, where);
  // Sets the final size now, so a tensor-free tail or a file of empty tensors is complete too.
  if (::ftruncate(fd_, static_cast<off_t>(offset)) != 0) {
    throw Error(
        fmt::format("{}: cannot size the file to {} bytes: {}", where, offset, errno_text(errno)));
  }
}

PlannedWriter::~PlannedWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!finished_) ::unlink(path_.c_str());
}

void PlannedWriter::write(std::string_view name, std::span<const std::byte> data) {
  const auto it = index_.find(name);
  if (it == index_.end()) {
    throw Error(
        fmt::format("{}: tensor '{}' is not part of the file's plan", path_.string(), name));
  }
  Slot& slot = it->second;
  if (finished_ || slot.written) {
    throw Error(fmt::format("{}: tensor '{}' written twice", path_.string(), name));
  }
  if (data.size() != slot.size) {
    throw Error(fmt::format("{}: tensor '{}' has {} bytes but its shape needs {}", path_.string(),
                            name, data.size(), slot.size));
  }
  pwrite_all(fd_, data.data(), data.size(), slot.offset,
             fmt::format("{}: tensor '{}'", path_.string(), name));
  slot.written = true;
}

void PlannedWriter::finish(bool sync) {
  const std::string where = path_.string();
  if (finished_ || fd_ < 0) throw Error(fmt::format("{}: finish() called twice", where));
  for (const auto& [name, slot] : index_) {
    if (!slot.written) {
      throw Error(fmt::format("{}: tensor '{}' was planned but never written", where, name));
    }
  }
  if (sync && ::fsync(fd_) != 0) {
    throw Error(fmt::format("{}: fsync failed: {}", where, errno_text(errno)));
  }
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) throw Error(fmt::format("{}: closing failed: {}", where, errno_text(errno)));
  finished_ = true;
}

}  // namespace df11::st
