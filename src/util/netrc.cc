#include "util/netrc.h"

#include <cctype>
#include <vector>

namespace hsm {
namespace {

struct Token {
  std::string text;
  size_t end = 0;  // offset just past the token in the input
};

// The next token at or after `pos`, or nullopt at the end.
std::optional<Token> nextToken(std::string_view s, size_t pos) {
  while (pos < s.size() && std::isspace(static_cast<unsigned char>(s[pos]))) ++pos;
  if (pos >= s.size()) return std::nullopt;
  Token t;
  if (s[pos] == '"') {
    ++pos;
    while (pos < s.size() && s[pos] != '"') {
      if (s[pos] == '\\' && pos + 1 < s.size()) ++pos;
      t.text.push_back(s[pos++]);
    }
    t.end = pos < s.size() ? pos + 1 : pos;
    return t;
  }
  while (pos < s.size() && !std::isspace(static_cast<unsigned char>(s[pos]))) t.text.push_back(s[pos++]);
  t.end = pos;
  return t;
}

}  // namespace

std::optional<std::string> netrcCredentials(std::string_view text, std::string_view host) {
  struct Entry {
    bool isDefault = false;
    std::string machine, login, password;
  };
  std::vector<Entry> entries;
  size_t pos = 0;
  while (auto t = nextToken(text, pos)) {
    pos = t->end;
    if (t->text == "machine" || t->text == "default") {
      Entry e;
      e.isDefault = t->text == "default";
      if (!e.isDefault) {
        auto name = nextToken(text, pos);
        if (!name) break;
        pos = name->end;
        e.machine = name->text;
      }
      entries.push_back(std::move(e));
    } else if (t->text == "login" || t->text == "password" || t->text == "account") {
      auto value = nextToken(text, pos);
      if (!value) break;
      pos = value->end;
      if (entries.empty()) continue;  // a value outside any entry: ignored
      if (t->text == "login") entries.back().login = value->text;
      if (t->text == "password") entries.back().password = value->text;
    } else if (t->text == "macdef") {
      const size_t blank = text.find("\n\n", pos);  // the macro ends at an empty line
      pos = blank == std::string_view::npos ? text.size() : blank + 2;
    }
  }
  const Entry* found = nullptr;
  for (const auto& e : entries) {
    if (!e.isDefault && e.machine == host) {
      found = &e;
      break;
    }
  }
  if (!found) {
    for (const auto& e : entries) {
      if (e.isDefault) {
        found = &e;
        break;
      }
    }
  }
  if (!found || found->login.empty()) return std::nullopt;
  return found->login + ":" + found->password;
}

}  // namespace hsm
