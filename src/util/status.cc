#include "util/status.h"

#include <cstring>

namespace hsm {

Status Status::fromErrno(int err, const std::string& what) {
  return Status(err, fmt::format("{}: {}", what, std::strerror(err)));
}

Status Status::withContext(const std::string& context) const {
  if (isOk()) return *this;
  return Status(code_, fmt::format("{}: {}", context, message_));
}

}  // namespace hsm
