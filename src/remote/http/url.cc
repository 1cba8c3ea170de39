// Design note: listings only need three operations on URLs — "is this href on the same
// origin", "which directory path does it name" and "what is its last segment, decoded" —
// so this is a small RFC 3986 resolver rather than a general URL library. Paths stay
// encoded through resolution (so "%2F" can never become a separator) and are decoded one
// segment at a time at the end.
#include "remote/http/url.h"

namespace hsm::remote::http {
namespace {

constexpr size_t kMaxRefBytes = 8192;

bool isAsciiSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool isAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool isDigit(char c) { return c >= '0' && c <= '9'; }
char toLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = toLower(c);
  return out;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Splits off "?query" and "#fragment", noting which were present.
std::string_view stripQueryFragment(std::string_view s, Url& u) {
  auto q = s.find_first_of("?#");
  if (q == std::string_view::npos) return s;
  if (s[q] == '?') u.hasQuery = true;
  if (s.find('#', q) != std::string_view::npos) u.hasFragment = true;
  return s.substr(0, q);
}

}  // namespace

std::optional<Url> parseUrl(std::string_view s) {
  while (!s.empty() && isAsciiSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && isAsciiSpace(s.back())) s.remove_suffix(1);
  auto sep = s.find("://");
  if (sep == std::string_view::npos || sep == 0) return std::nullopt;
  Url u;
  u.scheme = lower(s.substr(0, sep));
  if (u.scheme != "http" && u.scheme != "https") return std::nullopt;
  std::string_view rest = s.substr(sep + 3);
  auto end = rest.find_first_of("/?#");
  std::string_view auth = rest.substr(0, end);
  auto at = auth.rfind('@');
  if (at != std::string_view::npos) auth = auth.substr(at + 1);
  if (auth.empty()) return std::nullopt;
  for (char c : auth) {
    if (isAsciiSpace(c) || c == '\\' || c == '\0') return std::nullopt;
  }
  u.authority = lower(auth);
  std::string_view defaultPort = u.scheme == "http" ? ":80" : ":443";
  if (u.authority.size() > defaultPort.size() &&
      std::string_view(u.authority).substr(u.authority.size() - defaultPort.size()) ==
          defaultPort) {
    u.authority.resize(u.authority.size() - defaultPort.size());
  }
  if (u.authority.empty() || u.authority.back() == ':') return std::nullopt;
  std::string_view tail = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  std::string_view path = stripQueryFragment(tail, u);
  u.path = path.empty() ? std::string("/") : removeDotSegments(path);
  return u;
}

std::string removeDotSegments(std::string_view path) {
  // Segments between '/'; a trailing '/' is an empty last segment.
  std::vector<std::string_view> out;
  bool absolute = !path.empty() && path.front() == '/';
  if (absolute) path.remove_prefix(1);
  bool endsInDir = false;
  size_t i = 0;
  while (true) {
    size_t j = path.find('/', i);
    bool last = j == std::string_view::npos;
    std::string_view seg = path.substr(i, last ? std::string_view::npos : j - i);
    if (seg == "..") {
      if (!out.empty()) out.pop_back();
      endsInDir = true;
    } else if (seg == ".") {
      endsInDir = true;
    } else {
      out.push_back(seg);
      endsInDir = false;
    }
    if (last) break;
    i = j + 1;
  }
  // "a/.." and "a/." name the directory: they end in '/'.
  if (endsInDir) out.push_back(std::string_view());
  std::string res;
  res.reserve(path.size() + 1);
  for (size_t k = 0; k < out.size(); ++k) {
    res.push_back('/');
    res.append(out[k]);
  }
  if (res.empty()) res.push_back('/');
  return res;
}

std::optional<Url> resolve(const Url& base, std::string_view rawRef) {
  while (!rawRef.empty() && isAsciiSpace(rawRef.front())) rawRef.remove_prefix(1);
  while (!rawRef.empty() && isAsciiSpace(rawRef.back())) rawRef.remove_suffix(1);
  if (rawRef.size() > kMaxRefBytes) return std::nullopt;
  // Browsers drop tabs and newlines anywhere in a URL ("java\nscript:" is "javascript:").
  std::string cleaned;
  cleaned.reserve(rawRef.size());
  for (char c : rawRef) {
    if (c != '\t' && c != '\n' && c != '\r') cleaned.push_back(c);
  }
  std::string_view ref = cleaned;
  // A scheme: a letter, then letters, digits, '+', '-', '.', before a ':' that comes before
  // any '/', '?' or '#'.
  auto colon = ref.find(':');
  auto firstDelim = ref.find_first_of("/?#");
  if (colon != std::string_view::npos &&
      (firstDelim == std::string_view::npos || colon < firstDelim)) {
    bool scheme = colon > 0 && isAlpha(ref[0]);
    for (size_t k = 1; scheme && k < colon; ++k) {
      char c = ref[k];
      scheme = isAlpha(c) || isDigit(c) || c == '+' || c == '-' || c == '.';
    }
    if (scheme) return parseUrl(ref);  // nullopt unless http(s)
    // Otherwise "a:b" is a relative path whose first segment contains ':' — per RFC 3986 it
    // is not a valid relative reference, but servers never write it; treat it as a path.
  }
  if (ref.substr(0, 2) == "//") return parseUrl(base.scheme + ":" + std::string(ref));
  Url u;
  u.scheme = base.scheme;
  u.authority = base.authority;
  std::string_view path = stripQueryFragment(ref, u);
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
    int hi = hexValue(s[i + 1]);
    int lo = hexValue(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string percentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size() * 3);
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (isAlpha(ch) || isDigit(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::optional<DecodedPath> decodePath(std::string_view path) {
  DecodedPath out;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  if (path.empty()) {
    out.trailingSlash = true;
    return out;
  }
  if (path.back() == '/') {
    out.trailingSlash = true;
    path.remove_suffix(1);
  }
  size_t i = 0;
  while (true) {
    size_t j = path.find('/', i);
    bool last = j == std::string_view::npos;
    auto seg = percentDecode(path.substr(i, last ? std::string_view::npos : j - i));
    if (!seg) return std::nullopt;
    out.segments.push_back(std::move(*seg));
    if (last) break;
    i = j + 1;
  }
  return out;
}

}  // namespace hsm::remote::http
