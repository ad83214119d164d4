// safetensors files: a validating, memory-mapped reader (File) and a streaming, atomic writer
// (Writer). This is how real checkpoints enter the lab and how compressed results leave it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "codec/common.hpp"

namespace df11::st {

enum class DType {
  BOOL,
  U8,
  I8,
  U16,
  I16,
  F16,
  BF16,
  U32,
  I32,
  F32,
  U64,
  I64,
  F64,
  F8_E4M3,
  F8_E5M2
};

// Bytes per element.
[[nodiscard]] std::size_t dtype_size(DType dtype);
// The spelling used in the JSON header ("BF16", "F8_E4M3", ...).
[[nodiscard]] std::string_view dtype_name(DType dtype);
// Inverse of dtype_name; nullopt for anything else (matching is case-sensitive, as in the format).
[[nodiscard]] std::optional<DType> parse_dtype(std::string_view name);

struct TensorInfo {
  std::string name;
  DType dtype = DType::U8;
  std::vector<int64_t> shape;  // empty: a 0-d scalar with one element
  uint64_t begin = 0;          // byte range [begin, end) relative to the data section
  uint64_t end = 0;

  [[nodiscard]] uint64_t n_elements() const;
};

// A read-only view of one safetensors file. open() validates the whole header, so every
// TensorInfo handed out afterwards describes bytes that exist in the mapping. The file must not
// be truncated by someone else while it is open (that would be SIGBUS, as with any mmap).
class File {
 public:
  // Maps the file and validates it; throws df11::Error naming the file (and the tensor).
  [[nodiscard]] static File open(const std::filesystem::path& path);

  File(File&& other) noexcept;
  File& operator=(File&& other) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  // Sorted by data offset (then end, then name), i.e. in the order the bytes lie in the file.
  [[nodiscard]] const std::vector<TensorInfo>& tensors() const { return tensors_; }
  [[nodiscard]] const TensorInfo* find(std::string_view name) const;
  // Like find(), but a missing tensor is a df11::Error naming the file and the tensor.
  [[nodiscard]] const TensorInfo& at(std::string_view name) const;
  // The tensor's bytes inside the mapping; valid while this File lives.
  [[nodiscard]] std::span<const std::byte> bytes(const TensorInfo& tensor) const;
  // The tensor's elements as T. Throws df11::Error if the tensor's dtype is not `expected`, if
  // sizeof(T) does not match it, or if the data is not aligned for T (the format does not align
  // tensors; use bytes() and memcpy for such files).
  template <class T>
  [[nodiscard]] std::span<const T> data(const TensorInfo& tensor, DType expected) const {
    static_assert(std::is_trivially_copyable_v<T>, "tensor elements are reinterpreted bytes");
    const std::span<const std::byte> raw = typed_bytes(tensor, expected, sizeof(T), alignof(T));
    return {reinterpret_cast<const T*>(raw.data()), raw.size() / sizeof(T)};
  }
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Drops this process's resident pages of the tensor's bytes. The page cache keeps them and a
  // later read faults them back in, so this only bounds memory: a streaming pass over a big
  // checkpoint calls it after each unit and holds about one unit, not the whole file. Pages
  // shared with a neighbouring tensor go too (harmless for a read-only mapping).
  void release(const TensorInfo& tensor) const;
  // Starts asynchronous read-ahead of the tensor's bytes, so the next unit's pages come off the
  // disk while this one is encoded. A hint: failures are ignored.
  void prefetch(const TensorInfo& tensor) const;
  [[nodiscard]] uint64_t file_size() const { return file_size_; }
  // Length N of the JSON header (bytes 8 .. 8+N); the data section starts at 8+N.
  [[nodiscard]] uint64_t header_size() const { return header_size_; }

 private:
  File() = default;
  [[nodiscard]] std::span<const std::byte> typed_bytes(const TensorInfo& tensor, DType expected,
                                                       std::size_t elem_size,
                                                       std::size_t elem_align) const;
  void release() noexcept;

  std::filesystem::path path_;
  void* map_ = nullptr;  // whole file, PROT_READ / MAP_PRIVATE
  uint64_t file_size_ = 0;
  uint64_t header_size_ = 0;
  const std::byte* data_ = nullptr;  // start of the data section inside map_
  uint64_t data_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Collects tensors and writes them as one safetensors file. The header lists tensors in the order
// they were added and their bytes follow contiguously in that order (what the reference readers
// require). write() streams each tensor from its buffer, so borrowed data is never copied.
class Writer {
 public:
  // Borrows `data`: the caller keeps it alive and unchanged until write() returns. Throws
  // df11::Error if the name is taken or reserved, a dimension is negative, the element count
  // overflows, or data.size() != prod(shape) * dtype_size(dtype).
  void add(std::string name, DType dtype, std::vector<int64_t> shape,
           std::span<const std::byte> data);
  // Same checks as add(), but the writer keeps `data`.
  void add_owned(std::string name, DType dtype, std::vector<int64_t> shape,
                 std::vector<std::byte> data);
  void set_metadata(std::string key, std::string value);
  [[nodiscard]] uint64_t data_bytes() const { return data_bytes_; }
  [[nodiscard]] std::size_t size() const { return entries_.size(); }
  // Writes a temporary file next to `path`, syncs it and renames it onto `path`, so `path` holds
  // either its old content or the complete new file. Throws df11::Error (temp file removed).
  void write(const std::filesystem::path& path) const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::span<const std::byte> borrowed;
    std::vector<std::byte> owned;
    bool is_owned = false;

    [[nodiscard]] std::span<const std::byte> view() const {
      return is_owned ? std::span<const std::byte>(owned) : borrowed;
    }
  };

  void check_new(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                 std::size_t n_bytes) const;
  [[nodiscard]] std::string header_json() const;

  std::vector<Entry> entries_;
  std::set<std::string, std::less<>> names_;
  std::map<std::string, std::string> metadata_;
  uint64_t data_bytes_ = 0;
};

// A tensor of a file whose layout is fixed before its data exists.
struct Planned {
  std::string name;
  DType dtype = DType::U8;
  std::vector<int64_t> shape;
};

// Sorts tensors as the reference writer (safetensors' serialize, used by torch save_file) lays
// them out: by dtype, widest first in the reference's dtype order, then by name. Files written in
// this order have the official files' layout, and every tensor is aligned to its element size.
void sort_like_reference(std::vector<Planned>& tensors);

// Writes one safetensors file whose tensors are known in advance but whose data arrives
// piecemeal and in any order: the header goes out at once, each write() puts a tensor's bytes at
// its planned offset, and nothing is buffered. A checkpoint can so be written unit by unit while
// every file keeps the reference layout (tensors in the given order, contiguous, 8-aligned data).
class PlannedWriter {
 public:
  // Creates `path`, which must not exist, and writes the header. Same checks as Writer::add on
  // every tensor. The file is removed again unless finish() succeeds.
  PlannedWriter(std::filesystem::path path, std::vector<Planned> tensors,
                const std::map<std::string, std::string>& metadata = {});
  PlannedWriter(const PlannedWriter&) = delete;
  PlannedWriter& operator=(const PlannedWriter&) = delete;
  ~PlannedWriter();

  // Writes the planned tensor `name`; data.size() must be its planned byte size, and each tensor
  // is written once. Throws df11::Error naming the file and the tensor.
  void write(std::string_view name, std::span<const std::byte> data);
  // Checks that every tensor was written; with `sync`, fsyncs. The file is complete afterwards.
  void finish(bool sync);

 private:
  struct Slot {
    uint64_t offset;  // file offset of the tensor's first byte
    uint64_t size;
    bool written;
  };

  std::filesystem::path path_;
  int fd_ = -1;
  bool finished_ = false;
  std::map<std::string, Slot, std::less<>> index_;
};

}  // namespace df11::st
