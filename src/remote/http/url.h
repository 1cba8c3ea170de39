// Minimal URL handling for directory listings: split, resolve a reference against a base
// (RFC 3986 section 5, without query/fragment semantics beyond detecting them), and
// percent-decoding. Pure functions on untrusted input: bounded, never throw.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace hsm::remote::http {

struct Url {
  std::string scheme;     // lower case
  std::string authority;  // host[:port], lower case, no userinfo
  std::string path;       // starts with '/', still percent-encoded
  bool hasQuery = false;
  bool hasFragment = false;
};

// Parses an absolute http(s) URL. nullopt if it is not one.
std::optional<Url> parseUrl(std::string_view s);

// Resolves `ref` (an href) against `base`. nullopt for references fanhsm never follows
// (other schemes such as javascript: or mailto:, malformed input).
std::optional<Url> resolve(const Url& base, std::string_view ref);

// Removes "." and ".." segments from an absolute path.
std::string removeDotSegments(std::string_view path);

// Decodes %XX escapes. nullopt for a malformed escape.
std::optional<std::string> percentDecode(std::string_view s);

}  // namespace hsm::remote::http
