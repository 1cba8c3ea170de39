#include "core/namespace_populator.h"

#include <sys/stat.h>
#include <unistd.h>

#include <thread>

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace hsm::core
