#include "remote/http/listing_parser.h"

#include <gumbo.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>
#include <set>

#include <nlohmann/json.hpp>

#include "remote/http/url.h"
#include "util/rel_path.h"

namespace hsm::remote::http {
namespace {

constexpr const char* kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                   "jul", "aug", "sep", "oct", "nov", "dec"};

int monthIndex(std::string_view s) {
  if (s.size() < 3) return -1;
  for (int i = 0; i < 12; ++i) {
    bool eq = true;
    for (int k = 0; k < 3; ++k) {
      if (std::tolower(static_cast<unsigned char>(s[static_cast<size_t>(k)])) != kMonths[i][k]) eq = false;
    }
    if (eq) return i;
  }
  return -1;
}

// Reads `n` digits at `pos`; -1 if not digits.
int digits(std::string_view s, size_t pos, size_t n) {
  if (pos + n > s.size()) return -1;
  int v = 0;
  for (size_t i = 0; i < n; ++i) {
    char c = s[pos + i];
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::optional<int64_t> makeTime(int year, int mon, int day, int hour, int min, int sec) {
  if (year < 1970 || year > 9999 || mon < 0 || mon > 11 || day < 1 || day > 31 || hour < 0 ||
      hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 60) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  return static_cast<int64_t>(timegm(&tm));
}

std::string_view trimView(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

class Collector {
 public:
  Collector(const Url& base, ListingResult& out) : base_(base), out_(out) {}

  // `href` as found; `isDirHint` from a JSON type; returns the index of the entry added.
  std::optional<size_t> add(std::string_view href, std::optional<bool> isDirHint) {
    auto u = resolve(base_, href);
    if (!u) {
      if (href.substr(0, 1) != "#") reject("not an http(s) link", href);
      return std::nullopt;
    }
    if (u->hasQuery || (u->hasFragment && u->path == base_.path)) return std::nullopt;  // sorting, anchors
    if (u->scheme != base_.scheme || u->authority != base_.authority) {
      reject("link to another origin", href);
      return std::nullopt;
    }
    const std::string& p = u->path;
    if (p.size() <= base_.path.size() || p.compare(0, base_.path.size(), base_.path) != 0) {
      return std::nullopt;  // the directory itself, a parent, or elsewhere on the server
    }
    std::string_view rest = std::string_view(p).substr(base_.path.size());
    bool isDir = false;
    if (!rest.empty() && rest.back() == '/') {
      isDir = true;
      rest.remove_suffix(1);
    }
    if (rest.empty() || rest.find('/') != std::string_view::npos) {
      reject("not a direct child", href);
      return std::nullopt;
    }
    auto name = percentDecode(rest);
    if (!name) {
      reject("malformed percent-encoding", href);
      return std::nullopt;
    }
    Status valid = validateName(*name, true);
    if (!valid) {
      reject(valid.message(), href);
      return std::nullopt;
    }
    if (isDirHint) isDir = *isDirHint;
    if (!seen_.insert(*name).second) {
      reject("duplicate name", href);
      return std::nullopt;
    }
    ListingEntry e;
    e.name = std::move(*name);
    e.isDir = isDir;
    out_.entries.push_back(std::move(e));
    return out_.entries.size() - 1;
  }

  void reject(const std::string& reason, std::string_view what) {
    if (out_.rejected.size() >= 10000) return;  // bounded report
    std::string shown(what.substr(0, 200));
    for (auto& c : shown) {
      if (static_cast<unsigned char>(c) < 0x20) c = '?';
    }
    out_.rejected.push_back(reason + ": " + shown);
  }

 private:
  const Url& base_;
  ListingResult& out_;
  std::set<std::string> seen_;
};

// Text of a node and its descendants (bounded), iteratively.
void appendText(const GumboNode* node, std::string& out, size_t limit) {
  std::vector<const GumboNode*> stack{node};
  while (!stack.empty() && out.size() < limit) {
    const GumboNode* n = stack.back();
    stack.pop_back();
    if (n->type == GUMBO_NODE_TEXT || n->type == GUMBO_NODE_WHITESPACE) {
      out.append(n->v.text.text);
    } else if (n->type == GUMBO_NODE_ELEMENT) {
      const GumboVector& ch = n->v.element.children;
      for (size_t i = ch.length; i > 0; --i) stack.push_back(static_cast<const GumboNode*>(ch.data[i - 1]));
    }
  }
}

// The modification time printed next to a link: in the following table cells (Apache
// tables, lighttpd) or in the text that follows the link on its line (nginx, Apache <pre>).
std::optional<int64_t> dateNear(const GumboNode* link) {
  const GumboNode* parent = link->parent;
  if (parent && parent->type == GUMBO_NODE_ELEMENT && parent->v.element.tag == GUMBO_TAG_TD &&
      parent->parent) {
    const GumboVector& cells = parent->parent->v.element.children;
    for (size_t i = parent->index_within_parent + 1; i < cells.length; ++i) {
      std::string text;
      appendText(static_cast<const GumboNode*>(cells.data[i]), text, 200);
      if (auto t = parseListingDate(text)) return t;
    }
    return std::nullopt;
  }
  if (!parent) return std::nullopt;
  const GumboVector& sib = parent->v.element.children;
  for (size_t i = link->index_within_parent + 1; i < sib.length && i < link->index_within_parent + 3; ++i) {
    const auto* n = static_cast<const GumboNode*>(sib.data[i]);
    if (n->type != GUMBO_NODE_TEXT && n->type != GUMBO_NODE_WHITESPACE) break;
    std::string_view text(n->v.text.text);
    text = text.substr(0, text.find('\n'));
    if (auto t = parseListingDate(text)) return t;
  }
  return std::nullopt;
}

ListingFormat detectHtml(std::string_view body) {
  auto has = [&](const char* s) { return body.find(s) != std::string_view::npos; };
  if (has("Directory listing for")) return ListingFormat::kPython;
  if (has("lighttpd")) return ListingFormat::kLighttpd;
  if (has("?C=N;O=D") || has("Apache")) return ListingFormat::kApache;
  if (has("<title>Index of") && has("<hr><pre>")) return ListingFormat::kNginxHtml;
  return ListingFormat::kGeneric;
}

void parseHtml(std::string_view body, Collector& collect, ListingResult& out) {
  out.detected = detectHtml(body);
  GumboOptions options = kGumboDefaultOptions;
  options.max_errors = 100;
  GumboOutput* doc = gumbo_parse_with_options(&options, body.data(), body.size());
  if (doc == nullptr) return;
  std::vector<const GumboNode*> stack{doc->root};
  while (!stack.empty()) {
    const GumboNode* n = stack.back();
    stack.pop_back();
    if (n->type != GUMBO_NODE_ELEMENT) continue;
    if (n->v.element.tag == GUMBO_TAG_A) {
      const GumboAttribute* href = gumbo_get_attribute(&n->v.element.attributes, "href");
      if (href) {
        if (auto idx = collect.add(href->value, std::nullopt)) {
          out.entries[*idx].mtimeSec = dateNear(n);
        }
      }
    }
    const GumboVector& ch = n->v.element.children;
    for (size_t i = ch.length; i > 0; --i) stack.push_back(static_cast<const GumboNode*>(ch.data[i - 1]));
  }
  gumbo_destroy_output(&options, doc);
}

void parseNginxJson(std::string_view body, Collector& collect, ListingResult& out) {
  out.detected = ListingFormat::kNginxJson;
  auto j = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded() || !j.is_array()) {
    collect.reject("malformed JSON listing", body.substr(0, 40));
    return;
  }
  for (const auto& item : j) {
    if (!item.is_object() || !item.contains("name") || !item["name"].is_string()) {
      collect.reject("JSON entry without a name", "");
      continue;
    }
    std::string name = item["name"].get<std::string>();
    std::string type = item.contains("type") && item["type"].is_string() ? item["type"].get<std::string>() : "";
    if (type != "file" && type != "directory") {
      collect.reject("JSON entry of type '" + type.substr(0, 20) + "'", name);
      continue;
    }
    // nginx gives raw names: escape them so they resolve exactly as themselves.
    std::string href;
    for (unsigned char c : name) {
      if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
        href.push_back(static_cast<char>(c));
      } else {
        static const char* kHex = "0123456789ABCDEF";
        href.push_back('%');
        href.push_back(kHex[c >> 4]);
        href.push_back(kHex[c & 15]);
      }
    }
    // "." and ".." must not resolve as dot segments: they are rejected as names.
    Status valid = validateName(name, true);
    if (!valid) {
      collect.reject(valid.message(), name);
      continue;
    }
    auto idx = collect.add(href + (type == "directory" ? "/" : ""), type == "directory");
    if (!idx) continue;
    ListingEntry& e = out.entries[*idx];
    if (type == "file" && item.contains("size") && item["size"].is_number_unsigned()) {
      e.size = item["size"].get<uint64_t>();
    }
    if (item.contains("mtime") && item["mtime"].is_string()) {
      e.mtimeSec = parseListingDate(item["mtime"].get<std::string>());
    }
  }
}

}  // namespace

const char* formatName(ListingFormat f) {
  switch (f) {
    case ListingFormat::kAuto: return "auto";
    case ListingFormat::kNginxHtml: return "nginx";
    case ListingFormat::kNginxJson: return "nginx-json";
    case ListingFormat::kApache: return "apache";
    case ListingFormat::kLighttpd: return "lighttpd";
    case ListingFormat::kPython: return "python";
    case ListingFormat::kGeneric: return "generic";
  }
  return "unknown";
}

std::optional<int64_t> parseListingDate(std::string_view s) {
  s = trimView(s);
  if (s.size() < 16) return std::nullopt;
  // RFC 1123: "Wed, 31 Jan 2024 12:00:00 GMT"
  if (s.size() >= 29 && s[3] == ',' && s[4] == ' ') {
    int day = digits(s, 5, 2), mon = monthIndex(s.substr(8, 3)), year = digits(s, 12, 4);
    int h = digits(s, 17, 2), m = digits(s, 20, 2), sec = digits(s, 23, 2);
    if (day < 0 || mon < 0 || year < 0 || h < 0 || m < 0 || sec < 0 || s[16] != ' ') return std::nullopt;
    return makeTime(year, mon, day, h, m, sec);
  }
  // nginx: "31-Jan-2024 12:00"
  if (s[2] == '-' && s[6] == '-' && s[11] == ' ' && s[14] == ':') {
    int day = digits(s, 0, 2), mon = monthIndex(s.substr(3, 3)), year = digits(s, 7, 4);
    int h = digits(s, 12, 2), m = digits(s, 15, 2);
    if (day < 0 || mon < 0 || year < 0 || h < 0 || m < 0) return std::nullopt;
    return makeTime(year, mon, day, h, m, 0);
  }
  // Apache: "2024-01-31 12:00"
  if (s[4] == '-' && s[7] == '-' && s[10] == ' ' && s[13] == ':') {
    int year = digits(s, 0, 4), mon = digits(s, 5, 2), day = digits(s, 8, 2);
    int h = digits(s, 11, 2), m = digits(s, 14, 2);
    if (year < 0 || mon < 1 || day < 0 || h < 0 || m < 0) return std::nullopt;
    int sec = s.size() >= 19 && s[16] == ':' ? digits(s, 17, 2) : 0;
    return makeTime(year, mon - 1, day, h, m, sec < 0 ? 0 : sec);
  }
  // lighttpd: "2024-Jan-31 12:00:00"
  if (s.size() >= 20 && s[4] == '-' && s[8] == '-' && s[11] == ' ' && s[14] == ':' && s[17] == ':') {
    int year = digits(s, 0, 4), mon = monthIndex(s.substr(5, 3)), day = digits(s, 9, 2);
    int h = digits(s, 12, 2), m = digits(s, 15, 2), sec = digits(s, 18, 2);
    if (year < 0 || mon < 0 || day < 0 || h < 0 || m < 0 || sec < 0) return std::nullopt;
    return makeTime(year, mon, day, h, m, sec);
  }
  return std::nullopt;
}

ListingResult parseListing(std::string_view baseUrl, std::string_view contentType,
                           std::string_view body) {
  ListingResult out;
  auto base = parseUrl(baseUrl);
  if (!base) {
    out.rejected.push_back("base URL is not an http(s) URL");
    return out;
  }
  if (base->path.back() != '/') base->path.push_back('/');
  Collector collect(*base, out);
  std::string_view trimmed = trimView(body.substr(0, 64));
  bool json = contentType.find("json") != std::string_view::npos ||
              (!trimmed.empty() && trimmed.front() == '[');
  if (json) {
    parseNginxJson(body, collect, out);
  } else {
    parseHtml(body, collect, out);
  }
  std::sort(out.entries.begin(), out.entries.end(),
            [](const ListingEntry& a, const ListingEntry& b) { return a.name < b.name; });
  return out;
}

}  // namespace hsm::remote::http
