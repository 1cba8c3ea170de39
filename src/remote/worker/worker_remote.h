// WorkerRemote: a Remote whose work runs in a separate fetch-worker process, so that the
// process holding the fanotify groups does no network I/O and no parsing of untrusted
// data, and outlives a crash of the part that does.
//
// Design note
// - The daemon execs `/proc/self/exe __worker` with one end of a SOCK_SEQPACKET socketpair
//   on fd 3 (the control channel) and nothing else inherited (every other descriptor of
//   the daemon is close-on-exec, and close_range() runs before exec anyway). The first
//   message is the worker's configuration (JSON, credentials included: they never appear
//   in argv or the environment). The worker opens the real Remote, drops privileges
//   (WorkerOptions::dropPrivileges) and answers a hello with describe(), rootEntry() and
//   supportsRanges(). A source that does not answer then still gets a hello ("offline":
//   its error): rootEntry() returns that error, and every call tries the source again (the
//   daemon decides whether its cache can serve meanwhile: NamespacePopulator::start).
// - Each call (list, read) gets a fresh SOCK_STREAM socketpair; one end travels to the
//   worker with the request (SCM_RIGHTS), the caller reads the answer from the other in
//   frames: [type u8][length u32 little-endian][payload]. 'D' content bytes (consecutive),
//   'L' a listing (JSON), 'E' the end: {"errno": N, "error": "...", "ranges": bool}.
// - If the worker dies (SIGKILL, abort, OOM), the caller sees EOF before 'E': it restarts
//   the worker (one restart per death, whoever notices first) and sends the request again;
//   a read resumes after the bytes it already delivered to its sink. Readers see a delay,
//   never an error or a mix, unless the worker dies more than kMaxAttempts times during
//   one call: then that call fails with EIO. Past kMaxRestartsPerMinute deaths a minute,
//   restarts wait (50 ms, doubling, at most 1 s) but never stop.
// - The worker is the less trusted side: it parses network input and runs unprivileged.
//   The daemon believes no more of it than the Remote contract allows a backend to say.
//   A read's 'D' frames must stay inside [offset, offset+length) (checkDataFrame): the
//   first frame that would reach past it, or overflow, fails the call with EPROTO and
//   none of its bytes reach the sink (the bytes before it are valid, as for any read that
//   fails later). An error's errno must be one a remote may return (remoteMayReturn: a
//   fake ENOSPC would start an eviction pass); any other is EPROTO, with the worker's
//   message as context. Malformed messages are EPROTO too.
//
// - A watchdog replaces a worker that sends nothing for `watchdog_seconds` (configuration,
//   default 60) while calls wait for it (stopped, wedged in a system call): it is killed,
//   and the calls go on as after any death. Its own timeouts (HTTP's stall timeout) end
//   long before that on a merely slow source.
//
// Contract: the Remote contract (remote.h), whatever the worker sends. start() spawns the
// worker and waits for its hello (bounded); the destructor closes the channel and reaps the
// worker (SIGKILL after a bounded wait). Thread-safe; locks: mu_ (rank 92: held only to
// send a request or to restart the worker, never while reading an answer).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <vector>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "remote/remote.h"
#include "util/unique_fd.h"

namespace hsm::remote {

struct WorkerStats {
  int pid = -1;
  uint64_t restarts = 0;
  uint64_t retriedCalls = 0;  // calls sent again after a worker died
  uint64_t watchdogKills = 0;  // workers replaced because they made no progress
};

class WorkerRemote final : public Remote {
 public:
  static constexpr int kMaxAttempts = 5;
  static constexpr int kMaxRestartsPerMinute = 30;

  // `config` is handed to the worker's factory (fetch_worker.h) as is.
  static Result<std::unique_ptr<WorkerRemote>> start(nlohmann::json config);
  ~WorkerRemote() override;

  Result<Listing> list(const std::string& dir, const std::string& validator) override;
  Status read(const std::string& path, const ObjectVersion& version, uint64_t offset,
              uint64_t length, ByteSink& sink) override;
  Result<Entry> rootEntry() override;
  std::string describe() const override { return describe_; }
  bool supportsRanges() const override { return ranges_; }

  WorkerStats stats() const;

 private:
  WorkerRemote() = default;
  Status spawnLocked();      // starts a worker and reads its hello
  void reapLocked();         // closes the channel, waits for the old worker
  // Sends `req` with a fresh data channel; returns our end of it and the generation of
  // the worker it went to. Restarts a dead worker first if needed.
  Result<std::pair<UniqueFd, uint64_t>> send(const nlohmann::json& req);
  // The worker of generation `gen` failed a call: restart it unless already done.
  Status restart(uint64_t gen);
  Status restartLocked();  // beyond kMaxRestartsPerMinute, after a growing delay (<= 1 s)

  void watchdogLoop();
  // Counts a call waiting for the worker while it lives (see the watchdog).
  struct Waiting;

  nlohmann::json config_;
  std::chrono::seconds watchdogLimit_{60};
  std::atomic<int> waiting_{0};
  std::atomic<int64_t> lastProgressNs_{0};  // steady clock: a frame, or a call's start
  std::mutex wdMu_;  // rank 93 (leaf): wdStop_
  std::condition_variable wdCv_;
  bool wdStop_ = false;
  std::thread watchdog_;
  std::atomic<uint64_t> watchdogKills_{0};
  mutable std::mutex mu_;  // rank 92: control_, pid_, generation_, restart times
  UniqueFd control_;
  pid_t pid_ = -1;
  uint64_t generation_ = 0;
  std::vector<std::chrono::steady_clock::time_point> restartTimes_;
  std::string describe_;
  Result<Entry> root_{Entry{}};  // the source's error if it did not answer at start
  std::atomic<bool> ranges_{true};
  std::atomic<uint64_t> restarts_{0}, retried_{0};
};

// What the daemon decodes from the worker. The worker is the less trusted side: a
// malformed message is EPROTO, never a crash; names are checked again (validateName).
// Exposed for the unit tests and the fuzz target.
Result<Listing> decodeListing(const std::string& payload);
// The end of a call: its status, and whether the remote still supports ranges. An errno
// for which remoteMayReturn() is false (or 0 with an error message) is EPROTO.
Status decodeEnd(const std::string& payload, bool* ranges);
// Whether a Remote may fail with `err` (remote.h and the backends in src/remote/).
bool remoteMayReturn(int err);
// A 'D' frame of `size` bytes at offset `next` of a read that ends at `end` (UINT64_MAX:
// to the end of the file): EPROTO if it would reach past `end` or overflow.
Status checkDataFrame(uint64_t next, uint64_t end, size_t size);

// Worker side: serves requests on `controlFd` until it closes. `open` builds the real
// Remote from the configuration; `dropPrivileges` runs after it and before any request
// (an error there ends the worker). Returns the process exit code.
int runFetchWorker(int controlFd,
                   const std::function<Result<std::unique_ptr<Remote>>(const nlohmann::json&)>& open,
                   const std::function<Status(const nlohmann::json&)>& dropPrivileges);

}  // namespace hsm::remote
