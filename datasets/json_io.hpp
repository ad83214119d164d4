// JSON from files this project did not write (config.json, safetensors headers, tekken.json,
// results lines): parsed with a nesting limit, read only from regular files. nlohmann's parser
// is iterative, but dump(), comparisons and some conversions recurse once per level, so a
// 100 000-deep array in a header (a 200 KB file) would overflow the stack at the first error
// message that prints it; and opening a FIFO for reading blocks until a writer comes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace df11 {

// Deeper than any file this project reads needs (config.json's rope_scaling is 2 levels).
inline constexpr int kMaxJsonDepth = 64;

// Parses `text`; `where` (a file) starts every error: "WHERE: not valid JSON: ..." or "WHERE: JSON
// nested deeper than 64 levels". `also` (optional) sees every parser event after the depth check,
// as nlohmann's parser_callback_t does (return false to drop a value).
[[nodiscard]] nlohmann::json parse_json(std::string_view text, const std::string& where,
                                        const nlohmann::json::parser_callback_t& also = nullptr);

// Larger than any text file this project reads (a Tekken tokenizer ~15 MB, a 1000-shard index
// ~1 MB): a larger one is refused by name before anything is allocated.
inline constexpr std::uintmax_t kMaxTextFileBytes = std::uintmax_t{256} << 20;

// The whole of a regular file (a FIFO, device or directory is an error naming the path, found
// without blocking; so is a file over max_bytes).
[[nodiscard]] std::string read_regular_file(const std::filesystem::path& path,
                                            std::uintmax_t max_bytes = kMaxTextFileBytes);

// Writes all `size` bytes at `data` to `fd` with write(2), EINTR retried, in pieces of at most
// 1 GiB: 0, or the errno of the write that failed (EIO for one that wrote nothing). `written`
// (optional) counts the bytes that went out either way. The one write loop of the project's
// writers (safetensors files, OutputDir's JSON, run_sweep's results lines), so that each can say
// why a write failed (a full disk, a file-size limit), which an ofstream's failbit does not.
[[nodiscard]] int write_fully(int fd, const void* data, std::size_t size, std::size_t* written = nullptr);

// A value for an error message: its JSON text, cut to `max` characters ("..." after the cut).
[[nodiscard]] std::string brief(const nlohmann::json& value, std::size_t max = 80);

// read_regular_file + parse_json.
[[nodiscard]] nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace df11
