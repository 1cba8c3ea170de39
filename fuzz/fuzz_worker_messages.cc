// Fuzzes the daemon's decoding of what the fetch worker sends (listings, call ends and the
// range check of content frames): the worker is the less trusted side, so any bytes must
// give a value or EPROTO, every decoded name must pass validateName(), every error must be
// one a remote may return, and no accepted content frame may reach past its read.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
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
  } else if (!hsm::remote::remoteMayReturn(listing.status().code())) {
    std::abort();
  }
  bool ranges = false;
  hsm::Status end = hsm::remote::decodeEnd(payload, &ranges);
  if (!end && !hsm::remote::remoteMayReturn(end.code())) std::abort();
  if (size >= 3 * sizeof(uint64_t)) {
    uint64_t v[3];
    std::memcpy(v, data, sizeof v);
    const uint64_t next = v[0], last = v[1];
    const size_t frame = static_cast<size_t>(v[2]);
    if (hsm::remote::checkDataFrame(next, last, frame) && (next > last || frame > last - next)) {
      std::abort();
    }
  }
  return 0;
}
