// Minimal URL handling for directory listings: parse an absolute http(s) URL, resolve a
// reference (an href) against a base (RFC 3986 section 5; query and fragment are only
// detected, never kept), percent-decoding and -encoding. Independent of curl.
//
// Contract: pure functions of untrusted input, safe to call from any thread; bounded work
// (linear in the input), never throw (except std::bad_alloc), never crash. Paths are kept
// percent-encoded as written; decodePath() turns them into decoded segments, which is how
// two spellings of one path ("%41" and "A", "%c3%a9" and "%C3%A9") compare equal.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hsm::remote::http {

struct Url {
  std::string scheme;     // "http" or "https" (lower case)
  std::string authority;  // host[:port], lower case, no userinfo, default port removed
  std::string path;       // starts with '/', dot segments removed, still percent-encoded
  bool hasQuery = false;
  bool hasFragment = false;

  // scheme://authority, what "same origin" compares.
  std::string origin() const { return scheme + "://" + authority; }
};

// Parses an absolute http(s) URL. nullopt if it is not one (other scheme, no host).
std::optional<Url> parseUrl(std::string_view s);

// Resolves `ref` (an href as found, HTML entities already decoded) against `base`.
// Leading/trailing ASCII whitespace is ignored, tabs and newlines anywhere are removed (as
// browsers do). nullopt for references fanhsm never follows
// (other schemes such as javascript:, mailto:, data:; malformed or > 8 KiB).
std::optional<Url> resolve(const Url& base, std::string_view ref);

// Removes "." and ".." segments from an absolute path (RFC 3986 5.2.4); ".." never climbs
// above "/". Empty segments ("a//b") are kept.
std::string removeDotSegments(std::string_view path);

// Decodes %XX escapes (either hex case). nullopt for a malformed escape ("%", "%4", "%zz").
std::optional<std::string> percentDecode(std::string_view s);

// Encodes every byte except unreserved ones (A-Z a-z 0-9 - . _ ~) as %XX (upper case), so
// the result is one path segment that decodes back to `s`.
std::string percentEncode(std::string_view s);

// An absolute path split at '/' into percent-decoded segments: "/a/b%20c/" ->
// {"a", "b c"}, trailingSlash. nullopt if a segment has a malformed escape.
struct DecodedPath {
  std::vector<std::string> segments;
  bool trailingSlash = false;
};
std::optional<DecodedPath> decodePath(std::string_view path);

}  // namespace hsm::remote::http
