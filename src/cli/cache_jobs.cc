#include "cli/cache_jobs.h"

#include <poll.h>

#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "cli/control.h"
#include "util/log.h"
#include "util/rel_path.h"

namespace hsm::cli {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kPiece = 16 << 20;  // fetch granularity between cancellation checks
constexpr size_t kReleaseBatch = 64;
constexpr size_t kMaxErrors = 5;

nlohmann::json errorAnswer(const Status& s) {
  return {{"ok", false}, {"error", s.message()}, {"errno", s.code()}};
}

class Job {
 public:
  Job(const JobContext& ctx, int conn, const nlohmann::json& req)
      : ctx_(ctx), conn_(conn), op_(req.value("op", "")), recursive_(req.value("recursive", false)) {
    if (req.contains("paths") && req["paths"].is_array()) {
      for (const auto& p : req["paths"]) {
        if (p.is_string()) paths_.push_back(p.get<std::string>());
      }
    }
  }

  void run() {
    auto answer = runOp();
    Status w = writeResponse(conn_, answer.isOk() ? *answer : errorAnswer(answer.status()));
    if (!w) log::info("{}: the client left before the answer", op_);
  }

 private:
  Result<nlohmann::json> runOp() {
    if (paths_.empty()) return Status::error(EINVAL, "no paths given");
    std::vector<cache::FileRef> files;
    HSM_RETURN_IF_ERROR(collect(&files));
    if (cancelled()) return cancelledAnswer();
    if (op_ == "unpin" || op_ == "pin") {
      uint64_t changed = 0;
      for (const auto& p : paths_) {
        auto n = ctx_.cache.setPinned(p, op_ == "pin");
        if (!n) return n.status();
        changed += *n;
      }
      if (op_ == "unpin") return nlohmann::json{{"ok", true}, {"files", files.size()}, {"changed", changed}};
    }
    if (op_ == "release") return release(files);
    return fetch(files);
  }

  // Resolves the paths to the files they cover, listing unlisted directories first.
  Status collect(std::vector<cache::FileRef>* files) {
    for (const auto& p : paths_) {
      if (!validateRelPath(p)) return Status::error(EINVAL, fmt::format("bad path '{}'", p));
      auto row = ctx_.cache.entry(p);
      if (!row) return row.status();
      if (!row->has_value()) {
        return Status::error(ENOENT, fmt::format("'{}' is not in the mirrored tree (not listed yet?)",
                                                 displayPath(p)));
      }
      const auto type = (*row)->type;
      if (type == EntryType::kSymlink) continue;  // nothing to fetch; never followed
      if (type == EntryType::kDir) {
        if (!recursive_) {
          return Status::error(EISDIR, fmt::format("'{}' is a directory (use -r)", displayPath(p)));
        }
        HSM_RETURN_IF_ERROR(listSubtree(p));
      }
      auto under = ctx_.cache.filesUnder(p);
      if (!under) return under.status();
      files->insert(files->end(), under->begin(), under->end());
    }
    return Status::ok();
  }

  Status listSubtree(const std::string& dir) {
    std::set<std::string> failed;
    auto last = Clock::now();
    // Bounded: every round lists at least one directory or ends.
    for (int round = 0; round < 1000000 && !cancelled(); ++round) {
      auto dirs = ctx_.cache.unlistedDirsUnder(dir, failed.size() + 64);
      if (!dirs) return dirs.status();
      size_t fresh = 0;
      for (const auto& d : *dirs) {
        if (failed.contains(d)) continue;
        ++fresh;
        Status s = ctx_.populator.ensureListed(d, false);
        if (!s) {
          failed.insert(d);
          noteError(fmt::format("listing '{}': {}", displayPath(d), s.message()));
        }
        listed_++;
        if (Clock::now() - last > std::chrono::milliseconds(250)) {
          last = Clock::now();
          progress({{"phase", "listing"}, {"dirs_listed", listed_}});
        }
      }
      if (fresh == 0) break;
    }
    return Status::ok();
  }

  Result<nlohmann::json> fetch(const std::vector<cache::FileRef>& files) {
    uint64_t bytesTotal = 0;
    for (const auto& f : files) bytesTotal += f.size;
    const auto start = Clock::now();
    const uint64_t fetchedBefore = ctx_.hydrator.stats().fetchedBytes;
    std::atomic<size_t> next{0}, filesDone{0};
    std::atomic<uint64_t> bytesDone{0};
    auto worker = [&] {
      while (!cancelled()) {
        size_t i = next++;
        if (i >= files.size()) return;
        const auto& f = files[i];
        uint64_t off = 0;
        bool ok = true;
        do {  // an empty file is made present (recorded full) too
          auto r = ctx_.hydrator.ensure(f.path, off, std::max<uint64_t>(1, std::min(kPiece, f.size - off)));
          if (!r) {
            noteError(fmt::format("'{}': {}", displayPath(f.path), r.status().message()));
            ok = false;
            break;
          }
          uint64_t step = std::min(kPiece, f.size - off);
          off += step;
          bytesDone += step;
        } while (off < f.size && !cancelled());
        if (ok && off >= f.size) filesDone++;
      }
    };
    std::vector<std::thread> threads;
    for (size_t t = 0; t < std::max<size_t>(1, ctx_.parallel); ++t) threads.emplace_back(worker);
    // Progress until the workers are done (they end on their own when cancelled).
    while (filesDone + failedFiles() < files.size() && !cancelled()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      progress({{"phase", "fetching"},
                {"files_done", filesDone.load()},
                {"files_total", files.size()},
                {"bytes_done", bytesDone.load()},
                {"bytes_total", bytesTotal},
                {"bytes_fetched", ctx_.hydrator.stats().fetchedBytes - fetchedBefore},
                {"seconds", seconds(start)}});
    }
    for (auto& t : threads) t.join();
    if (cancelled()) return cancelledAnswer();
    return nlohmann::json{{"ok", true},
                          {"files", filesDone.load()},
                          {"files_total", files.size()},
                          {"bytes_total", bytesTotal},
                          {"bytes_fetched", ctx_.hydrator.stats().fetchedBytes - fetchedBefore},
                          {"seconds", seconds(start)},
                          {"failed", failedFiles()},
                          {"errors", errors()}};
  }

  Result<nlohmann::json> release(const std::vector<cache::FileRef>& files) {
    // A release is most needed on a full cache filesystem, where the index may have no
    // room for its own records: they use the index reserve (as the evictor's passes do),
    // taken back afterwards if there is room by then.
    struct Reserve {
      cache::CacheStore& cache;
      ~Reserve() {
        if (Status s = cache.takeReserve(); !s) log::warn("release: {}", s.message());
      }
    } reserve{ctx_.cache};
    ctx_.cache.dropReserve();
    // Chunks written but not yet recorded make a file busy: record them first.
    HSM_RETURN_IF_ERROR(ctx_.hydrator.flush());
    core::Hydrator::ReleaseResult total;
    uint64_t pinned = 0;
    std::vector<core::Hydrator::ReleaseRequest> batch;
    auto flush = [&]() -> Status {
      if (batch.empty()) return Status::ok();
      auto r = ctx_.hydrator.release(batch, [this](int fd) { return ctx_.frontend.beforeRelease(fd); });
      batch.clear();
      if (!r) return r.status();
      total += *r;
      return Status::ok();
    };
    for (const auto& f : files) {
      if (cancelled()) return cancelledAnswer();
      // The Hydrator knows content the index has not recorded yet (a file completed a
      // moment ago): ask it, not the row.
      auto info = ctx_.hydrator.info(f.path);
      if ((info ? info->bytesPresent : f.bytesPresent) == 0) continue;
      if (f.pinned) {
        pinned++;
        continue;
      }
      batch.push_back({f.path, f.version});  // release() checks it against the row again
      if (batch.size() == kReleaseBatch) HSM_RETURN_IF_ERROR(flush());
    }
    HSM_RETURN_IF_ERROR(flush());
    return nlohmann::json{{"ok", true},         {"files", files.size()},   {"released", total.files},
                          {"bytes_released", total.bytes}, {"busy", total.busy},
                          {"pinned", pinned},   {"changed", total.gone},   {"failed", total.failed}};
  }

  void progress(const nlohmann::json& p) {
    if (!writeResponse(conn_, {{"progress", p}})) clientGone_ = true;
  }

  // The client closed the connection (Ctrl-C) or the daemon is stopping.
  bool cancelled() {
    if (ctx_.stopping || clientGone_) return true;
    struct pollfd p = {conn_, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) clientGone_ = true;
    return clientGone_;
  }

  nlohmann::json cancelledAnswer() {
    return errorAnswer(Status::error(ECANCELED, "cancelled; what was fetched stays in the cache"));
  }

  void noteError(const std::string& e) {
    std::lock_guard lock(errorsMu_);
    failed_++;
    if (errors_.size() < kMaxErrors) errors_.push_back(e);
    log::warn("{}: {}", op_, e);
  }
  size_t failedFiles() {
    std::lock_guard lock(errorsMu_);
    return failed_;
  }
  nlohmann::json errors() {
    std::lock_guard lock(errorsMu_);
    return errors_;
  }
  static double seconds(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
  }

  const JobContext& ctx_;
  const int conn_;
  const std::string op_;
  const bool recursive_;
  std::vector<std::string> paths_;
  std::atomic<bool> clientGone_{false};
  uint64_t listed_ = 0;
  std::mutex errorsMu_;  // rank 95 (leaf): failed_, errors_
  size_t failed_ = 0;
  std::vector<std::string> errors_;
};

}  // namespace

bool isCacheJob(const std::string& op) {
  return op == "fetch" || op == "release" || op == "pin" || op == "unpin";
}

void runCacheJob(const JobContext& ctx, int conn, const nlohmann::json& request) {
  try {
    Job(ctx, conn, request).run();
  } catch (const std::exception& e) {
    log::error("{}: unexpected error: {}", request.value("op", "?"), e.what());
    (void)writeResponse(conn, errorAnswer(Status::error(EIO, e.what())));
  }
}

}  // namespace hsm::cli
