#include "remote/http/http_remote.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <map>
#include <optional>
#include <climits>
#include <thread>

#include "remote/http/listing_parser.h"
#include "remote/http/url.h"
#include "util/log.h"
#include "util/rel_path.h"

namespace hsm::remote {
namespace {

// A file larger than this is taken for a hostile or broken answer (no filesystem fanhsm
// caches on holds one; a "negative" Content-Length parses as a huge one).
constexpr uint64_t kMaxFileSize = uint64_t{16} << 40;

std::string httpDate(int64_t sec) {
  std::time_t t = static_cast<std::time_t>(sec);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == '\r' || s.back() == '\n' || s.back() == ' ')) s.remove_suffix(1);
  return std::string(s);
}

bool iequalsPrefix(std::string_view line, std::string_view name) {
  if (line.size() < name.size()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(line[i])) != name[i]) return false;
  }
  return true;
}

// Version strings: "<size>:etag:<strong etag>" or "<size>:lm:<HTTP date>" or "<size>:none".
struct ParsedVersion {
  uint64_t size = 0;
  std::string ifRange;  // value for If-Range, "" if none
  std::string etag;
  std::string lastModified;
};

std::optional<ParsedVersion> parseVersion(const std::string& v) {
  auto colon = v.find(':');
  if (colon == std::string::npos) return std::nullopt;
  ParsedVersion p;
  try {
    p.size = std::stoull(v.substr(0, colon));
  } catch (...) {
    return std::nullopt;
  }
  std::string rest = v.substr(colon + 1);
  if (rest.rfind("etag:", 0) == 0) {
    p.etag = rest.substr(5);
    p.ifRange = p.etag;
  } else if (rest.rfind("lm:", 0) == 0) {
    p.lastModified = rest.substr(3);
    p.ifRange = p.lastModified;
  }
  return p;
}

std::string makeVersion(uint64_t size, const std::string& etag, const std::string& lastModified) {
  // Weak ETags may not be used in If-Range; fall back to the date.
  if (!etag.empty() && etag.rfind("W/", 0) != 0) return fmt::format("{}:etag:{}", size, etag);
  if (!lastModified.empty()) return fmt::format("{}:lm:{}", size, lastModified);
  return fmt::format("{}:none", size);
}

}  // namespace

struct HttpRemote::Handle {
  CURL* easy = nullptr;
  ~Handle() {
    if (easy) curl_easy_cleanup(easy);
  }
};

struct HttpRemote::Response {
  long status = 0;
  std::string etag, lastModified, contentType, contentRange, effectiveUrl;
  std::optional<uint64_t> contentLength;
  std::string body;
};

namespace {

struct Capture {
  long status = 0;
  std::string etag, lastModified, contentType, contentRange;
  std::optional<uint64_t> contentLength;
};

size_t onHeader(char* data, size_t size, size_t n, void* user) {
  auto* c = static_cast<Capture*>(user);
  std::string_view line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {
    *c = Capture{};  // a new response (after a redirect or 100-continue)
    auto sp = line.find(' ');
    if (sp != std::string_view::npos) c->status = std::atol(std::string(line.substr(sp + 1, 3)).c_str());
    return size * n;
  }
  auto colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;
  std::string value = trim(line.substr(colon + 1));
  if (iequalsPrefix(line, "etag:")) c->etag = value;
  else if (iequalsPrefix(line, "last-modified:")) c->lastModified = value;
  else if (iequalsPrefix(line, "content-type:")) c->contentType = value;
  else if (iequalsPrefix(line, "content-range:")) c->contentRange = value;
  else if (iequalsPrefix(line, "content-length:")) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(value.c_str(), &end, 10);
    if (end && *end == '\0' && !value.empty()) c->contentLength = v;
  }
  return size * n;
}

struct BodyCapture {
  std::string* body;
  size_t max;
  bool tooLarge = false;
};

size_t onBody(char* data, size_t size, size_t n, void* user) {
  auto* b = static_cast<BodyCapture*>(user);
  if (b->body->size() + size * n > b->max) {
    b->tooLarge = true;
    return 0;
  }
  b->body->append(data, size * n);
  return size * n;
}

}  // namespace

Status HttpRemote::globalInit() {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    return Status::error(EIO, "curl_global_init failed");
  }
  return Status::ok();
}

HttpRemote::HttpRemote(std::string baseUrl, std::string displayUrl, HttpOptions options)
    : baseUrl_(std::move(baseUrl)),
      displayUrl_(std::move(displayUrl)),
      options_(std::move(options)),
      reach_(reachOf(baseUrl_, options_)) {}

namespace {

enum class AddrClass { kOther, kLoopback, kLinkLocal };

// Loopback: 127/8, 0/8, ::1, ::; link-local: 169.254/16, fe80::/10 (v4-mapped v6 as v4).
AddrClass classify(const std::string& ip) {
  unsigned char a[16];
  if (::inet_pton(AF_INET, ip.c_str(), a) == 1) {
    if (a[0] == 127 || a[0] == 0) return AddrClass::kLoopback;
    if (a[0] == 169 && a[1] == 254) return AddrClass::kLinkLocal;
    return AddrClass::kOther;
  }
  if (::inet_pton(AF_INET6, ip.c_str(), a) == 1) {
    static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(a, kMapped, 12) == 0) {
      return classify(fmt::format("{}.{}.{}.{}", a[12], a[13], a[14], a[15]));
    }
    static const unsigned char kZero[15] = {};
    if (std::memcmp(a, kZero, 15) == 0 && (a[15] == 1 || a[15] == 0)) return AddrClass::kLoopback;
    if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) return AddrClass::kLinkLocal;
    return AddrClass::kOther;
  }
  return AddrClass::kOther;
}

}  // namespace

HttpRemote::Reach HttpRemote::reachOf(const std::string& baseUrl, const HttpOptions& options) {
  Reach r;
  auto u = http::parseUrl(baseUrl);
  if (!u) return r;  // open() refuses such a URL anyway
  r.origin = u->origin();
  r.anyOrigin = options.redirectsAnywhere && options.user.empty() && !options.netrc &&
                options.headers.empty();
  // The host, without port and brackets, resolved once: a source on a loopback or
  // link-local address may be reached there (and only then).
  std::string host = u->authority;
  if (!host.empty() && host.front() == '[') {
    host = host.substr(1, host.find(']') - 1);
  } else if (auto colon = host.rfind(':'); colon != std::string::npos) {
    host = host.substr(0, colon);
  }
  struct addrinfo hints {};
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* res = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) == 0) {
    for (auto* a = res; a; a = a->ai_next) {
      char ip[INET6_ADDRSTRLEN] = {};
      const void* at = a->ai_family == AF_INET
                           ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr)
                           : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr);
      if (::inet_ntop(a->ai_family, at, ip, sizeof ip) == nullptr) continue;
      const AddrClass c = classify(ip);
      r.loopback |= c == AddrClass::kLoopback;
      r.linkLocal |= c == AddrClass::kLinkLocal;
    }
    ::freeaddrinfo(res);
  }
  return r;
}

std::string HttpRemote::Reach::refusal(const std::string& url, const std::string& ip) const {
  auto u = http::parseUrl(url);
  if (!u) return fmt::format("a redirect to '{}', which is no http(s) URL", url);
  if (u->origin() != origin && !anyOrigin) {
    return fmt::format("a redirect to another origin ({}) refused: only {} is followed{}",
                       u->origin(), origin,
                       anyOrigin ? "" : " (--redirects any follows others when no credential or header would go along)");
  }
  const AddrClass c = classify(ip);
  if (c == AddrClass::kLoopback && !loopback) {
    return fmt::format("'{}' resolves to a loopback address ({}): refused", u->origin(), ip);
  }
  if (c == AddrClass::kLinkLocal && !linkLocal) {
    return fmt::format("'{}' resolves to a link-local address ({}): refused", u->origin(), ip);
  }
  return std::string();
}

HttpRemote::~HttpRemote() = default;

Result<std::unique_ptr<HttpRemote>> HttpRemote::open(const std::string& url, HttpOptions options) {
  auto scheme = url.find("://");
  if (scheme == std::string::npos) return Status::error(EINVAL, fmt::format("'{}' is not a URL", url));
  std::string s = url.substr(0, scheme);
  if (s != "http" && s != "https") {
    return Status::error(EINVAL, fmt::format("'{}': only http:// and https:// are supported", s));
  }
  std::string rest = url.substr(scheme + 3);
  std::string base = url;
  std::string display = url;
  // user:password@ in the URL goes to the credentials, never into logs.
  auto slash = rest.find('/');
  auto at = rest.rfind('@', slash == std::string::npos ? std::string::npos : slash);
  if (at != std::string::npos) {
    if (options.user.empty()) {
      char* decoded = curl_easy_unescape(nullptr, rest.substr(0, at).c_str(), 0, nullptr);
      options.user = decoded ? decoded : "";
      curl_free(decoded);
    }
    base = s + "://" + rest.substr(at + 1);
    display = base;
  }
  if (base.find('?') != std::string::npos || base.find('#') != std::string::npos) {
    return Status::error(EINVAL, fmt::format("'{}': a source URL may not have a query or fragment", display));
  }
  if (base.back() != '/') base.push_back('/');
  if (display.back() != '/') display.push_back('/');
  return std::unique_ptr<HttpRemote>(new HttpRemote(base, display, std::move(options)));
}

std::string HttpRemote::urlFor(const std::string& path, bool isDir) const {
  std::string url = baseUrl_;
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    url += http::percentEncode(std::string_view(path).substr(start, slash - start));
    if (slash < path.size()) url.push_back('/');
    start = slash + 1;
  }
  if (isDir && !path.empty()) url.push_back('/');
  return url;
}

std::unique_ptr<HttpRemote::Handle> HttpRemote::borrow() {
  {
    std::lock_guard lock(poolMu_);
    if (!pool_.empty()) {
      auto h = std::move(pool_.back());
      pool_.pop_back();
      return h;
    }
  }
  auto h = std::make_unique<Handle>();
  h->easy = curl_easy_init();
  return h;
}

void HttpRemote::giveBack(std::unique_ptr<Handle> h) {
  std::lock_guard lock(poolMu_);
  if (pool_.size() < 64) pool_.push_back(std::move(h));
}

namespace {

// One transfer's check of each request it is about to send, the first and every redirect
// (curl's pre-request callback runs once connected, before anything is sent): the URL's
// origin and the address it reached must be within the source's reach.
struct TransferGuard {
  const HttpRemote::Reach* reach;
  CURL* easy;
  std::string refused;  // why the transfer was stopped, "" if it was not

  // EACCES naming the refusal, if the transfer was stopped by it, or by curl refusing a
  // redirect to a protocol not allowed (https down to http, file:...).
  std::optional<Status> verdict(CURLcode rc, const char* method, const std::string& url) const {
    if (rc == CURLE_UNSUPPORTED_PROTOCOL) {
      return Status::error(EACCES, fmt::format("{} {}: a redirect to a protocol not followed "
                                               "(never from https to http)", method, url));
    }
    if (rc != CURLE_ABORTED_BY_CALLBACK || refused.empty()) return std::nullopt;
    return Status::error(EACCES, fmt::format("{} {}: {}", method, url, refused));
  }
};

int onPrereq(void* p, char* primaryIp, char* /*localIp*/, int /*primaryPort*/, int /*localPort*/) {
  auto* g = static_cast<TransferGuard*>(p);
  char* url = nullptr;
  curl_easy_getinfo(g->easy, CURLINFO_EFFECTIVE_URL, &url);
  g->refused = g->reach->refusal(url ? url : "", primaryIp ? primaryIp : "");
  return g->refused.empty() ? CURL_PREREQFUNC_OK : CURL_PREREQFUNC_ABORT;
}

// Options every request shares. `headers` and `guard` must outlive the transfer.
void setCommon(CURL* e, const std::string& url, const HttpOptions& o, curl_slist* headers,
               TransferGuard* guard) {
  curl_easy_reset(e);
  curl_easy_setopt(e, CURLOPT_URL, url.c_str());
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  // Never from https down to http.
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, url.starts_with("https:") ? "https" : "http,https");
  curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, onPrereq);
  curl_easy_setopt(e, CURLOPT_PREREQDATA, guard);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, static_cast<long>(o.connectTimeout.count()));
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, static_cast<long>(std::max<uint64_t>(1, o.minSpeed)));
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, static_cast<long>(o.stallTimeout.count()));
  if (o.requestTimeout.count() > 0) {
    curl_easy_setopt(e, CURLOPT_TIMEOUT, static_cast<long>(o.requestTimeout.count()));
  }
  curl_easy_setopt(e, CURLOPT_USERAGENT, "fanhsm/0.1");
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
  if (o.insecure) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (!o.user.empty()) {
    curl_easy_setopt(e, CURLOPT_USERPWD, o.user.c_str());
    curl_easy_setopt(e, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
  }
  if (o.netrc) curl_easy_setopt(e, CURLOPT_NETRC, CURL_NETRC_OPTIONAL);
  if (headers) curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
}

curl_slist* buildHeaders(const HttpOptions& o, const std::vector<std::string>& extra) {
  curl_slist* list = nullptr;
  for (const auto& h : o.headers) list = curl_slist_append(list, h.c_str());
  for (const auto& h : extra) list = curl_slist_append(list, h.c_str());
  return list;
}

struct SlistOwner {
  curl_slist* list;
  ~SlistOwner() { curl_slist_free_all(list); }
};

bool retryableCurl(CURLcode c) {
  switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_COULDNT_RESOLVE_HOST:
      return true;
    default:
      return false;
  }
}

int errnoForStatus(long status) {
  if (status == 404 || status == 410) return ENOENT;
  if (status == 401 || status == 403) return EACCES;
  if (status == 416) return ESTALE;
  return EIO;
}

void backoff(int attempt) {
  std::this_thread::sleep_for(std::chrono::milliseconds(100 << std::min(attempt, 5)));
}

}  // namespace

Result<HttpRemote::Response> HttpRemote::perform(const char* method, const std::string& url,
                                                 size_t maxBody,
                                                 const std::vector<std::string>& extraHeaders) {
  const bool head = std::strcmp(method, "HEAD") == 0;
  Status last;
  for (int attempt = 0; attempt <= options_.retries; ++attempt) {
    if (attempt > 0) backoff(attempt - 1);
    auto h = borrow();
    SlistOwner headers{buildHeaders(options_, extraHeaders)};
    TransferGuard guard{&reach_, h->easy, {}};
    setCommon(h->easy, url, options_, headers.list, &guard);
    Capture cap;
    Response r;
    BodyCapture body{&r.body, maxBody};
    curl_easy_setopt(h->easy, CURLOPT_HEADERFUNCTION, onHeader);
    curl_easy_setopt(h->easy, CURLOPT_HEADERDATA, &cap);
    if (head) {
      curl_easy_setopt(h->easy, CURLOPT_NOBODY, 1L);
    } else {
      curl_easy_setopt(h->easy, CURLOPT_ACCEPT_ENCODING, "");  // listings may come compressed
      curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, onBody);
      curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, &body);
    }
    CURLcode rc = curl_easy_perform(h->easy);
    char* eff = nullptr;
    curl_easy_getinfo(h->easy, CURLINFO_EFFECTIVE_URL, &eff);
    r.effectiveUrl = eff ? eff : url;
    giveBack(std::move(h));
    if (auto refused = guard.verdict(rc, method, url)) return *refused;
    if (body.tooLarge) {
      return Status::error(EFBIG, fmt::format("{} {}: larger than {} bytes (--max-listing-size)", method, url, maxBody));
    }
    if (rc != CURLE_OK) {
      last = Status::error(EIO, fmt::format("{} {}: {}", method, url, curl_easy_strerror(rc)));
      if (retryableCurl(rc)) continue;
      return last;
    }
    if (cap.status >= 500) {
      last = Status::error(EIO, fmt::format("{} {}: HTTP {}", method, url, cap.status));
      continue;
    }
    r.status = cap.status;
    r.etag = cap.etag;
    r.lastModified = cap.lastModified;
    r.contentType = cap.contentType;
    r.contentLength = cap.contentLength;
    return r;
  }
  return last;
}

Result<uint64_t> HttpRemote::probeSize(const std::string& url) {
  auto h = borrow();
  SlistOwner headers{buildHeaders(options_, {"Range: bytes=0-0"})};
  TransferGuard guard{&reach_, h->easy, {}};
  setCommon(h->easy, url, options_, headers.list, &guard);
  Capture cap;
  std::string body;
  BodyCapture bc{&body, 1 << 20};
  curl_easy_setopt(h->easy, CURLOPT_HEADERFUNCTION, onHeader);
  curl_easy_setopt(h->easy, CURLOPT_HEADERDATA, &cap);
  curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, onBody);
  curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, &bc);
  CURLcode rc = curl_easy_perform(h->easy);
  giveBack(std::move(h));
  if (auto refused = guard.verdict(rc, "GET", url)) return *refused;
  if (rc != CURLE_OK) return Status::error(EIO, fmt::format("GET {}: {}", url, curl_easy_strerror(rc)));
  auto slash = cap.contentRange.rfind('/');
  if ((cap.status == 206 || cap.status == 416) && slash != std::string::npos) {
    char* end = nullptr;
    unsigned long long total = std::strtoull(cap.contentRange.c_str() + slash + 1, &end, 10);
    if (end && *end == '\0') return static_cast<uint64_t>(total);
  }
  if (cap.status == 200 && !bc.tooLarge) return cap.contentLength.value_or(body.size());
  return Status::error(EIO, fmt::format("GET {}: no size (HTTP {})", url, cap.status));
}

Result<Entry> HttpRemote::rootEntry() {
  auto r = perform("GET", baseUrl_, static_cast<size_t>(options_.maxListingBytes), {});
  if (!r) return r.status();
  if (r->status != 200) {
    return Status::error(errnoForStatus(r->status),
                         fmt::format("GET {}: HTTP {}", displayUrl_, r->status));
  }
  Entry e;
  e.type = EntryType::kDir;
  e.mode = 0555;
  if (!r->lastModified.empty()) {
    time_t t = curl_getdate(r->lastModified.c_str(), nullptr);
    if (t > 0) e.mtimeNs = int64_t{t} * 1000000000;
  }
  return e;
}

Result<Listing> HttpRemote::list(const std::string& dir, const std::string& validator) {
  std::string url = urlFor(dir, true);
  std::vector<std::string> conditional;
  if (validator.rfind("etag:", 0) == 0) conditional.push_back("If-None-Match: " + validator.substr(5));
  if (validator.rfind("lm:", 0) == 0) conditional.push_back("If-Modified-Since: " + validator.substr(3));
  auto r = perform("GET", url, static_cast<size_t>(options_.maxListingBytes), conditional);
  if (!r) return r.status();
  if (r->status == 304 && !conditional.empty()) {
    Listing same;
    same.notModified = true;
    same.validator = validator;
    return same;
  }
  if (r->status != 200) {
    return Status::error(errnoForStatus(r->status), fmt::format("GET {}: HTTP {}", url, r->status));
  }
  // Links resolve against the URL the listing came from (after redirects).
  std::string base = r->effectiveUrl;
  if (base.empty() || base.back() != '/') base = url;
  auto parsed = http::parseListing(base, r->contentType, r->body);
  Listing out;
  if (!r->etag.empty()) {
    out.validator = "etag:" + r->etag;
  } else if (!r->lastModified.empty()) {
    out.validator = "lm:" + r->lastModified;
  }
  for (auto& reason : parsed.rejected) out.skipped.push_back(std::move(reason));
  // Only nginx's JSON listing gives exact sizes and second-precision times for every file;
  // everything else is completed with HEAD requests (in parallel).
  bool exact = parsed.detected == http::ListingFormat::kNginxJson;
  // Times the listing does not give are the time of listing (not 1970).
  const int64_t nowNs = int64_t{std::time(nullptr)} * 1000000000;
  for (auto& le : parsed.entries) {
    Entry e;
    e.name = le.name;
    e.type = le.isDir ? EntryType::kDir : EntryType::kFile;
    e.mode = le.isDir ? 0555 : 0444;
    e.mtimeNs = le.mtimeSec ? *le.mtimeSec * 1000000000 : nowNs;
    if (!le.isDir) {
      e.size = le.size.value_or(0);
      if (exact && le.size && le.mtimeSec) {
        e.version = makeVersion(*le.size, "", httpDate(*le.mtimeSec));
      }
    }
    out.entries.push_back(std::move(e));
  }
  HSM_RETURN_IF_ERROR(fetchEntryAttrs(dir, out.entries, &out.skipped));
  // Entries whose HEAD said "gone" are dropped (version left empty), and those left out.
  std::vector<Entry> kept;
  kept.reserve(out.entries.size());
  for (auto& e : out.entries) {
    if (e.name.empty()) continue;
    if (e.type == EntryType::kFile && e.version.empty()) {
      out.skipped.push_back(fmt::format("{}: listed but not found by HEAD", e.name));
      continue;
    }
    kept.push_back(std::move(e));
  }
  out.entries = std::move(kept);
  std::sort(out.entries.begin(), out.entries.end(),
            [](const Entry& a, const Entry& b) { return a.name < b.name; });
  return out;
}

Status HttpRemote::fetchEntryAttrs(const std::string& dirPath, std::vector<Entry>& entries,
                                   std::vector<std::string>* skippedOut) {
  std::map<size_t, std::string> skipped;  // entry index -> why it is left out
  std::vector<size_t> todo;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].type == EntryType::kFile && entries[i].version.empty()) todo.push_back(i);
  }
  if (todo.empty()) return Status::ok();
  std::atomic<size_t> next{0};
  std::mutex errMu;
  Status firstError;
  auto worker = [&] {
    while (true) {
      size_t k = next++;
      if (k >= todo.size()) return;
      Entry& e = entries[todo[k]];
      std::string url = urlFor(joinPath(dirPath, e.name), false);
      auto r = perform("HEAD", url, 0, {});
      if (r && (r->status == 404 || r->status == 410)) continue;  // vanished: left out
      if (r && r->status == 200 && !r->contentLength) {
        // Some servers (Apache for empty files) answer HEAD without a length.
        auto size = probeSize(url);
        if (size) r->contentLength = *size;
      }
      // What this one entry's answer says of it alone (refused access, a refused
      // redirect, no or an implausible size) leaves it out, with its reason; the rest of the
      // directory is listed. A failure that may pass (a 5xx after retries, the network)
      // fails the listing, so a revalidation keeps what it had instead of dropping names.
      std::string reason;
      if (!r && r.status().code() != EIO) {
        reason = r.status().message();
      } else if (r && r->status >= 400 && r->status < 500) {
        reason = fmt::format("HEAD: HTTP {}", r->status);
      } else if (r && r->status == 200 && !r->contentLength) {
        reason = "HEAD: no Content-Length";
      } else if (r && r->status == 200 && *r->contentLength > kMaxFileSize) {
        reason = fmt::format("HEAD: implausible Content-Length {}", *r->contentLength);
      }
      if (!reason.empty()) {
        std::lock_guard lock(errMu);
        skipped[todo[k]] = reason;
        continue;
      }
      if (!r || r->status != 200) {
        std::lock_guard lock(errMu);
        if (firstError) {
          firstError = !r ? r.status()
                          : Status::error(EIO, fmt::format("HEAD {}: HTTP {}", url, r->status));
        }
        continue;
      }
      e.size = *r->contentLength;
      if (!r->lastModified.empty()) {
        time_t t = curl_getdate(r->lastModified.c_str(), nullptr);
        if (t > 0) e.mtimeNs = int64_t{t} * 1000000000;
      }
      e.version = makeVersion(e.size, r->etag, r->lastModified);
    }
  };
  size_t n = std::min(options_.parallel == 0 ? size_t{1} : options_.parallel, todo.size());
  std::vector<std::thread> threads;
  for (size_t i = 1; i < n; ++i) threads.emplace_back(worker);
  worker();
  for (auto& t : threads) t.join();
  HSM_RETURN_IF_ERROR(firstError);
  // Left out: their version stays empty, and the reason is reported once per listing.
  for (const auto& [i, why] : skipped) {
    entries[i].version.clear();
    skippedOut->push_back(fmt::format("{}: {}", entries[i].name, why));
    entries[i].name.clear();  // marks it for removal (a listed name is never empty)
  }
  return Status::ok();
}

namespace {

// Streams one ranged response into the sink, checking that it is the range and version
// asked for before the first byte is delivered.
struct RangeTransfer {
  ByteSink* sink;
  const ParsedVersion* version;
  uint64_t start;      // first byte asked for
  uint64_t end;        // one past the last byte wanted
  uint64_t next;       // next byte to deliver
  uint64_t skip = 0;   // bytes of a 200 body to drop before `start`
  uint64_t bodyPos = 0;
  bool checked = false;
  Status verdict;      // why the transfer was stopped
  Capture cap;
};

// Reads longer than this (whole files from a server without ranges) get a deadline that
// grows with their size; the Hydrator's own fetches are at most a few MiB.
constexpr uint64_t kLongStream = 64ull << 20;

// The caller gave up (ByteSink::cancelled): curl calls this about once a second even when
// nothing arrives, so a cancelled read ends within a second whatever the server does.
int onRangeProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<RangeTransfer*>(user)->sink->cancelled() ? 1 : 0;
}

size_t onRangeBody(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<RangeTransfer*>(user);
  size_t len = size * n;
  if (!t->checked) {
    t->checked = true;
    long st = t->cap.status;
    if (st == 206) {
      unsigned long long a = 0, b = 0, total = 0;
      if (std::sscanf(t->cap.contentRange.c_str(), "bytes %llu-%llu/%llu", &a, &b, &total) != 3 ||
          a != t->start) {
        t->verdict = Status::error(EIO, fmt::format("wrong Content-Range '{}' for a range from {}",
                                                    t->cap.contentRange, t->start));
        return 0;
      }
      if (total != t->version->size) {
        t->verdict = Status::error(ESTALE, fmt::format("remote size is now {} (was {})", total,
                                                       t->version->size));
        return 0;
      }
    } else if (st == 200) {
      // Either the server ignores ranges, or If-Range found a new version.
      bool changed = (!t->version->etag.empty() && t->cap.etag != t->version->etag) ||
                     (!t->version->lastModified.empty() &&
                      t->cap.lastModified != t->version->lastModified) ||
                     (t->cap.contentLength && *t->cap.contentLength != t->version->size);
      if (changed) {
        t->verdict = Status::error(ESTALE, "the remote file changed since it was listed");
        return 0;
      }
      t->skip = t->start;  // no range support: the whole body streams, drop what comes first
    } else {
      t->verdict = Status::error(errnoForStatus(st), fmt::format("HTTP {}", st));
      return 0;
    }
  }
  const char* p = data;
  size_t left = len;
  if (t->bodyPos < t->skip) {
    uint64_t drop = std::min<uint64_t>(left, t->skip - t->bodyPos);
    t->bodyPos += drop;
    p += drop;
    left -= static_cast<size_t>(drop);
  }
  if (left > 0) {
    uint64_t want = t->end - t->next;
    size_t give = static_cast<size_t>(std::min<uint64_t>(want, left));
    if (give > 0) {
      Status s = t->sink->write(t->next, p, give);
      if (!s) {
        t->verdict = s;
        return 0;
      }
      t->next += give;
    }
    t->bodyPos += left;
    if (t->next == t->end) return give == left ? len : 0;  // done: stop a longer body
  }
  return len;
}

}  // namespace

Status HttpRemote::read(const std::string& path, const ObjectVersion& version, uint64_t offset,
                        uint64_t length, ByteSink& sink) {
  auto pv = parseVersion(version);
  if (!pv) return Status::error(EIO, fmt::format("'{}': unknown version '{}'", path, version));
  if (offset >= pv->size || length == 0) return Status::ok();
  const uint64_t end = std::min(pv->size, offset + std::min(length, pv->size - offset));
  const std::string url = urlFor(path, false);
  uint64_t next = offset;
  Status last;
  for (int attempt = 0; attempt <= options_.retries && next < end; ++attempt) {
    if (attempt > 0) backoff(attempt - 1);
    std::vector<std::string> extra = {fmt::format("Range: bytes={}-{}", next, end - 1)};
    if (!pv->ifRange.empty()) extra.push_back("If-Range: " + pv->ifRange);
    SlistOwner headers{buildHeaders(options_, extra)};
    auto h = borrow();
    TransferGuard guard{&reach_, h->easy, {}};
    setCommon(h->easy, url, options_, headers.list, &guard);
    RangeTransfer t{&sink, &*pv, next, end, next};
    curl_easy_setopt(h->easy, CURLOPT_HEADERFUNCTION, onHeader);
    curl_easy_setopt(h->easy, CURLOPT_HEADERDATA, &t.cap);
    curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, onRangeBody);
    curl_easy_setopt(h->easy, CURLOPT_BUFFERSIZE, 512L * 1024);  // fewer, larger cache writes
    curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(h->easy, CURLOPT_XFERINFOFUNCTION, onRangeProgress);
    curl_easy_setopt(h->easy, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(h->easy, CURLOPT_NOPROGRESS, 0L);
    if (options_.requestTimeout.count() > 0 && end - next > kLongStream) {
      // A long stream (a server without range support streams whole files): the
      // deadline grows with its size.
      const uint64_t slack = (end - next) / std::max<uint64_t>(1, options_.minSpeed);
      curl_easy_setopt(h->easy, CURLOPT_TIMEOUT,
                       static_cast<long>(std::min<uint64_t>(options_.requestTimeout.count() + slack,
                                                            LONG_MAX / 2)));
    }
    CURLcode rc = curl_easy_perform(h->easy);
    giveBack(std::move(h));
    if (sink.cancelled()) return Status::error(ECANCELED, fmt::format("GET {}: cancelled", url));
    if (auto refused = guard.verdict(rc, "GET", url)) return *refused;
    next = t.next;
    bool wholeFileAsked = t.start == 0 && end == pv->size;
    if (t.checked && t.cap.status == 200 && !wholeFileAsked && !noRanges_.exchange(true)) {
      log::info("{} answers range requests with the whole file: reading files in one stream",
                displayUrl_);
    }
    if (next == end) return Status::ok();  // all bytes delivered (a longer body was cut)
    if (!t.verdict.isOk()) {
      last = t.verdict.withContext(fmt::format("GET {}", url));
      // ESTALE, ENOENT, EACCES, a full cache disk: permanent. A server error or a wrong
      // Content-Range: retried.
      bool retry = t.verdict.code() == EIO &&
                   (t.cap.status >= 500 || t.cap.status == 206 || t.cap.status == 200);
      if (!retry) return last;
      continue;
    }
    if (rc == CURLE_OK && t.checked) {
      last = Status::error(EIO, fmt::format("GET {}: body ended at {} of {} bytes", url, next, end));
      continue;  // truncated body: resume
    }
    if (rc == CURLE_OK && !t.checked) {
      long st = t.cap.status;
      last = Status::error(st >= 400 ? errnoForStatus(st) : EIO,
                           fmt::format("GET {}: HTTP {} with no body", url, st));
      if (st >= 400 && st < 500) return last;
      continue;
    }
    last = Status::error(EIO, fmt::format("GET {}: {}", url, curl_easy_strerror(rc)));
    if (!retryableCurl(rc)) return last;
  }
  if (next == end) return Status::ok();
  return last.isOk() ? Status::error(EIO, fmt::format("GET {}: incomplete", url)) : last;
}

}  // namespace hsm::remote
