#include "core/hydrator.h"

#include <fcntl.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/namespace_populator.h"
#include "fake_remote.h"
#include "temp_dir.h"

namespace hsm::core {
namespace {

using hsm::testing::FakeRemote;
using hsm::testing::patternBytes;

constexpr uint64_t kChunk = 64 * 1024;

class HydratorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    remote_.addFile("small", patternBytes(1000, 1));
    remote_.addFile("big", patternBytes(kChunk * 20 + 123, 2));
    remote_.addFile("empty", "");
    std::string sparse(kChunk * 4, '\0');
    sparse.replace(kChunk * 2 + 5, 3, "abc");
    remote_.addFile("sparse", sparse);
    open();
  }

  void open() {
    auto cs = cache::CacheStore::open(tmp_.path() + "/cache");
    ASSERT_TRUE(cs.isOk()) << cs.status().message();
    cache_ = std::move(*cs);
    NamespacePopulator pop(remote_, *cache_, 1);
    ASSERT_TRUE(pop.start().isOk());
    HydratorConfig hc;
    hc.chunkSize = kChunk;
    hc.maxFetch = 4 * kChunk;
    hc.readahead = 8 * kChunk;
    hc.syncInterval = std::chrono::milliseconds(20);
    hydrator_ = std::make_unique<Hydrator>(remote_, *cache_, hc);
  }

  void reopen() {
    hydrator_.reset();
    cache_.reset();
    open();
  }

  std::string cached(const std::string& path, uint64_t offset, size_t length) {
    auto fd = cache_->openBeneath(path, O_RDONLY);
    EXPECT_TRUE(fd.isOk());
    std::string out(length, '\0');
    ssize_t n = ::pread(fd->get(), out.data(), length, static_cast<off_t>(offset));
    out.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return out;
  }

  hsm::testing::TempDir tmp_;
  FakeRemote remote_;
  std::unique_ptr<cache::CacheStore> cache_;
  std::unique_ptr<Hydrator> hydrator_;
};

TEST_F(HydratorTest, FetchesOnlyTheChunksRead) {
  auto r = hydrator_->ensure("big", kChunk * 10 + 100, 4096);
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_FALSE(*r);
  EXPECT_EQ(remote_.reads(), 1);
  EXPECT_EQ(remote_.bytesRead(), kChunk);
  auto info = hydrator_->info("big");
  ASSERT_TRUE(info.isOk());
  EXPECT_EQ(info->state, cache::State::kPartial);
  EXPECT_EQ(info->bytesPresent, kChunk);
  std::string src = patternBytes(kChunk * 20 + 123, 2);
  EXPECT_EQ(cached("big", kChunk * 10, kChunk), src.substr(kChunk * 10, kChunk));
}

TEST_F(HydratorTest, SecondReadMakesNoRemoteCall) {
  ASSERT_TRUE(hydrator_->ensure("small", 0, 1000).isOk());
  int reads = remote_.reads();
  ASSERT_TRUE(hydrator_->ensure("small", 10, 20).isOk());
  EXPECT_EQ(remote_.reads(), reads);
}

TEST_F(HydratorTest, WholeFileBecomesFullAndDurable) {
  auto r = hydrator_->ensure("big", 0, UINT64_MAX);
  ASSERT_TRUE(r.isOk());
  EXPECT_TRUE(*r);
  auto row = cache_->db().get("big");
  ASSERT_TRUE(row.isOk() && row->has_value());
  EXPECT_EQ((*row)->state, static_cast<int>(cache::State::kFull));
  EXPECT_EQ((*row)->bytesPresent, kChunk * 20 + 123);
  EXPECT_EQ(cached("big", 0, kChunk * 21), patternBytes(kChunk * 20 + 123, 2));
}

TEST_F(HydratorTest, EmptyFileIsFullWithoutRemoteCall) {
  auto r = hydrator_->ensure("empty", 0, 4096);
  ASSERT_TRUE(r.isOk());
  EXPECT_TRUE(*r);
  EXPECT_EQ(remote_.reads(), 0);
}

TEST_F(HydratorTest, ReadPastEndFetchesNothing) {
  auto r = hydrator_->ensure("small", 5000, 4096);
  ASSERT_TRUE(r.isOk());
  EXPECT_FALSE(*r);
  EXPECT_EQ(remote_.reads(), 0);
}

TEST_F(HydratorTest, SparseContentStaysSparseAndEqual) {
  ASSERT_TRUE(hydrator_->ensure("sparse", 0, UINT64_MAX).isOk());
  std::string expect(kChunk * 4, '\0');
  expect.replace(kChunk * 2 + 5, 3, "abc");
  EXPECT_EQ(cached("sparse", 0, kChunk * 4), expect);
}

TEST_F(HydratorTest, ConcurrentReadersOfOneColdChunkShareOneFetch) {
  remote_.closeGate();
  std::vector<std::thread> readers;
  std::vector<int> ok(8, 0);
  for (int i = 0; i < 8; ++i) {
    readers.emplace_back([&, i] {
      auto r = hydrator_->ensure("big", kChunk * 5 + 50, 100);  // same range: no readahead
      ok[static_cast<size_t>(i)] = r.isOk();
    });
  }
  ASSERT_TRUE(remote_.waitForBlockedReads(1));
  // Give the other readers time to find the flight (they wait on it, not on the remote).
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  remote_.openGate();
  for (auto& t : readers) t.join();
  for (int v : ok) EXPECT_EQ(v, 1);
  EXPECT_EQ(remote_.reads(), 1);
  EXPECT_GE(hydrator_->stats().waits, 1u);
}

TEST_F(HydratorTest, FailedFetchIsNeverPresentAndIsRetried) {
  remote_.failNextReads(1, EIO);
  auto r = hydrator_->ensure("small", 0, 10);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), EIO);
  auto info = hydrator_->info("small");
  EXPECT_EQ(info->bytesPresent, 0u);
  r = hydrator_->ensure("small", 0, 10);
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(cached("small", 0, 1000), patternBytes(1000, 1));
}

TEST_F(HydratorTest, TruncatedDeliveryFails) {
  remote_.setShortBy(10);
  // Not at offset 0 (which would start readahead): exactly one flight, for chunk 3.
  auto r = hydrator_->ensure("big", kChunk * 3 + 5, 100);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), EIO);
  EXPECT_EQ(hydrator_->info("big")->bytesPresent, 0u);
}

TEST_F(HydratorTest, ChangedRemoteFailsInsteadOfMixing) {
  ASSERT_TRUE(hydrator_->ensure("big", 0, 10).isOk());
  remote_.changeFile("big", patternBytes(kChunk * 20 + 123, 9));
  auto r = hydrator_->ensure("big", kChunk * 15, 10);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), ESTALE);
}

TEST_F(HydratorTest, SequentialReaderTriggersReadahead) {
  for (uint64_t off = 0; off < kChunk * 3; off += 32 * 1024) {
    ASSERT_TRUE(hydrator_->ensure("big", off, 32 * 1024).isOk());
  }
  // Bounded wait for the background readahead to land.
  for (int i = 0; i < 200 && hydrator_->info("big")->bytesPresent < kChunk * 6; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(hydrator_->info("big")->bytesPresent, kChunk * 6);
  EXPECT_GT(hydrator_->stats().readaheadFetches, 0u);
}

TEST_F(HydratorTest, RecordedStateSurvivesRestartAndUnrecordedIsRefetched) {
  ASSERT_TRUE(hydrator_->ensure("big", 0, kChunk).isOk());
  ASSERT_TRUE(hydrator_->ensure("small", 0, 1000).isOk());
  ASSERT_TRUE(hydrator_->flush().isOk());
  reopen();
  int reads = remote_.reads();
  ASSERT_TRUE(hydrator_->ensure("small", 0, 1000).isOk());
  ASSERT_TRUE(hydrator_->ensure("big", 0, kChunk).isOk());
  EXPECT_EQ(remote_.reads(), reads);
  ASSERT_TRUE(hydrator_->ensure("big", kChunk * 19, kChunk).isOk());
  EXPECT_EQ(remote_.reads(), reads + 1);
}

TEST_F(HydratorTest, UnknownPathIsEnoent) {
  auto r = hydrator_->ensure("nope", 0, 1);
  ASSERT_FALSE(r.isOk());
  EXPECT_EQ(r.status().code(), ENOENT);
}

}  // namespace
}  // namespace hsm::core
