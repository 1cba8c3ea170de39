// Fuzzes ChunkMap::deserialize (the range map read back from the on-disk index):
// a corrupt blob is rejected or round-trips exactly; it never claims chunks past EOF.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "util/chunk_map.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  uint16_t sizeKib;
  uint16_t chunkKib;
  std::memcpy(&sizeKib, data, 2);
  std::memcpy(&chunkKib, data + 2, 2);
  uint64_t fileSize = uint64_t{sizeKib} * 1024 + (size % 1024);
  uint64_t chunkSize = (static_cast<uint64_t>(chunkKib) % 64 + 1) * 1024;
  std::string_view blob(reinterpret_cast<const char*>(data + 4), size - 4);
  auto map = hsm::ChunkMap::deserialize(blob, fileSize, chunkSize);
  if (!map) return 0;
  if (map->serialize() != blob) std::abort();
  if (map->presentCount() > map->chunkCount()) std::abort();
  if (map->bytesPresent() > fileSize) std::abort();
  return 0;
}
