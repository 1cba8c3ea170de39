// Control channel between the `fanhsm` command and a running daemon: a Unix stream
// socket (root only, mode 0600) next to the registry record. One request per connection:
// the client sends one JSON object on one line, the daemon answers with one JSON object on
// one line ({"ok": false, "error": "...", "errno": N} on failure).
//
// Requests: {"op":"status","path":"<rel>"}   {"op":"umount","lazy":bool}
#pragma once

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

}  // namespace hsm::cli
