// Fuzzes name and path validation: whatever a remote sends as a name, validation must
// not crash, and an accepted name must be safe to join into a cache path.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "util/rel_path.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  if (hsm::validateName(in, true).isOk()) {
    if (in.find('/') != std::string_view::npos || in == "." || in == ".." || in.empty() ||
        in.size() > hsm::kMaxNameBytes || !hsm::isValidUtf8(in)) {
      std::abort();
    }
    std::string joined = hsm::joinPath("dir", in);
    if (hsm::baseName(joined) != in || hsm::parentPath(joined) != "dir") std::abort();
  }
  (void)hsm::validateRelPath(in);
  return 0;
}
