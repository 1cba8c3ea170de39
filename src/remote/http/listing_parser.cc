// Design note: every HTML listing is reduced to the same shape — links, each with the text
// that follows it on its row (the rest of the <pre> line for nginx and Apache fancy, the
// following cells of its <tr> for Apache HTMLTable and lighttpd). The row text starts with
// a date and then a size column, so one row reader serves all servers; detection only
// decides whether that text is trusted at all. Names always come from the href (the link
// text is truncated by nginx, padded by Apache), never from the text.
#include "remote/http/listing_parser.h"

#include <gumbo.h>

#include <algorithm>
#include <ctime>
#include <exception>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "remote/http/html_filter.h"
#include "remote/http/url.h"
#include "util/rel_path.h"

namespace hsm::remote::http {
namespace {

constexpr std::string_view kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                        "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr size_t kMaxRowText = 512;
constexpr size_t kMaxShownLink = 200;

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }
char toLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Spaces, and the UTF-8 no-break space "&nbsp;" decodes to.
std::string_view trimView(std::string_view s) {
  while (true) {
    if (!s.empty() && isSpace(s.front())) {
      s.remove_prefix(1);
    } else if (s.substr(0, 2) == "\xC2\xA0") {
      s.remove_prefix(2);
    } else {
      break;
    }
  }
  while (true) {
    if (!s.empty() && isSpace(s.back())) {
      s.remove_suffix(1);
    } else if (s.size() >= 2 && s.substr(s.size() - 2) == "\xC2\xA0") {
      s.remove_suffix(2);
    } else {
      break;
    }
  }
  return s;
}

int monthIndex(std::string_view s) {
  if (s.size() < 3) return -1;
  for (int i = 0; i < 12; ++i) {
    const auto m = kMonths[i];
    if (toLower(s[0]) == m[0] && toLower(s[1]) == m[1] && toLower(s[2]) == m[2]) return i;
  }
  return -1;
}

// `n` digits at `pos`; -1 if they are not all digits.
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

bool at(std::string_view s, size_t pos, char c) { return pos < s.size() && s[pos] == c; }

// Days since 1970-01-01 of a proleptic Gregorian date (no timegm: no locale, no tz state).
int64_t daysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

std::optional<int64_t> makeTime(int year, int mon0, int day, int hour, int min, int sec) {
  static constexpr int kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (year < 1970 || year > 9999 || mon0 < 0 || mon0 > 11 || day < 1 || day > kDays[mon0] ||
      hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 60) {
    return std::nullopt;
  }
  return daysFromCivil(year, mon0 + 1, day) * 86400 + hour * 3600 + min * 60 + sec;
}

std::string printable(std::string_view s) {
  std::string out(s.substr(0, kMaxShownLink));
  for (auto& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  if (s.size() > kMaxShownLink) out += "...";
  return out;
}

// Collects entries: resolves links, decodes and validates names, drops duplicates.
class Collector {
 public:
  Collector(Url base, DecodedPath baseSegs, ListingResult& out)
      : base_(std::move(base)), baseSegs_(std::move(baseSegs)), out_(out) {}

  // A link as found in a page. Returns the index of the new entry, if one was added.
  std::optional<size_t> addHref(std::string_view href) {
    auto u = resolve(base_, href);
    if (!u) {
      reject("not an http(s) link", href);
      return std::nullopt;
    }
    if (u->hasQuery) return std::nullopt;  // sort links and the like
    if (u->scheme != base_.scheme || u->authority != base_.authority) {
      reject("link to another origin", href);
      return std::nullopt;
    }
    if (u->hasFragment && u->path == base_.path) return std::nullopt;  // in-page anchor
    auto segs = decodePath(u->path);
    if (!segs) {
      reject("malformed percent-encoding", href);
      return std::nullopt;
    }
    const auto& base = baseSegs_.segments;
    const auto& link = segs->segments;
    bool underBase =
        link.size() > base.size() && std::equal(base.begin(), base.end(), link.begin());
    if (!underBase) {
      bool ancestorOrSelf =
          link.size() <= base.size() && std::equal(link.begin(), link.end(), base.begin());
      if (!ancestorOrSelf) reject("outside the listed directory", href);
      return std::nullopt;  // parent and self links are part of every listing
    }
    if (link.size() != base.size() + 1) {
      reject("not a direct child", href);
      return std::nullopt;
    }
    if (u->hasFragment) {
      reject("link with a fragment", href);
      return std::nullopt;
    }
    const std::string& name = link.back();
    auto dup = seenHrefs_.find(std::string(href));
    if (dup != seenHrefs_.end()) return std::nullopt;  // the same link twice (icon + name)
    auto idx = addName(name, segs->trailingSlash, href);
    if (idx && seenHrefs_.size() < kMaxRememberedHrefs) seenHrefs_.insert(std::string(href));
    return idx;
  }

  // A name as given by a structured listing (JSON), or decoded from a link.
  std::optional<size_t> addName(const std::string& name, bool isDir, std::string_view shown) {
    Status valid = validateName(name, /*requireUtf8=*/true);
    if (!valid) {
      reject(valid.message(), shown);
      return std::nullopt;
    }
    if (!seenNames_.insert(name).second) {
      reject("duplicate name", shown);
      return std::nullopt;
    }
    ListingEntry e;
    e.name = name;
    e.isDir = isDir;
    out_.entries.push_back(std::move(e));
    return out_.entries.size() - 1;
  }

  void reject(std::string_view reason, std::string_view what) {
    ++rejectedCount_;
    if (out_.rejected.size() < kMaxRejectedLines) {
      out_.rejected.push_back(std::string(reason) + ": " + printable(what));
    }
  }

  void finish() {
    if (rejectedCount_ > kMaxRejectedLines) {
      out_.rejected.push_back("... and " + std::to_string(rejectedCount_ - kMaxRejectedLines) +
                              " more rejected links");
    }
  }

 private:
  static constexpr size_t kMaxRememberedHrefs = 1 << 20;
  Url base_;
  DecodedPath baseSegs_;
  ListingResult& out_;
  std::unordered_set<std::string> seenNames_;
  std::unordered_set<std::string> seenHrefs_;
  size_t rejectedCount_ = 0;
};

// Text of a node and its descendants, up to `limit` bytes, iteratively.
void appendText(const GumboNode* node, std::string& out, size_t limit) {
  std::vector<const GumboNode*> stack{node};
  while (!stack.empty() && out.size() < limit) {
    const GumboNode* n = stack.back();
    stack.pop_back();
    if (n->type == GUMBO_NODE_TEXT || n->type == GUMBO_NODE_WHITESPACE) {
      out.append(n->v.text.text);
    } else if (n->type == GUMBO_NODE_ELEMENT) {
      const GumboVector& ch = n->v.element.children;
      for (size_t i = ch.length; i > 0; --i) {
        stack.push_back(static_cast<const GumboNode*>(ch.data[i - 1]));
      }
    }
  }
  if (out.size() > limit) out.resize(limit);
}

// Reads "date size ..." from a row: a date first, then the size column.
void readRow(std::string_view text, ListingEntry& e) {
  text = trimView(text);
  size_t used = 0;
  auto t = parseListingDate(text, &used);
  if (!t) return;
  e.mtimeSec = t;
  if (e.isDir) return;
  std::string_view rest = trimView(text.substr(used));
  size_t end = 0;
  while (end < rest.size() && !isSpace(rest[end])) ++end;
  e.size = parseExactSize(rest.substr(0, end));
}

// The row a link stands on: the following cells of its table row, or the rest of its
// <pre> line. "" if neither.
std::string rowText(const GumboNode* link) {
  std::string text;
  const GumboNode* parent = link->parent;
  if (parent == nullptr || parent->type != GUMBO_NODE_ELEMENT) return text;
  GumboTag tag = parent->v.element.tag;
  if ((tag == GUMBO_TAG_TD || tag == GUMBO_TAG_TH) && parent->parent != nullptr &&
      parent->parent->type == GUMBO_NODE_ELEMENT) {
    // Cells after the link's cell, separated so "date" and "size" stay apart.
    const GumboVector& cells = parent->parent->v.element.children;
    for (size_t i = parent->index_within_parent + 1; i < cells.length; ++i) {
      text.push_back(' ');
      appendText(static_cast<const GumboNode*>(cells.data[i]), text, kMaxRowText);
      if (text.size() >= kMaxRowText) break;
    }
    return text;
  }
  if (tag != GUMBO_TAG_PRE) return text;
  const GumboVector& sib = parent->v.element.children;
  for (size_t i = link->index_within_parent + 1; i < sib.length; ++i) {
    const auto* n = static_cast<const GumboNode*>(sib.data[i]);
    if (n->type != GUMBO_NODE_TEXT && n->type != GUMBO_NODE_WHITESPACE) break;
    std::string_view s(n->v.text.text);
    size_t nl = s.find('\n');
    text.append(s.substr(0, std::min(nl, kMaxRowText)));
    if (nl != std::string_view::npos || text.size() >= kMaxRowText) break;
  }
  return text;
}

void parseHtml(std::string_view body, Collector& collect, ListingResult& out) {
  out.detected = detectHtmlFormat(body);
  const bool trustRows = out.detected == ListingFormat::kNginxHtml ||
                         out.detected == ListingFormat::kApache ||
                         out.detected == ListingFormat::kLighttpd;
  std::string html = filterListingHtml(body);
  GumboOptions options = kGumboDefaultOptions;
  options.max_errors = 0;  // errors are not needed; do not collect them
  GumboOutput* doc = gumbo_parse_with_options(&options, html.data(), html.size());
  if (doc == nullptr) {
    collect.reject("HTML parser failed", "");
    return;
  }
  std::vector<const GumboNode*> stack{doc->root};
  while (!stack.empty()) {
    const GumboNode* n = stack.back();
    stack.pop_back();
    if (n->type != GUMBO_NODE_ELEMENT) continue;
    if (n->v.element.tag == GUMBO_TAG_A) {
      const GumboAttribute* href = gumbo_get_attribute(&n->v.element.attributes, "href");
      if (href != nullptr) {
        if (auto idx = collect.addHref(href->value); idx && trustRows) {
          readRow(rowText(n), out.entries[*idx]);
        }
      }
    }
    const GumboVector& ch = n->v.element.children;
    for (size_t i = ch.length; i > 0; --i) {
      stack.push_back(static_cast<const GumboNode*>(ch.data[i - 1]));
    }
  }
  gumbo_destroy_output(&options, doc);
}

void parseNginxJson(std::string_view body, Collector& collect, ListingResult& out) {
  out.detected = ListingFormat::kNginxJson;
  // No exceptions: parse errors give a "discarded" value.
  auto j = nlohmann::json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_array()) {
    collect.reject("malformed JSON listing", body.substr(0, 40));
    return;
  }
  for (const auto& item : j) {
    if (!item.is_object()) {
      collect.reject("JSON entry is not an object", "");
      continue;
    }
    auto nameIt = item.find("name");
    if (nameIt == item.end() || !nameIt->is_string()) {
      collect.reject("JSON entry without a name", "");
      continue;
    }
    const auto& name = nameIt->get_ref<const std::string&>();
    auto typeIt = item.find("type");
    std::string type =
        typeIt != item.end() && typeIt->is_string() ? typeIt->get<std::string>() : "";
    if (type != "file" && type != "directory") {
      // nginx also lists symlinks to nowhere and sockets as "other": nothing to fetch.
      collect.reject("JSON entry of type '" + printable(type.substr(0, 20)) + "'", name);
      continue;
    }
    bool isDir = type == "directory";
    auto idx = collect.addName(name, isDir, name);
    if (!idx) continue;
    ListingEntry& e = out.entries[*idx];
    auto sizeIt = item.find("size");
    if (!isDir && sizeIt != item.end() && sizeIt->is_number_integer() &&
        (sizeIt->is_number_unsigned() || sizeIt->get<int64_t>() >= 0)) {
      e.size = sizeIt->get<uint64_t>();
    }
    auto mtimeIt = item.find("mtime");
    if (mtimeIt != item.end() && mtimeIt->is_string()) {
      e.mtimeSec = parseListingDate(mtimeIt->get_ref<const std::string&>());
    }
  }
}

bool looksLikeJson(std::string_view contentType, std::string_view body) {
  std::string_view head = trimView(body.substr(0, 256));
  if (!head.empty() && head.front() == '[') return true;
  std::string type;
  for (char c : contentType.substr(0, 128)) type.push_back(toLower(c));
  return type.find("json") != std::string::npos && (head.empty() || head.front() != '<');
}

}  // namespace

const char* formatName(ListingFormat f) {
  switch (f) {
    case ListingFormat::kAuto:
      return "auto";
    case ListingFormat::kNginxHtml:
      return "nginx";
    case ListingFormat::kNginxJson:
      return "nginx-json";
    case ListingFormat::kApache:
      return "apache";
    case ListingFormat::kLighttpd:
      return "lighttpd";
    case ListingFormat::kPython:
      return "python";
    case ListingFormat::kGeneric:
      return "generic";
  }
  return "unknown";
}

ListingFormat detectHtmlFormat(std::string_view body) {
  // The markers are in the page head or the first rows; a bounded prefix is enough.
  std::string_view head = body.substr(0, 8192);
  auto has = [&](std::string_view s) { return head.find(s) != std::string_view::npos; };
  if (has("<title>Directory listing for ")) return ListingFormat::kPython;
  if (has("<div class=\"list\">") && has("summary=\"Directory Listing\"")) {
    return ListingFormat::kLighttpd;
  }
  if (has("<h1>Index of ")) {
    if (has("?C=N;O=D") || has("?C=M;O=A") || has("<ul><li><a href=")) {
      return ListingFormat::kApache;
    }
    if (has("</h1><hr><pre>")) return ListingFormat::kNginxHtml;
  }
  return ListingFormat::kGeneric;
}

std::optional<int64_t> parseListingDate(std::string_view s, size_t* consumed) {
  size_t lead = 0;
  while (lead < s.size() && isSpace(s[lead])) ++lead;
  s = s.substr(lead);
  auto done = [&](size_t used, std::optional<int64_t> t) {
    if (t && consumed != nullptr) *consumed = lead + used;
    return t;
  };
  // RFC 1123: "Wed, 31 Jan 2024 12:00:00 GMT"
  if (at(s, 3, ',') && at(s, 4, ' ') && at(s, 7, ' ') && at(s, 11, ' ') && at(s, 16, ' ') &&
      at(s, 19, ':') && at(s, 22, ':')) {
    int day = digits(s, 5, 2), year = digits(s, 12, 4);
    int h = digits(s, 17, 2), m = digits(s, 20, 2), sec = digits(s, 23, 2);
    int mon = monthIndex(s.substr(8, 3));
    if (day < 0 || mon < 0 || year < 0 || h < 0 || m < 0 || sec < 0) return std::nullopt;
    if (s.substr(25, 4) != " GMT") return std::nullopt;
    return done(29, makeTime(year, mon, day, h, m, sec));
  }
  // nginx: "31-Jan-2024 12:00"
  if (at(s, 2, '-') && at(s, 6, '-') && at(s, 11, ' ') && at(s, 14, ':')) {
    int day = digits(s, 0, 2), year = digits(s, 7, 4), h = digits(s, 12, 2), m = digits(s, 15, 2);
    int mon = monthIndex(s.substr(3, 3));
    if (day < 0 || mon < 0 || year < 0 || h < 0 || m < 0) return std::nullopt;
    return done(17, makeTime(year, mon, day, h, m, 0));
  }
  // Apache: "2024-01-31 12:00", optionally ":ss"
  if (at(s, 4, '-') && at(s, 7, '-') && at(s, 10, ' ') && at(s, 13, ':')) {
    int year = digits(s, 0, 4), mon = digits(s, 5, 2), day = digits(s, 8, 2);
    int h = digits(s, 11, 2), m = digits(s, 14, 2);
    if (year < 0 || mon < 1 || day < 0 || h < 0 || m < 0) return std::nullopt;
    int sec = at(s, 16, ':') ? digits(s, 17, 2) : 0;
    if (sec < 0) return std::nullopt;
    return done(at(s, 16, ':') ? 19 : 16, makeTime(year, mon - 1, day, h, m, sec));
  }
  // lighttpd: "2024-Jan-31 12:00:00"
  if (at(s, 4, '-') && at(s, 8, '-') && at(s, 11, ' ') && at(s, 14, ':') && at(s, 17, ':')) {
    int year = digits(s, 0, 4), day = digits(s, 9, 2);
    int h = digits(s, 12, 2), m = digits(s, 15, 2), sec = digits(s, 18, 2);
    int mon = monthIndex(s.substr(5, 3));
    if (year < 0 || mon < 0 || day < 0 || h < 0 || m < 0 || sec < 0) return std::nullopt;
    return done(20, makeTime(year, mon, day, h, m, sec));
  }
  return std::nullopt;
}

std::optional<uint64_t> parseExactSize(std::string_view token) {
  if (token.empty() || token.size() > 19) return std::nullopt;  // < 10^19 fits in uint64
  uint64_t v = 0;
  for (char c : token) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

ListingResult parseListing(std::string_view baseUrl, std::string_view contentType,
                           std::string_view body) {
  ListingResult out;
  try {
    auto base = parseUrl(baseUrl);
    if (!base) {
      out.rejected.push_back("base URL is not an absolute http(s) URL: " + printable(baseUrl));
      return out;
    }
    base->hasQuery = base->hasFragment = false;
    if (base->path.back() != '/') base->path.push_back('/');
    auto baseSegs = decodePath(base->path);
    if (!baseSegs) {
      out.rejected.push_back("base URL has a malformed percent-encoding: " + printable(baseUrl));
      return out;
    }
    Collector collect(*base, std::move(*baseSegs), out);
    if (looksLikeJson(contentType, body)) {
      parseNginxJson(body, collect, out);
    } else {
      parseHtml(body, collect, out);
    }
    collect.finish();
    std::sort(out.entries.begin(), out.entries.end(),
              [](const ListingEntry& a, const ListingEntry& b) { return a.name < b.name; });
  } catch (const std::exception& e) {
    // Only std::bad_alloc is expected here; report the listing as unusable.
    out.entries.clear();
    out.rejected.push_back(std::string("listing not parsed: ") + e.what());
  }
  return out;
}

}  // namespace hsm::remote::http
