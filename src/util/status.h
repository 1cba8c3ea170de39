// Status and Result<T>: errors are values.
//
// Contract: a Status is either ok() or carries a positive errno (code()) and a
// human-readable message that names the object and the cause. Functions that can fail
// return [[nodiscard]] Status or Result<T>; no exceptions cross module boundaries.
// The errno is chosen where the failure is understood; each frontend translates it to
// its kernel reply in one place.
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace hsm {

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status error(int err, std::string message) { return Status(err, std::move(message)); }
  // An error from the current errno: "<what>: <strerror(errno)>".
  static Status fromErrno(int err, const std::string& what);

  bool isOk() const { return code_ == 0; }
  explicit operator bool() const { return isOk(); }
  int code() const { return code_; }
  const std::string& message() const { return message_; }
  // "message" for errors, "ok" otherwise.
  std::string toString() const { return isOk() ? std::string("ok") : message_; }
  // Prefixes the message with context, keeps the code.
  Status withContext(const std::string& context) const;

 private:
  Status(int err, std::string message) : code_(err > 0 ? err : EIO), message_(std::move(message)) {}
  int code_ = 0;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    if (status_.isOk()) status_ = Status::error(EIO, "Result constructed from ok Status");
  }

  bool isOk() const { return value_.has_value(); }
  explicit operator bool() const { return isOk(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace hsm

// Propagate an error Status from an expression returning Status.
#define HSM_RETURN_IF_ERROR(expr)          \
  do {                                     \
    ::hsm::Status hsm_status_ = (expr);    \
    if (!hsm_status_.isOk()) return hsm_status_; \
  } while (0)
