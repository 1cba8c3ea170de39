// Daemon: one mount — remote, cache, hydrator, populator and frontend, wired together and
// run until umount or SIGTERM/SIGINT.
//
// run() sets everything up, then reports readiness (or the setup error) through
// `readyFd` (a pipe to the `fanhsm mount` process that waits for it; -1 in the
// foreground) and serves requests until stopped. Stop order: unmount the view (lazily if a
// signal asked for it and the view is busy), answer pending requests, close the fanotify
// groups, record the cache state, remove the registry record.
#pragma once

#include "cli/config.h"
#include "util/status.h"

namespace hsm::cli {

// Returns the process exit code.
int runDaemon(const MountConfig& config, int readyFd);

}  // namespace hsm::cli
