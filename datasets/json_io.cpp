#include "datasets/json_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include <fmt/format.h>

#include "codec/common.hpp"

namespace df11 {

nlohmann::json parse_json(std::string_view text, const std::string& where,
                          const nlohmann::json::parser_callback_t& also) {
  using json = nlohmann::json;
  const json::parser_callback_t limited = [&](int depth, json::parse_event_t event, json& parsed) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= kMaxJsonDepth) {
      throw Error(fmt::format("{}: JSON nested deeper than {} levels", where, kMaxJsonDepth));
    }
    return also ? also(depth, event, parsed) : true;
  };
  try {
    return json::parse(text.begin(), text.end(), limited);
  } catch (const json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", where, e.what()));
  }
}

std::string read_regular_file(const std::filesystem::path& path, std::uintmax_t max_bytes) {
  const std::string where = path.string();
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(fmt::format("{}: cannot open: {}", where, std::system_category().message(errno)));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw Error(fmt::format("{}: cannot stat: {}", where, std::system_category().message(errno)));
  if (!S_ISREG(st.st_mode)) throw Error(fmt::format("{}: not a regular file", where));
  if (static_cast<std::uintmax_t>(st.st_size) > max_bytes) {
    throw Error(fmt::format("{}: {} bytes, more than the {} MiB this file may have", where,
                            static_cast<std::uintmax_t>(st.st_size), max_bytes >> 20));
  }
  std::string text(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(fmt::format("{}: cannot read: {}", where, std::system_category().message(errno)));
    if (n == 0) break;  // shorter than fstat said (truncated meanwhile): what is there
    got += static_cast<std::size_t>(n);
  }
  text.resize(got);
  return text;
}

std::string brief(const nlohmann::json& value, std::size_t max) {
  std::string text = value.dump();
  if (text.size() > max) text = text.substr(0, max) + "...";
  return text;
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
  return parse_json(read_regular_file(path), path.string());
}

int write_fully(int fd, const void* data, std::size_t size, std::size_t* written) {
  constexpr std::size_t kPiece = std::size_t{1} << 30;
  const auto* p = static_cast<const char*>(data);
  std::size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, p + done, std::min(size - done, kPiece));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : EIO;
      if (written) *written = done;
      return err;
    }
    done += static_cast<std::size_t>(n);
  }
  if (written) *written = done;
  return 0;
}

}  // namespace df11
