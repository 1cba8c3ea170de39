// Control channel between the `fanhsm` command and a running daemon: a Unix stream
// socket (root only, mode 0600) next to the registry record. One request per connection:
// the client sends one JSON object on one line, the daemon answers with one JSON object on
// one line ({"ok": false, "error": "...", "errno": N} on failure).
//
// Long requests (cache_jobs.h: fetch, release, pin, unpin) answer with any number of
// progress lines {"progress": {...}} before the final object; a client that goes away
// cancels them.
//
// Requests: {"op":"status","path":"<rel>"}   {"op":"umount","lazy":bool}
//           {"op":"fetch"|"release"|"pin"|"unpin","paths":["<rel>",...],"recursive":bool}
#pragma once

#include <csignal>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "util/status.h"
#include "util/unique_fd.h"

namespace hsm::cli {

// Daemon side.
Result<UniqueFd> listenControl(const std::string& socketPath);
// Reads one request line from an accepted connection (bounded size and time).
Result<nlohmann::json> readRequest(int conn);
Status writeResponse(int conn, const nlohmann::json& response);

// Client side: sends `request`, returns the daemon's answer. Bounded by `timeoutMs`.
Result<nlohmann::json> callDaemon(const std::string& socketPath, const nlohmann::json& request,
                                  int timeoutMs);
// Same for a long request: `onProgress` gets each progress object; returns the final
// answer. Fails with ETIMEDOUT if the daemon sends nothing for `stallMs`, and with EINTR
// as soon as `*interrupted` becomes true (checked at least every 200 ms; the connection
// is closed, which cancels the request).
Result<nlohmann::json> callDaemonStream(const std::string& socketPath,
                                        const nlohmann::json& request,
                                        const std::function<void(const nlohmann::json&)>& onProgress,
                                        int stallMs, const volatile sig_atomic_t* interrupted);

}  // namespace hsm::cli
