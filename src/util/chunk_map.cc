#include "util/chunk_map.h"

#include <algorithm>
#include <bit>

namespace hsm {

ChunkMap::ChunkMap(uint64_t fileSize, uint64_t chunkSize)
    : fileSize_(fileSize),
      chunkSize_(chunkSize == 0 ? 1 : chunkSize),
      chunkCount_((fileSize + chunkSize_ - 1) / chunkSize_),
      bits_((chunkCount_ + 63) / 64, 0) {}

bool ChunkMap::has(uint64_t chunk) const {
  if (chunk >= chunkCount_) return false;
  return (bits_[chunk / 64] >> (chunk % 64)) & 1u;
}

void ChunkMap::set(uint64_t chunk) {
  if (chunk >= chunkCount_ || has(chunk)) return;
  bits_[chunk / 64] |= uint64_t{1} << (chunk % 64);
  ++presentCount_;
}

void ChunkMap::reset(uint64_t chunk) {
  if (!has(chunk)) return;
  bits_[chunk / 64] &= ~(uint64_t{1} << (chunk % 64));
  --presentCount_;
}

void ChunkMap::clear() {
  std::fill(bits_.begin(), bits_.end(), 0);
  presentCount_ = 0;
}

uint64_t ChunkMap::chunkLength(uint64_t chunk) const {
  if (chunk >= chunkCount_) return 0;
  uint64_t begin = chunk * chunkSize_;
  return std::min(chunkSize_, fileSize_ - begin);
}

std::pair<uint64_t, uint64_t> ChunkMap::chunksFor(uint64_t offset, uint64_t length) const {
  if (length == 0 || offset >= fileSize_) return {0, 0};
  uint64_t end = (length > fileSize_ - offset) ? fileSize_ : offset + length;
  return {offset / chunkSize_, (end + chunkSize_ - 1) / chunkSize_};
}

bool ChunkMap::hasRange(uint64_t offset, uint64_t length) const {
  auto [first, last] = chunksFor(offset, length);
  for (uint64_t c = first; c < last; ++c) {
    if (!has(c)) return false;
  }
  return true;
}

uint64_t ChunkMap::bytesPresent() const {
  if (chunkCount_ == 0) return 0;
  uint64_t bytes = presentCount_ * chunkSize_;
  if (has(chunkCount_ - 1)) bytes -= chunkSize_ - chunkLength(chunkCount_ - 1);
  return bytes;
}

std::string ChunkMap::serialize() const {
  std::string out((chunkCount_ + 7) / 8, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<char>((bits_[i / 8] >> ((i % 8) * 8)) & 0xFF);
  }
  return out;
}

std::optional<ChunkMap> ChunkMap::deserialize(std::string_view blob, uint64_t fileSize,
                                              uint64_t chunkSize) {
  ChunkMap map(fileSize, chunkSize);
  if (blob.size() != (map.chunkCount_ + 7) / 8) return std::nullopt;
  for (size_t i = 0; i < blob.size(); ++i) {
    map.bits_[i / 8] |= uint64_t{static_cast<uint8_t>(blob[i])} << ((i % 8) * 8);
  }
  // Bits past the last chunk must be zero.
  if (map.chunkCount_ % 64 != 0 && !map.bits_.empty()) {
    uint64_t valid = (uint64_t{1} << (map.chunkCount_ % 64)) - 1;
    if (map.bits_.back() & ~valid) return std::nullopt;
  }
  uint64_t count = 0;
  for (uint64_t w : map.bits_) count += static_cast<uint64_t>(std::popcount(w));
  map.presentCount_ = count;
  return map;
}

}  // namespace hsm
