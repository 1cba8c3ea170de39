// FuseRequest: one FUSE request that must be answered exactly once.
//
// Contract: move-only. Each reply method answers the kernel and returns true if the
// kernel took the reply; false means the request was interrupted or the connection is
// gone, and the caller must undo what the reply would have handed over (a lookup count,
// an open file). A request nothing answered is answered EIO by the destructor, so an
// early return or an exception can never leave a caller blocked. Not thread-safe; one
// owner at a time. forget requests take no reply and are not FuseRequests.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <utility>

#include "frontend/fuse/fuse_defs.h"

namespace hsm::frontend {

class FuseRequest {
 public:
  FuseRequest(fuse_req_t req, std::atomic<uint64_t>* denied, std::atomic<uint64_t>* pending)
      : req_(req), denied_(denied), pending_(pending) {
    if (pending_) (*pending_)++;
  }
  FuseRequest(FuseRequest&& o) noexcept
      : req_(std::exchange(o.req_, nullptr)),
        denied_(o.denied_),
        pending_(std::exchange(o.pending_, nullptr)) {}
  FuseRequest& operator=(FuseRequest&&) = delete;
  FuseRequest(const FuseRequest&) = delete;
  FuseRequest& operator=(const FuseRequest&) = delete;
  ~FuseRequest() {
    if (req_ != nullptr) err(EIO);
  }

  fuse_req_t get() const { return req_; }
  bool answered() const { return req_ == nullptr; }

  // `e` 0 answers success (release, flush...); otherwise a positive errno.
  bool err(int e) {
    if (e != 0 && denied_) (*denied_)++;
    return done(fuse_reply_err(take(), e));
  }
  bool entry(const fuse_entry_param& e) { return done(fuse_reply_entry(take(), &e)); }
  bool attr(const struct stat& st, double timeout) {
    return done(fuse_reply_attr(take(), &st, timeout));
  }
  bool open(const fuse_file_info& fi) { return done(fuse_reply_open(take(), &fi)); }
  bool buf(const char* data, size_t size) { return done(fuse_reply_buf(take(), data, size)); }
  bool readlink(const char* target) { return done(fuse_reply_readlink(take(), target)); }
  bool statfs(const struct statvfs& sv) { return done(fuse_reply_statfs(take(), &sv)); }
  bool xattrSize(size_t size) { return done(fuse_reply_xattr(take(), size)); }

 private:
  fuse_req_t take() {
    if (req_ == nullptr) std::abort();  // answered twice: a broken invariant
    if (pending_) (*pending_)--;
    pending_ = nullptr;
    return std::exchange(req_, nullptr);
  }
  static bool done(int rc) { return rc == 0; }

  fuse_req_t req_;
  std::atomic<uint64_t>* denied_;
  std::atomic<uint64_t>* pending_;
};

}  // namespace hsm::frontend
