// The fetch worker's side of the CLI: how a source is opened from a mount's configuration
// (in the worker process, see remote/worker/worker_remote.h) and how the worker gives up
// its privileges before serving anything.
#pragma once

#include <memory>

#include <nlohmann/json.hpp>

#include "cli/config.h"
#include "remote/remote.h"

namespace hsm::cli {

// The part of a MountConfig the worker needs to open the source (credentials included:
// it travels over the worker's control channel, never argv or the environment).
nlohmann::json workerConfig(const MountConfig& config);

// Opens the real Remote (LocalDirRemote or HttpRemote) from workerConfig().
Result<std::unique_ptr<remote::Remote>> openSourceRemote(const nlohmann::json& config);

// As root: becomes nobody (65534) with no supplementary groups, keeps at most
// CAP_DAC_READ_SEARCH (a directory source, or ~/.netrc, must stay readable; nothing can be
// written or executed with more rights than nobody's), and sets no_new_privs. Not root:
// nothing to drop.
Status dropWorkerPrivileges(const nlohmann::json& config);

// `fanhsm __worker`: the worker process's main (control channel on fd 3).
int runWorkerProcess();

}  // namespace hsm::cli
