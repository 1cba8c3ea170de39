#include "remote/http/html_filter.h"

#include <array>

namespace hsm::remote::http {
namespace {

bool isAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool isTagSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f'; }
char toLower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

constexpr std::array<std::string_view, 9> kKeptTags = {"a",  "table", "thead", "tbody", "tfoot",
                                                       "tr", "td",    "th",    "pre"};
// Elements whose content is not markup (or not shown): dropped with their content.
constexpr std::array<std::string_view, 10> kDroppedWithContent = {
    "script", "style",   "title",    "textarea", "xmp",
    "iframe", "noembed", "noframes", "noscript", "template"};

template <size_t N>
bool contains(const std::array<std::string_view, N>& set, std::string_view name) {
  for (auto s : set) {
    if (s == name) return true;
  }
  return false;
}

// Index just past the '>' that ends a tag whose name ends at `i`; quoted attribute values
// (after '=') may contain '>'. npos if the tag is not terminated.
size_t tagEnd(std::string_view s, size_t i) {
  while (i < s.size()) {
    char c = s[i];
    if (c == '>') return i + 1;
    if (c == '=') {
      ++i;
      while (i < s.size() && isTagSpace(s[i])) ++i;
      if (i < s.size() && (s[i] == '"' || s[i] == '\'')) {
        size_t close = s.find(s[i], i + 1);
        if (close == std::string_view::npos) return std::string_view::npos;
        i = close + 1;
      }
      continue;
    }
    ++i;
  }
  return std::string_view::npos;
}

// Case-insensitive search for "</name" from `from`; npos if absent.
size_t findEndTag(std::string_view s, size_t from, std::string_view name) {
  while (true) {
    size_t lt = s.find("</", from);
    if (lt == std::string_view::npos) return lt;
    size_t k = 0;
    while (k < name.size() && lt + 2 + k < s.size() && toLower(s[lt + 2 + k]) == name[k]) ++k;
    if (k == name.size()) return lt;
    from = lt + 2;
  }
}

}  // namespace

std::string filterListingHtml(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  int tables = 0;
  int pres = 0;
  size_t i = 0;
  while (i < s.size()) {
    size_t lt = s.find('<', i);
    if (lt == std::string_view::npos) {
      out.append(s.substr(i));
      break;
    }
    out.append(s.substr(i, lt - i));
    i = lt;
    if (lt + 1 >= s.size()) {
      out.push_back('<');
      break;
    }
    char next = s[lt + 1];
    if (next == '!') {
      // Comment (to "-->"), or doctype / CDATA / bogus comment (to '>'): dropped.
      size_t end = s.substr(lt, 4) == "<!--" ? s.find("-->", lt + 4) : s.find('>', lt + 2);
      if (end == std::string_view::npos) break;
      i = end + (s[end] == '-' ? 3 : 1);
      continue;
    }
    if (next == '?') {
      size_t end = s.find('>', lt + 2);
      if (end == std::string_view::npos) break;
      i = end + 1;
      continue;
    }
    bool endTag = next == '/';
    size_t nameStart = lt + (endTag ? 2 : 1);
    if (nameStart >= s.size() || !isAlpha(s[nameStart])) {
      out.push_back('<');  // not a tag: text
      i = lt + 1;
      continue;
    }
    size_t nameEnd = nameStart;
    std::string name;
    while (nameEnd < s.size() && !isTagSpace(s[nameEnd]) && s[nameEnd] != '/' &&
           s[nameEnd] != '>') {
      if (name.size() < 16) name.push_back(toLower(s[nameEnd]));
      ++nameEnd;
    }
    size_t end = tagEnd(s, nameEnd);
    if (end == std::string_view::npos) break;  // unterminated tag at the end: dropped
    i = end;
    if (name == "plaintext" && !endTag) break;  // everything after it is text, not links
    if (!endTag && contains(kDroppedWithContent, name)) {
      size_t close = findEndTag(s, end, name);
      if (close == std::string_view::npos) break;
      size_t closeEnd = tagEnd(s, close + 2 + name.size());
      if (closeEnd == std::string_view::npos) break;
      i = closeEnd;
      continue;
    }
    if (!contains(kKeptTags, name)) continue;
    int* depth = name == "table" ? &tables : name == "pre" ? &pres : nullptr;
    if (depth != nullptr) {
      int cap = name == "table" ? kMaxTableDepth : kMaxPreDepth;
      if (endTag) {
        if (*depth == 0) continue;
        --*depth;
      } else {
        if (*depth >= cap) continue;
        ++*depth;
      }
    }
    out.append(s.substr(lt, end - lt));
  }
  return out;
}

}  // namespace hsm::remote::http
