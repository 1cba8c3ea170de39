// Parsers for web-server directory listings: nginx autoindex (HTML and JSON), Apache
// mod_autoindex (fancy <pre>, HTMLTable, plain), lighttpd mod_dirlisting, python's
// http.server, and — as the fallback — any HTML page of links.
//
// Called by the HTTP backend for every directory it lists. Pure function of untrusted
// input: thread-safe, never throws, never crashes, work roughly linear in the body size
// (the HTML is filtered before gumbo sees it, see html_filter.h).
//
// Rules:
//  - Only links that resolve (against baseUrl, after "."/".." removal) to a DIRECT child of
//    baseUrl on the same origin (scheme, host, port) become entries. A trailing '/' marks a
//    directory. Parent and self links, sort and other query links ("?C=N;O=D") and in-page
//    anchors are dropped silently; everything else left out (other origins, other schemes such
//    as javascript:, deeper or unrelated paths, bad names, duplicates) gets one line in
//    `rejected` ("<reason>: <link as written>").
//    The same href written twice (an icon link and a name link) counts once; a different
//    link to a name already seen is a duplicate, and the first one wins.
//  - Names are HTML-unescaped (by gumbo) and percent-decoded, then must pass
//    validateName(name, /*requireUtf8=*/true): no '/', NUL, "." or "..", <= 255 bytes.
//  - Sizes are reported only when exact: nginx JSON, and a plain byte count in an nginx,
//    Apache or lighttpd page ("1023"); "1.0K", "10K", "0.1K" are approximations and give
//    no size. Times come from recognised formats only (minutes for nginx HTML and Apache,
//    seconds for lighttpd and nginx JSON); Apache and lighttpd print the server's local
//    time, which is taken as UTC.
//  - A generic page (no known server) gives names and directory flags only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hsm::remote::http {

enum class ListingFormat { kAuto, kNginxHtml, kNginxJson, kApache, kLighttpd, kPython, kGeneric };

// "nginx", "nginx-json", "apache", "lighttpd", "python", "generic", "auto".
const char* formatName(ListingFormat f);

struct ListingEntry {
  std::string name;  // one decoded, validated path component
  bool isDir = false;
  std::optional<uint64_t> size;     // exact size in bytes, only when the listing gives it
  std::optional<int64_t> mtimeSec;  // seconds since the epoch (UTC), when the listing gives it
};

struct ListingResult {
  ListingFormat detected = ListingFormat::kGeneric;
  std::vector<ListingEntry> entries;  // sorted by name (bytes), unique; first link wins
  std::vector<std::string> rejected;  // one line per link or name left out (at most
                                      // kMaxRejectedLines, then a summary line)
};

inline constexpr size_t kMaxRejectedLines = 1000;

// baseUrl: absolute http(s) URL of the listed directory, ending in '/' (one is added if
// missing). contentType: the Content-Type header value, "" if absent. body: the response.
ListingResult parseListing(std::string_view baseUrl, std::string_view contentType,
                           std::string_view body);

// Which server wrote an HTML page (kGeneric if none is recognised).
ListingFormat detectHtmlFormat(std::string_view body);

// Parses a date as listings print it, at the start of `s` (after spaces):
// "31-Jan-2024 12:00" (nginx), "2024-01-31 12:00" (Apache), "2024-Jan-31 12:00:00"
// (lighttpd), "Wed, 31 Jan 2024 12:00:00 GMT" (RFC 1123, nginx JSON). Seconds since the
// epoch, UTC. If `consumed` is given, it receives the number of bytes of `s` used.
std::optional<int64_t> parseListingDate(std::string_view s, size_t* consumed = nullptr);

// A size column token: all digits -> exact bytes; anything else ("1.0K", "10K", "-") ->
// nullopt.
std::optional<uint64_t> parseExactSize(std::string_view token);

}  // namespace hsm::remote::http
