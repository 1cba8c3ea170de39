// The fetch worker's side of the CLI: how a source is opened from a mount's configuration
// (in the worker process, see remote/worker/worker_remote.h) and how the worker gives up
// its privileges before serving anything.
#pragma once

#include <memory>

#include <nlohmann/json.hpp>

#include "cli/config.h"
#include "remote/remote.h"

namespace hsm::cli {

// The fetch worker's uid and gid: kWorkerUidBase + the daemon's pid, an identity no account
// and no other process has (pids are unique among running daemons; the range is above the
// usual system, user and subordinate-id ranges). Only root can signal or trace the worker.
inline constexpr uint32_t kWorkerUidBase = 0x7f000000;
uint32_t workerUid();

// The part of a MountConfig the worker needs to open the source (credentials included:
// it travels over the worker's control channel, never argv or the environment).
nlohmann::json workerConfig(const MountConfig& config);

// Opens the real Remote (LocalDirRemote or HttpRemote) from workerConfig().
Result<std::unique_ptr<remote::Remote>> openSourceRemote(const nlohmann::json& config);

// As root: becomes workerUid() (nobody, 65534, for a configuration without one) with no
// supplementary groups, keeps at most
// CAP_DAC_READ_SEARCH (a directory source, or ~/.netrc, must stay readable; nothing can be
// written or executed with more rights than nobody's), and sets no_new_privs. Not root:
// nothing to drop.
Status dropWorkerPrivileges(const nlohmann::json& config);

// `fanhsm __worker`: the worker process's main (control channel on fd 3).
int runWorkerProcess();

}  // namespace hsm::cli
