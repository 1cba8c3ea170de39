#include "util/chunk_map.h"

#include <gtest/gtest.h>

namespace hsm {
namespace {

TEST(ChunkMapTest, CountsChunksAndShortTail) {
  ChunkMap m(10 * 1024 + 5, 1024);
  EXPECT_EQ(m.chunkCount(), 11u);
  EXPECT_EQ(m.chunkLength(10), 5u);
  EXPECT_EQ(m.chunkLength(11), 0u);
  EXPECT_TRUE(m.empty());
  EXPECT_FALSE(m.full());
}

TEST(ChunkMapTest, EmptyFileIsFull) {
  ChunkMap m(0, 4096);
  EXPECT_EQ(m.chunkCount(), 0u);
  EXPECT_TRUE(m.full());
  EXPECT_TRUE(m.hasRange(0, 100));
  EXPECT_EQ(m.bytesPresent(), 0u);
}

TEST(ChunkMapTest, ChunksForClipsToFile) {
  ChunkMap m(3000, 1024);
  EXPECT_EQ(m.chunksFor(0, 1), (std::pair<uint64_t, uint64_t>{0, 1}));
  EXPECT_EQ(m.chunksFor(1023, 2), (std::pair<uint64_t, uint64_t>{0, 2}));
  EXPECT_EQ(m.chunksFor(2048, 1 << 20), (std::pair<uint64_t, uint64_t>{2, 3}));
  EXPECT_EQ(m.chunksFor(3000, 10), (std::pair<uint64_t, uint64_t>{0, 0}));
  EXPECT_EQ(m.chunksFor(10, 0), (std::pair<uint64_t, uint64_t>{0, 0}));
  EXPECT_EQ(m.chunksFor(UINT64_MAX - 1, UINT64_MAX), (std::pair<uint64_t, uint64_t>{0, 0}));
  EXPECT_EQ(m.chunksFor(100, UINT64_MAX), (std::pair<uint64_t, uint64_t>{0, 3}));
}

TEST(ChunkMapTest, SetResetAndBytes) {
  ChunkMap m(3000, 1024);
  m.set(2);
  EXPECT_EQ(m.bytesPresent(), 3000u - 2048u);
  m.set(2);
  EXPECT_EQ(m.presentCount(), 1u);
  EXPECT_FALSE(m.hasRange(1000, 2000));
  m.set(0);
  m.set(1);
  EXPECT_TRUE(m.full());
  EXPECT_EQ(m.bytesPresent(), 3000u);
  m.reset(1);
  EXPECT_EQ(m.presentCount(), 2u);
  EXPECT_FALSE(m.has(1));
  m.set(99);  // out of range: ignored
  EXPECT_EQ(m.presentCount(), 2u);
}

TEST(ChunkMapTest, SerializeRoundTrip) {
  ChunkMap m(200 * 1000, 1000);  // 200 chunks
  for (uint64_t c : {0, 7, 63, 64, 65, 127, 199}) m.set(c);
  std::string blob = m.serialize();
  EXPECT_EQ(blob.size(), 25u);
  auto back = ChunkMap::deserialize(blob, 200 * 1000, 1000);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->presentCount(), 7u);
  for (uint64_t c = 0; c < 200; ++c) EXPECT_EQ(back->has(c), m.has(c)) << c;
  EXPECT_EQ(back->serialize(), blob);
}

TEST(ChunkMapTest, DeserializeRejectsBadBlobs) {
  EXPECT_FALSE(ChunkMap::deserialize(std::string(3, '\0'), 10 * 1024, 1024).has_value());
  // 10 chunks -> 2 bytes; bits 10..15 must be clear.
  std::string blob("\xff\x03", 2);
  EXPECT_TRUE(ChunkMap::deserialize(blob, 10 * 1024, 1024).has_value());
  blob[1] = '\x07';
  EXPECT_FALSE(ChunkMap::deserialize(blob, 10 * 1024, 1024).has_value());
}

}  // namespace
}  // namespace hsm
