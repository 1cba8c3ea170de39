// Fuzzes the directory-listing parsers, the HTML pre-filter and the URL helpers with
// arbitrary bytes: no crash, no hang, no leak, and every invariant the backend relies on
// holds (names valid and unique, entries sorted, sizes only on files).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "remote/http/html_filter.h"
#include "remote/http/listing_parser.h"
#include "remote/http/url.h"
#include "util/rel_path.h"

namespace http = hsm::remote::http;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // The first byte picks the content type, so both parsers are reached from any seed.
  std::string_view type = (size > 0 && (data[0] & 1)) ? "application/json" : "text/html";
  auto r = http::parseListing("http://127.0.0.1:8080/pub/dir/", type, in);
  for (size_t i = 0; i < r.entries.size(); ++i) {
    const auto& e = r.entries[i];
    check(hsm::validateName(e.name, true).isOk());
    check(!e.isDir || !e.size.has_value());
    if (i > 0) check(r.entries[i - 1].name < e.name);  // sorted, unique
  }
  check(r.rejected.size() <= http::kMaxRejectedLines + 1);

  (void)http::filterListingHtml(in);
  (void)http::parseListingDate(in.substr(0, 64));
  (void)http::parseExactSize(in.substr(0, 32));

  // URL helpers: the input as a reference and as a base URL.
  std::string_view ref = in.substr(0, 1024);
  auto base = http::parseUrl("https://example.org/a/b/");
  check(base.has_value());
  if (auto u = http::resolve(*base, ref)) {
    check(!u->path.empty() && u->path[0] == '/');
    check(u->scheme == "http" || u->scheme == "https");
    check(http::removeDotSegments(u->path) == u->path);  // idempotent
  }
  if (auto u = http::parseUrl(ref)) {
    check(!u->authority.empty() && !u->path.empty() && u->path[0] == '/');
    (void)http::decodePath(u->path);
    (void)http::parseListing(ref, "", "<a href=\"x\">x</a>");
  }
  if (auto d = http::percentDecode(ref)) check(d->size() <= ref.size());
  check(http::percentDecode(http::percentEncode(ref)) == std::string(ref));
  return 0;
}
