#include "remote/http/url.h"

#include <cctype>
#include <vector>

namespace hsm::remote::http {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Splits off "?query" and "#fragment" from a path-ish string.
std::string_view stripQueryFragment(std::string_view s, bool* query, bool* fragment) {
  auto q = s.find_first_of("?#");
  if (q == std::string_view::npos) return s;
  if (s[q] == '?') *query = true;
  if (s.find('#', q) != std::string_view::npos) *fragment = true;
  return s.substr(0, q);
}

}  // namespace

std::optional<Url> parseUrl(std::string_view s) {
  auto colon = s.find("://");
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  Url u;
  u.scheme = lower(s.substr(0, colon));
  if (u.scheme != "http" && u.scheme != "https") return std::nullopt;
  std::string_view rest = s.substr(colon + 3);
  auto end = rest.find_first_of("/?#");
  std::string_view auth = rest.substr(0, end);
  auto at = auth.rfind('@');
  if (at != std::string_view::npos) auth = auth.substr(at + 1);
  if (auth.empty()) return std::nullopt;
  u.authority = lower(auth);
  std::string_view tail = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  std::string_view path = stripQueryFragment(tail, &u.hasQuery, &u.hasFragment);
  u.path = path.empty() ? std::string("/") : removeDotSegments(path);
  return u;
}

std::string removeDotSegments(std::string_view path) {
  std::vector<std::string_view> out;
  size_t i = 0;
  bool trailingSlash = !path.empty() && path.back() == '/';
  while (i <= path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view seg = path.substr(i, j - i);
    if (seg == "..") {
      if (!out.empty()) out.pop_back();
      if (j == path.size()) trailingSlash = true;
    } else if (seg == ".") {
      if (j == path.size()) trailingSlash = true;
    } else if (!seg.empty()) {
      out.push_back(seg);
    }
    i = j + 1;
  }
  std::string res;
  for (auto seg : out) {
    res.push_back('/');
    res.append(seg);
  }
  if (res.empty() || trailingSlash) res.push_back('/');
  return res;
}

std::optional<Url> resolve(const Url& base, std::string_view ref) {
  // Trim the whitespace HTML allows around attribute values.
  while (!ref.empty() && std::isspace(static_cast<unsigned char>(ref.front()))) ref.remove_prefix(1);
  while (!ref.empty() && std::isspace(static_cast<unsigned char>(ref.back()))) ref.remove_suffix(1);
  if (ref.size() > 8192) return std::nullopt;
  // A scheme: letters, digits, + - . before the first ':' that precedes any '/', '?', '#'.
  auto colon = ref.find(':');
  auto firstDelim = ref.find_first_of("/?#");
  if (colon != std::string_view::npos && (firstDelim == std::string_view::npos || colon < firstDelim)) {
    bool scheme = colon > 0 && std::isalpha(static_cast<unsigned char>(ref[0]));
    for (size_t k = 0; scheme && k < colon; ++k) {
      char c = ref[k];
      scheme = std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
    }
    if (scheme) return parseUrl(ref);  // nullopt unless http(s)
  }
  if (ref.substr(0, 2) == "//") return parseUrl(base.scheme + ":" + std::string(ref));
  Url u;
  u.scheme = base.scheme;
  u.authority = base.authority;
  std::string_view path = stripQueryFragment(ref, &u.hasQuery, &u.hasFragment);
  if (path.empty()) {
    u.path = base.path;
  } else if (path.front() == '/') {
    u.path = removeDotSegments(path);
  } else {
    std::string merged = base.path.substr(0, base.path.rfind('/') + 1);
    merged.append(path);
    u.path = removeDotSegments(merged);
  }
  return u;
}

std::optional<std::string> percentDecode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = hexValue(s[i + 1]), lo = hexValue(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

}  // namespace hsm::remote::http
