#include "cli/fetch_worker_main.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/hydrator.h"
#include "remote/http/http_remote.h"
#include "remote/localdir/localdir_remote.h"
#include "remote/worker/worker_remote.h"
#include "util/log.h"

namespace hsm::cli {

uint32_t workerUid() { return kWorkerUidBase + static_cast<uint32_t>(::getpid()); }

nlohmann::json workerConfig(const MountConfig& c) {
  return {{"source", c.source},   {"insecure", c.insecure}, {"user", c.user},
          {"netrc", c.netrc},     {"headers", c.headers},   {"timeout", c.timeoutSeconds},
          {"retries", c.retries}, {"redirects_anywhere", c.redirectsAnywhere},
          {"min_speed", c.minSpeed}, {"request_timeout", c.requestTimeoutSeconds},
          {"max_listing_bytes", c.maxListingBytes},
          // Fetches, listings (crawl and directory opens, each with its HEADs), and room
          // for calls the daemon gave up on that have not noticed yet.
          {"max_calls", core::HydratorConfig::fetchesAtMost(c.connections, c.maxConnections) +
                            c.crawlParallel + c.workers + 64},
          {"watchdog_seconds", c.workerWatchdogSeconds}, {"uid", workerUid()}};
}

Result<std::unique_ptr<remote::Remote>> openSourceRemote(const nlohmann::json& config) {
  const std::string source = config.value("source", "");
  if (!isUrl(source)) {
    auto r = remote::LocalDirRemote::open(source);
    if (!r) return r.status();
    return std::unique_ptr<remote::Remote>(std::move(*r));
  }
  remote::HttpOptions o;
  o.insecure = config.value("insecure", false);
  o.user = config.value("user", "");
  o.netrc = config.value("netrc", false);
  o.headers = config.value("headers", std::vector<std::string>{});
  o.stallTimeout = std::chrono::seconds(config.value("timeout", 20));
  o.retries = config.value("retries", 3);
  o.minSpeed = config.value("min_speed", uint64_t{1024});
  o.maxListingBytes = config.value("max_listing_bytes", uint64_t{64} << 20);
  o.requestTimeout = std::chrono::seconds(config.value("request_timeout", 300));
  o.redirectsAnywhere = config.value("redirects_anywhere", false);
  auto r = remote::HttpRemote::open(source, o);
  if (!r) return r.status();
  return std::unique_ptr<remote::Remote>(std::move(*r));
}

Status dropWorkerPrivileges(const nlohmann::json& config) {
  if (::geteuid() != 0) return Status::ok();
  constexpr uid_t kNobody = 65534;
  const bool keepRead = !isUrl(config.value("source", "")) || config.value("netrc", false);
  if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return Status::fromErrno(errno, "worker: PR_SET_KEEPCAPS");
  if (::setgroups(0, nullptr) != 0) return Status::fromErrno(errno, "worker: setgroups");
  // An identity of its own (no other process has it, so no unprivileged process can signal
  // or trace it); an old daemon's configuration without one: nobody.
  const auto id = static_cast<uid_t>(config.value("uid", uint32_t{kNobody}));
  if (::setresgid(id, id, id) != 0) return Status::fromErrno(errno, "worker: setresgid");
  if (::setresuid(id, id, id) != 0) return Status::fromErrno(errno, "worker: setresuid");
  struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2] = {};
  if (keepRead) {
    data[0].effective = data[0].permitted = 1u << CAP_DAC_READ_SEARCH;
  }
  if (::syscall(SYS_capset, &hdr, data) != 0) return Status::fromErrno(errno, "worker: capset");
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Status::fromErrno(errno, "worker: no_new_privs");
  return Status::ok();
}

int runWorkerProcess() {
  if (Status s = remote::HttpRemote::globalInit(); !s) {
    log::error("fetch worker: {}", s.message());
    return 1;
  }
  return remote::runFetchWorker(3, openSourceRemote, dropWorkerPrivileges);
}

}  // namespace hsm::cli
