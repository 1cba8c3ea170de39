// printable(): text safe to show on a terminal or write to a log. Names come from remote
// servers and may carry control characters (escape sequences that retitle a terminal,
// rewrite a screen, or forge log lines); each is shown as \xNN instead: the C0 controls
// (newline and tab included), DEL, and the C1 controls as UTF-8 encodes them
// (U+0080..U+009F, bytes C2 80..C2 9F). Everything else, valid UTF-8 or not, is kept.
#pragma once

#include <string>
#include <string_view>

namespace hsm {

std::string printable(std::string_view text);

}  // namespace hsm
