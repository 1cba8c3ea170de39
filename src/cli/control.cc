#include "cli/control.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

namespace hsm::cli {
namespace {

constexpr size_t kMaxMessage = 1 << 20;

Result<sockaddr_un> addressOf(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return Status::error(ENAMETOOLONG, fmt::format("socket path '{}' too long", path));
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// Reads until '\n' or EOF, within the deadline.
Result<std::string> readLine(int fd, int timeoutMs) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeoutMs);
  std::string data;
  char buf[4096];
  while (data.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return Status::error(ETIMEDOUT, "no answer in time");
    struct pollfd p = {fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Status::fromErrno(errno, "read control socket");
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxMessage) return Status::error(EMSGSIZE, "control message too large");
  }
  auto nl = data.find('\n');
  if (nl == std::string::npos) return Status::error(EPROTO, "connection closed before an answer");
  return data.substr(0, nl);
}

Status writeAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::send(fd, s.data() + done, s.size() - done, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::fromErrno(errno, "write control socket");
    }
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

Result<UniqueFd> connectAndSend(const std::string& socketPath, const nlohmann::json& request);

}  // namespace

Result<UniqueFd> listenControl(const std::string& socketPath) {
  auto addr = addressOf(socketPath);
  if (!addr) return addr.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::fromErrno(errno, "socket");
  ::unlink(socketPath.c_str());
  mode_t old = ::umask(077);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof(sockaddr_un));
  ::umask(old);
  if (rc != 0) return Status::fromErrno(errno, fmt::format("bind '{}'", socketPath));
  if (::listen(fd.get(), 16) != 0) return Status::fromErrno(errno, "listen");
  return fd;
}

Result<nlohmann::json> readRequest(int conn) {
  auto line = readLine(conn, 5000);
  if (!line) return line.status();
  auto j = nlohmann::json::parse(*line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::error(EPROTO, "malformed request");
  return j;
}

Status writeResponse(int conn, const nlohmann::json& response) {
  return writeAll(conn, response.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

namespace {

Result<UniqueFd> connectAndSend(const std::string& socketPath, const nlohmann::json& request) {
  auto addr = addressOf(socketPath);
  if (!addr) return addr.status();
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Status::fromErrno(errno, "socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&*addr), sizeof(sockaddr_un)) != 0) {
    return Status::fromErrno(errno, fmt::format("connect to the daemon at '{}'", socketPath));
  }
  HSM_RETURN_IF_ERROR(writeAll(fd.get(), request.dump() + "\n"));
  return fd;
}

}  // namespace

Result<nlohmann::json> callDaemonStream(const std::string& socketPath,
                                        const nlohmann::json& request,
                                        const std::function<void(const nlohmann::json&)>& onProgress,
                                        int stallMs, const volatile sig_atomic_t* interrupted) {
  auto fd = connectAndSend(socketPath, request);
  if (!fd) return fd.status();
  std::string data;
  char buf[4096];
  auto lastHeard = std::chrono::steady_clock::now();
  while (true) {
    if (interrupted && *interrupted) return Status::error(EINTR, "interrupted");
    auto nl = data.find('\n');
    if (nl != std::string::npos) {
      auto j = nlohmann::json::parse(data.substr(0, nl), nullptr, false);
      data.erase(0, nl + 1);
      if (j.is_discarded() || !j.is_object()) {
        return Status::error(EPROTO, "malformed answer from the daemon");
      }
      if (!j.contains("progress")) return j;
      onProgress(j["progress"]);
      continue;
    }
    if (std::chrono::steady_clock::now() - lastHeard > std::chrono::milliseconds(stallMs)) {
      return Status::error(ETIMEDOUT, "the daemon sent nothing in time");
    }
    struct pollfd p = {fd->get(), POLLIN, 0};
    int r = ::poll(&p, 1, 200);
    if (r <= 0) continue;  // EINTR or timeout: check `interrupted` and the stall bound
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return Status::fromErrno(errno, "read control socket");
    }
    if (n == 0) return Status::error(EPROTO, "the daemon closed the connection before an answer");
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxMessage) return Status::error(EMSGSIZE, "control message too large");
    lastHeard = std::chrono::steady_clock::now();
  }
}

Result<nlohmann::json> callDaemon(const std::string& socketPath, const nlohmann::json& request,
                                  int timeoutMs) {
  auto fd = connectAndSend(socketPath, request);
  if (!fd) return fd.status();
  auto line = readLine(fd->get(), timeoutMs);
  if (!line) return line.status().withContext("daemon");
  auto j = nlohmann::json::parse(*line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::error(EPROTO, "malformed answer from the daemon");
  return j;
}

}  // namespace hsm::cli
