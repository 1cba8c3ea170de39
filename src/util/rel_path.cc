#include "util/rel_path.h"

#include <cstdint>

namespace hsm {

bool isValidUtf8(std::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000)) {
      return false;  // overlong
    }
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

Status validateName(std::string_view name, bool requireUtf8) {
  if (name.empty()) return Status::error(EINVAL, "empty name");
  if (name == "." || name == "..") {
    return Status::error(EINVAL, fmt::format("reserved name '{}'", name));
  }
  if (name.size() > kMaxNameBytes) {
    return Status::error(EINVAL, fmt::format("name of {} bytes is longer than {} bytes",
                                             name.size(), kMaxNameBytes));
  }
  for (char c : name) {
    if (c == '/') return Status::error(EINVAL, "name contains '/'");
    if (c == '\0') return Status::error(EINVAL, "name contains a NUL byte");
  }
  if (requireUtf8 && !isValidUtf8(name)) return Status::error(EINVAL, "name is not valid UTF-8");
  return Status::ok();
}

Status validateRelPath(std::string_view path) {
  if (path.empty()) return Status::ok();
  if (path.size() > kMaxPathBytes) return Status::error(ENAMETOOLONG, "path too long");
  size_t start = 0;
  while (true) {
    size_t slash = path.find('/', start);
    std::string_view comp =
        path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    Status s = validateName(comp, false);
    if (!s.isOk()) return s.withContext(fmt::format("path '{}'", path));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return Status::ok();
}

std::string joinPath(std::string_view parent, std::string_view name) {
  if (parent.empty()) return std::string(name);
  std::string out;
  out.reserve(parent.size() + 1 + name.size());
  out.append(parent);
  out.push_back('/');
  out.append(name);
  return out;
}

std::string_view parentPath(std::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return std::string_view();
  return path.substr(0, slash);
}

std::string_view baseName(std::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == std::string_view::npos) return path;
  return path.substr(slash + 1);
}

}  // namespace hsm
