// Fuzzes the directory-listing parsers and URL resolution with hostile pages: no crash,
// no hang, and every name returned is a valid single path component.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "remote/http/listing_parser.h"
#include "remote/http/url.h"
#include "util/rel_path.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // The first byte picks the content type, so both parsers are reached.
  std::string_view type = (size > 0 && (data[0] & 1)) ? "application/json" : "text/html";
  auto r = hsm::remote::http::parseListing("http://127.0.0.1:8080/pub/dir/", type, in);
  for (const auto& e : r.entries) {
    if (!hsm::validateName(e.name, true).isOk()) std::abort();
  }
  for (size_t i = 1; i < r.entries.size(); ++i) {
    if (!(r.entries[i - 1].name < r.entries[i].name)) std::abort();  // sorted, unique
  }
  auto base = hsm::remote::http::parseUrl("https://example.org/a/b/");
  if (!base) std::abort();
  auto u = hsm::remote::http::resolve(*base, in.substr(0, 512));
  if (u && (u->path.empty() || u->path[0] != '/')) std::abort();
  (void)hsm::remote::http::percentDecode(in.substr(0, 512));
  (void)hsm::remote::http::parseListingDate(in.substr(0, 64));
  return 0;
}
