// Parsers for web server directory listings: nginx autoindex (HTML and JSON), Apache
// mod_autoindex, lighttpd mod_dirlisting, python's http.server, and any HTML page of links.
//
// Contract: pure function of untrusted input; never throws, never crashes, work linear in
// the body size. Only links that resolve to a direct child of the listed directory on the
// same origin are kept; every name is percent-decoded and must pass
// validateName(name, /*requireUtf8=*/true). Everything else that looks like an entry is
// reported in `rejected`, one line each. Sizes are reported only when exact (nginx JSON);
// times when the listing prints them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hsm::remote::http {

enum class ListingFormat { kAuto, kNginxHtml, kNginxJson, kApache, kLighttpd, kPython, kGeneric };

const char* formatName(ListingFormat f);

struct ListingEntry {
  std::string name;  // one decoded path component
  bool isDir = false;
  std::optional<uint64_t> size;     // exact size in bytes, when the listing gives it
  std::optional<int64_t> mtimeSec;  // seconds since the epoch (UTC), when given
};

struct ListingResult {
  ListingFormat detected = ListingFormat::kGeneric;
  std::vector<ListingEntry> entries;  // sorted by name, unique
  std::vector<std::string> rejected;  // "reason: link" per entry left out
};

// baseUrl: absolute URL of the listed directory, ending in '/'.
ListingResult parseListing(std::string_view baseUrl, std::string_view contentType,
                           std::string_view body);

// Parses a date as listings print it ("31-Jan-2024 12:00", "2024-01-31 12:00",
// "2024-Jan-31 12:00:00", RFC 1123 "Wed, 31 Jan 2024 12:00:00 GMT") at the start of `s`
// (after spaces). Seconds since the epoch, UTC.
std::optional<int64_t> parseListingDate(std::string_view s);

}  // namespace hsm::remote::http
