// HttpRemote: a web server's directory listings as a Remote (nginx autoindex, Apache
// mod_autoindex, lighttpd, python http.server, or any HTML page of links).
//
// Contract (in addition to remote.h)
// - The base URL is a directory URL (a trailing '/' is added if missing). Paths map to URLs
//   by percent-encoding each component; directories are requested with a trailing '/'.
// - Listings are parsed by listing_parser.h: only links to direct children on the same
//   origin are kept; every name is validated; rejected links are reported in `skipped`.
// - Sizes, mtimes and validators come from the listing when it gives them exactly, else
//   from HEAD requests issued in parallel (bounded by `parallel`).
// - A file's version is its ETag if the server sends one, else "lm:<Last-Modified>:<size>".
//   Range requests carry If-Range; a server answering 200 (changed) or a Content-Range that
//   does not match makes read() fail with ESTALE; the bytes are never delivered.
// - Retries: connection errors, timeouts, 5xx and truncated bodies are retried `retries`
//   times with exponential backoff, resuming after the bytes already delivered; then EIO.
//   404/410 -> ENOENT, 401/403 -> EACCES, 416 -> ESTALE.
// - Credentials (user:password in `user` or in the URL, or ~/.netrc) are never logged:
//   describe() and error messages show the URL without them.
// - Thread-safe: curl handles come from a pool; one transfer per handle at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "remote/remote.h"

namespace hsm::remote {

struct HttpOptions {
  bool insecure = false;             // skip TLS verification
  std::string user;                  // "user:password" for basic auth, or ""
  bool netrc = false;                // use ~/.netrc
  std::vector<std::string> headers;  // extra "Name: value" headers
  std::chrono::seconds connectTimeout{10};
  // A transfer slower than minSpeed bytes/s over stallTimeout fails (a server dripping
  // bytes holds a connection as surely as a silent one).
  std::chrono::seconds stallTimeout{20};
  uint64_t minSpeed = 1024;
  // A request (one listing, one HEAD, one range of at most a fetch) that takes longer
  // fails. A whole-file stream from a server without ranges gets size/minSpeed more.
  std::chrono::seconds requestTimeout{300};
  // A listing page larger than this fails (EFBIG) instead of being parsed: parsing holds
  // it, and a tree of it, in memory.
  uint64_t maxListingBytes = 64ull << 20;
  int retries = 3;
  size_t parallel = 8;               // concurrent HEAD requests while listing
  // Redirects are followed within the source's origin only (scheme, host, port), never from
  // https to http, and never to a loopback or link-local address unless the source itself
  // is on one. `redirectsAnywhere` also follows them to other origins, but only when no
  // credential or header would go along (user, netrc, headers empty).
  bool redirectsAnywhere = false;
};

class HttpRemote final : public Remote {
 public:
  // Call once per process before any thread starts (wraps curl_global_init).
  static Status globalInit();
  static Result<std::unique_ptr<HttpRemote>> open(const std::string& url, HttpOptions options);
  ~HttpRemote() override;

  // Revalidates with If-None-Match / If-Modified-Since when the listing had an ETag or a
  // Last-Modified (most autoindex pages have neither: then it is a full listing).
  Result<Listing> list(const std::string& dir, const std::string& validator) override;
  Status read(const std::string& path, const ObjectVersion& version, uint64_t offset,
              uint64_t length, ByteSink& sink) override;
  Result<Entry> rootEntry() override;
  std::string describe() const override { return displayUrl_; }
  bool supportsRanges() const override { return !noRanges_.load(); }

  // The URL of a path (for tests and messages); directories end with '/'.
  std::string urlFor(const std::string& path, bool isDir) const;

 private:
  struct Handle;
  struct Response;
  HttpRemote(std::string baseUrl, std::string displayUrl, HttpOptions options);
  std::unique_ptr<Handle> borrow();
  void giveBack(std::unique_ptr<Handle> h);
  // One GET (body up to maxBody) or HEAD, with retries for connection errors and 5xx.
  Result<Response> perform(const char* method, const std::string& url, size_t maxBody,
                           const std::vector<std::string>& extraHeaders);
  // Size from a one-byte range request, for servers whose HEAD has no Content-Length.
  Result<uint64_t> probeSize(const std::string& url);
  // Sizes and versions of the files a listing left without (HEAD requests, in parallel).
  // An entry whose own answer rules it out (4xx, a refused redirect, no or an implausible
  // size) is dropped with its reason in `skipped`; a failure that may pass fails it all.
  Status fetchEntryAttrs(const std::string& dirPath, std::vector<Entry>& entries,
                         std::vector<std::string>* skipped);

 public:
  // What a transfer may reach (see HttpOptions::redirectsAnywhere), checked by curl's
  // pre-request callback for the first request and every redirect, before it is sent.
  struct Reach {
    std::string origin;        // the source's scheme://host[:port]
    bool anyOrigin = false;    // other origins too (nothing secret to send along)
    bool loopback = false;     // the source is on a loopback address
    bool linkLocal = false;    // ... a link-local one
    // Why a request to `url` at address `ip` is refused, or "" if it may go.
    std::string refusal(const std::string& url, const std::string& ip) const;
  };
  const Reach& reach() const { return reach_; }  // for tests

 private:
  static Reach reachOf(const std::string& baseUrl, const HttpOptions& options);

  const std::string baseUrl_;
  const std::string displayUrl_;  // without credentials
  const HttpOptions options_;
  const Reach reach_;
  std::atomic<bool> noRanges_{false};  // the server answered a range request with 200
  std::mutex poolMu_;  // rank 95 (leaf)
  std::vector<std::unique_ptr<Handle>> pool_;
};

}  // namespace hsm::remote
