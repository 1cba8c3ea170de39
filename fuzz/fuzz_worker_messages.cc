// Fuzzes the daemon's decoding of what the fetch worker sends (listings and call ends):
// the worker is the less trusted side, so any bytes must give a value or EPROTO, and
// every decoded name must pass validateName().
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "remote/worker/worker_remote.h"
#include "util/rel_path.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string payload(reinterpret_cast<const char*>(data), size);
  auto listing = hsm::remote::decodeListing(payload);
  if (listing) {
    for (const auto& e : listing->entries) {
      if (!hsm::validateName(e.name, false)) std::abort();
    }
  }
  bool ranges = false;
  (void)hsm::remote::decodeEnd(payload, &ranges);
  return 0;
}
