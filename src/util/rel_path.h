// Relative paths inside a mounted tree, and validation of untrusted entry names.
//
// A relative path is "" for the root or "a/b/c": components separated by single '/',
// no leading or trailing '/', no "." or ".." components, no NUL. Every name that comes
// from a remote (a listing, a directory read) passes validateName() before it is joined
// into a path; the cache additionally resolves every path beneath its root with
// openat2(RESOLVE_BENEATH), so a bad name can never reach outside the cache.
#pragma once

#include <string>
#include <string_view>

#include "util/status.h"

namespace hsm {

inline constexpr size_t kMaxNameBytes = 255;
inline constexpr size_t kMaxPathBytes = 4000;

// Checks one entry name: not empty, not "." or "..", no '/', no NUL, at most 255 bytes,
// and (if requireUtf8) well-formed UTF-8 without overlong forms or surrogates.
// Returns EINVAL with a message that says which rule failed.
Status validateName(std::string_view name, bool requireUtf8);

// True if `s` is well-formed UTF-8.
bool isValidUtf8(std::string_view s);

// Checks a whole relative path (each component with validateName, no UTF-8 rule).
Status validateRelPath(std::string_view path);

// "" + "a" -> "a"; "a" + "b" -> "a/b". `name` must be a valid name.
std::string joinPath(std::string_view parent, std::string_view name);

// "a/b/c" -> "a/b"; "a" -> ""; "" -> "".
std::string_view parentPath(std::string_view path);

// "a/b/c" -> "c"; "a" -> "a"; "" -> "".
std::string_view baseName(std::string_view path);

// Prints a relative path for humans: "" is shown as ".".
inline std::string displayPath(std::string_view path) {
  return path.empty() ? std::string(".") : std::string(path);
}

}  // namespace hsm
