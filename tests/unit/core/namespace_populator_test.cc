#include "core/namespace_populator.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "cache/meta_db.h"
#include "fake_remote.h"
#include "temp_dir.h"

namespace hsm::core {
namespace {

using hsm::testing::FakeRemote;

bool waitDone(NamespacePopulator& p) {
  for (int i = 0; i < 500; ++i) {
    if (p.stats().done) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

class PopulatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int d = 0; d < 5; ++d) {
      std::string dir = "d" + std::to_string(d);
      remote_.addDir(dir);
      for (int s = 0; s < 3; ++s) {
        std::string sub = dir + "/s" + std::to_string(s);
        remote_.addDir(sub);
        remote_.addFile(sub + "/f", "x");
      }
    }
    remote_.addDir("deep");
    remote_.addDir("deep/a");
    remote_.addDir("deep/a/b");
    remote_.addFile("deep/a/b/leaf", "leaf");
    remote_.addSymlink("deep/link", "/etc/passwd");
    auto cs = cache::CacheStore::open(tmp_.path() + "/cache");
    ASSERT_TRUE(cs.isOk());
    cache_ = std::move(*cs);
  }
  hsm::testing::TempDir tmp_;
  FakeRemote remote_;
  std::unique_ptr<cache::CacheStore> cache_;
};

TEST_F(PopulatorTest, CrawlsWholeTreeInBackground) {
  NamespacePopulator p(remote_, *cache_, 3);
  ASSERT_TRUE(p.start().isOk());
  ASSERT_TRUE(waitDone(p));
  auto st = p.stats();
  EXPECT_EQ(st.dirsListed, 1u + 5 + 15 + 3);
  EXPECT_EQ(st.errors, 0u);
  struct stat sb {};
  EXPECT_EQ(::stat((tmp_.path() + "/cache/tree/deep/a/b/leaf").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_size, 4);
  EXPECT_EQ(::lstat((tmp_.path() + "/cache/tree/deep/link").c_str(), &sb), 0);
  EXPECT_TRUE(S_ISLNK(sb.st_mode));
  auto unlisted = cache_->db().unlistedDirs(10);
  ASSERT_TRUE(unlisted.isOk());
  EXPECT_TRUE(unlisted->empty());
}

TEST_F(PopulatorTest, EnsureListedListsOnDemandOnce) {
  NamespacePopulator p(remote_, *cache_, 1);
  ASSERT_TRUE(p.start().isOk());
  ASSERT_TRUE(p.ensureListed("deep").isOk());
  ASSERT_TRUE(p.ensureListed("deep").isOk());
  EXPECT_EQ(p.ensureListed("nope").code(), ENOENT);
  ASSERT_TRUE(waitDone(p));
}

TEST_F(PopulatorTest, RestartListsNothingTwice) {
  {
    NamespacePopulator p(remote_, *cache_, 2);
    ASSERT_TRUE(p.start().isOk());
    ASSERT_TRUE(waitDone(p));
  }
  int lists = remote_.lists();
  NamespacePopulator p(remote_, *cache_, 2);
  ASSERT_TRUE(p.start().isOk());
  ASSERT_TRUE(waitDone(p));
  EXPECT_EQ(remote_.lists(), lists);
}

// The crawl queue in memory stays within its limit; what does not fit is read back from
// the index in batches, and every directory is still listed exactly once.
TEST_F(PopulatorTest, BoundedQueueListsEveryDirectoryOnce) {
  remote_.addDir("wide");
  for (int i = 0; i < 30; ++i) remote_.addDir("wide/w" + std::to_string(i));
  {
    NamespacePopulator rootOnly(remote_, *cache_, 0);  // lists the root, nothing else
    ASSERT_TRUE(rootOnly.start().isOk());
    EXPECT_FALSE(rootOnly.stats().done);  // no crawler: directories are left unlisted
  }
  const int before = remote_.lists();
  NamespacePopulator p(remote_, *cache_, 2, std::chrono::seconds(0), nullptr, /*queueLimit=*/2);
  ASSERT_TRUE(p.start().isOk());
  ASSERT_TRUE(waitDone(p));
  auto st = p.stats();
  EXPECT_LE(st.queuedPeak, 2u);
  EXPECT_EQ(st.errors, 0u);
  // root's children: 5 + deep + wide; below them 15 + deep/a, deep/a/b + 30.
  EXPECT_EQ(st.dirsListed, 5u + 2 + 15 + 2 + 30);
  EXPECT_EQ(remote_.lists() - before, static_cast<int>(st.dirsListed));
  auto unlisted = cache_->db().unlistedDirs(10);
  ASSERT_TRUE(unlisted.isOk());
  EXPECT_TRUE(unlisted->empty());
  struct stat sb {};
  EXPECT_EQ(::stat((tmp_.path() + "/cache/tree/deep/a/b/leaf").c_str(), &sb), 0);
}

TEST_F(PopulatorTest, RevalidationAfterTtlAddsRemovesAndInvalidates) {
  std::vector<std::string> changed;
  std::mutex mu;
  NamespacePopulator p(remote_, *cache_, 2, std::chrono::seconds(3600), [&](const std::string& path) {
    std::lock_guard lock(mu);
    changed.push_back(path);
  });
  ASSERT_TRUE(p.start().isOk());
  ASSERT_TRUE(waitDone(p));
  ASSERT_TRUE(cache_->db().recordContent({{"d0/s0/f", (*cache_->db().get("d0/s0/f"))->version,
                                           cache::State::kFull, "\x01", 1}}).isOk());
  remote_.addFile("new", "fresh");
  remote_.remove("deep/a/b/leaf");
  remote_.remove("d4/s2/f");
  remote_.remove("d4/s2");
  remote_.changeFile("d0/s0/f", "yz");
  // Within the TTL nothing is listed again.
  int lists = remote_.lists();
  ASSERT_TRUE(p.ensureListed("").isOk());
  EXPECT_EQ(remote_.lists(), lists);
  // Past the TTL (made so by ageing the listings), opening lists again.
  for (const char* d : {"", "deep/a/b", "d4", "d0/s0"}) ASSERT_TRUE(cache_->db().touchListing(d, 0).isOk());
  ASSERT_TRUE(p.ensureListed("").isOk());
  ASSERT_TRUE(p.ensureListed("deep/a/b").isOk());
  ASSERT_TRUE(p.ensureListed("d4").isOk());
  ASSERT_TRUE(p.ensureListed("d0/s0").isOk());
  struct stat sb {};
  EXPECT_EQ(::stat((tmp_.path() + "/cache/tree/new").c_str(), &sb), 0);
  EXPECT_NE(::lstat((tmp_.path() + "/cache/tree/deep/a/b/leaf").c_str(), &sb), 0);
  EXPECT_NE(::lstat((tmp_.path() + "/cache/tree/d4/s2").c_str(), &sb), 0);
  EXPECT_FALSE(cache_->db().get("deep/a/b/leaf")->has_value());
  EXPECT_FALSE(cache_->db().get("d4/s2/f")->has_value());
  auto f = *cache_->db().get("d0/s0/f");
  EXPECT_EQ(f->state, static_cast<int>(cache::State::kEmpty));
  EXPECT_EQ(f->size, 2u);
  ASSERT_EQ(::stat((tmp_.path() + "/cache/tree/d0/s0/f").c_str(), &sb), 0);
  EXPECT_EQ(sb.st_size, 2);
  std::lock_guard lock(mu);
  for (const char* path : {"deep/a/b/leaf", "d4/s2", "d0/s0/f"}) {
    EXPECT_NE(std::find(changed.begin(), changed.end(), path), changed.end()) << path;
  }
  EXPECT_EQ(p.stats().removed, 2u);
  EXPECT_GE(p.stats().revalidated, 4u);
}

TEST_F(PopulatorTest, FailedRevalidationKeepsServingTheCachedListing) {
  NamespacePopulator p(remote_, *cache_, 1, std::chrono::seconds(1));
  ASSERT_TRUE(p.start().isOk());
  ASSERT_TRUE(waitDone(p));
  ASSERT_TRUE(cache_->db().touchListing("deep", 0).isOk());
  remote_.remove("deep/a/b/leaf");
  remote_.remove("deep/a/b");
  remote_.remove("deep/a");
  remote_.remove("deep/link");
  remote_.remove("deep");  // listing "deep" now fails with ENOENT
  EXPECT_TRUE(p.ensureListed("deep").isOk());
  struct stat sb {};
  EXPECT_EQ(::stat((tmp_.path() + "/cache/tree/deep/a/b/leaf").c_str(), &sb), 0);
}


// --- limits on what a source may make the mount hold (issue #14, item 9) -------------------

TEST_F(PopulatorTest, DirectoriesBeyondTheDepthLimitAreNotListed) {
  ListingLimits limits;
  limits.maxDepth = 2;  // the root (0) and depth 1 are listed; deep/a (2) is not
  NamespacePopulator p(remote_, *cache_, 2, std::chrono::seconds(0), nullptr, 10000, {}, limits);
  ASSERT_TRUE(p.start().isOk());
  ASSERT_TRUE(waitDone(p));
  EXPECT_TRUE(p.ensureListed("deep").isOk());
  Status s = p.ensureListed("deep/a");
  ASSERT_FALSE(s.isOk());
  EXPECT_EQ(s.code(), EFBIG);
  EXPECT_NE(s.message().find("--max-depth"), std::string::npos) << s.message();
  auto leaf = cache_->entry("deep/a/b");
  ASSERT_TRUE(leaf.isOk());
  EXPECT_FALSE(leaf->has_value());  // nothing below the limit was created
  EXPECT_GE(p.stats().refused, 1u);
}

TEST_F(PopulatorTest, AHugeDirectoryIsRefusedAndTheRestStaysListable) {
  for (int i = 0; i < 50; ++i) remote_.addFile("d0/s0/many" + std::to_string(i), "x");
  ListingLimits limits;
  limits.maxDirEntries = 20;
  NamespacePopulator p(remote_, *cache_, 2, std::chrono::seconds(0), nullptr, 10000, {}, limits);
  ASSERT_TRUE(p.start().isOk());
  ASSERT_TRUE(waitDone(p));
  Status s = p.ensureListed("d0/s0");
  ASSERT_FALSE(s.isOk());
  EXPECT_EQ(s.code(), EFBIG);
  EXPECT_NE(s.message().find("--max-dir-entries"), std::string::npos) << s.message();
  EXPECT_TRUE(p.ensureListed("d0/s1").isOk());
  auto f = cache_->entry("d0/s1/f");
  ASSERT_TRUE(f.isOk() && f->has_value());
}

TEST_F(PopulatorTest, TheMountStopsGrowingAtTheEntryLimit) {
  ListingLimits limits;
  limits.maxEntries = 12;  // the root's 6 names, and a few directories' more
  NamespacePopulator p(remote_, *cache_, 1, std::chrono::seconds(0), nullptr, 10000, {}, limits);
  ASSERT_TRUE(p.start().isOk());
  ASSERT_TRUE(waitDone(p));
  auto st = p.stats();
  EXPECT_LE(st.names, 12u);
  EXPECT_GT(st.refused, 0u);
  auto cs = cache_->stats();
  ASSERT_TRUE(cs.isOk());
  EXPECT_LE(cs->files + cs->dirs + cs->symlinks, 12u + 1);  // + the root itself
}

}  // namespace
}  // namespace hsm::core
