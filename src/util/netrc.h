// The credentials a netrc file (curl's and ftp's format) gives for a host, read by the CLI
// (as the user who mounts) so that the fetch worker needs no right to read that file.
//
// Contract: a pure function of the file's text. Tokens are separated by white space and
// may be double-quoted ("a b", with \" and \\ inside). `machine NAME` starts an entry for
// NAME, `default` one for any host; `login`, `password` and `account` take a value;
// `macdef NAME` skips a macro, up to an empty line. The first entry naming `host` wins,
// else a `default` entry. Returns "login:password", or nullopt when no entry applies or it
// has no login. Bounded work, never throws (but std::bad_alloc).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace hsm {

std::optional<std::string> netrcCredentials(std::string_view text, std::string_view host);

}  // namespace hsm
