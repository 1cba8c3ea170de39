// ChunkMap: which fixed-size chunks of a file are present.
//
// A file of `size` bytes is cut into ceil(size / chunkSize) chunks; the last one may be
// short. A value type; not thread-safe (owners lock). Serialized form (for MetaDb) is a
// little-endian bitmap, bit i = chunk i; deserialize() rejects blobs of the wrong length.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hsm {

class ChunkMap {
 public:
  ChunkMap() = default;
  ChunkMap(uint64_t fileSize, uint64_t chunkSize);

  uint64_t fileSize() const { return fileSize_; }
  uint64_t chunkSize() const { return chunkSize_; }
  uint64_t chunkCount() const { return chunkCount_; }
  uint64_t presentCount() const { return presentCount_; }
  bool full() const { return presentCount_ == chunkCount_; }
  bool empty() const { return presentCount_ == 0; }

  bool has(uint64_t chunk) const;
  void set(uint64_t chunk);
  void reset(uint64_t chunk);
  void clear();
  // Byte range of a chunk, clipped to the file size.
  uint64_t chunkBegin(uint64_t chunk) const { return chunk * chunkSize_; }
  uint64_t chunkLength(uint64_t chunk) const;
  // Chunks overlapping [offset, offset+length) clipped to the file: [first, last).
  // Empty range (first == last) when offset >= size or length == 0.
  std::pair<uint64_t, uint64_t> chunksFor(uint64_t offset, uint64_t length) const;
  // True if every chunk overlapping the byte range is present.
  bool hasRange(uint64_t offset, uint64_t length) const;
  // Bytes covered by present chunks.
  uint64_t bytesPresent() const;

  std::string serialize() const;
  static std::optional<ChunkMap> deserialize(std::string_view blob, uint64_t fileSize,
                                             uint64_t chunkSize);

 private:
  uint64_t fileSize_ = 0;
  uint64_t chunkSize_ = 1;
  uint64_t chunkCount_ = 0;
  uint64_t presentCount_ = 0;
  std::vector<uint64_t> bits_;
};

}  // namespace hsm
