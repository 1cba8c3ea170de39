#include "cache/cache_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "temp_dir.h"

namespace hsm::cache {
namespace {

TEST(CacheStoreTest, MaterializesSparseFilesDirsAndSymlinks) {
  hsm::testing::TempDir tmp;
  auto cs = CacheStore::open(tmp.path() + "/c");
  ASSERT_TRUE(cs.isOk()) << cs.status().message();
  Entry f;
  f.name = "big";
  f.size = 100 << 20;
  f.mode = 0640;
  f.mtimeNs = 1'700'000'000'123'456'789;
  ASSERT_TRUE((*cs)->materialize("", f, false).isOk());
  Entry d;
  d.name = "sub";
  d.type = EntryType::kDir;
  d.mode = 0750;
  ASSERT_TRUE((*cs)->materialize("", d, false).isOk());
  Entry l;
  l.name = "link";
  l.type = EntryType::kSymlink;
  l.linkTarget = "../outside";
  ASSERT_TRUE((*cs)->materialize("sub", l, false).isOk());

  struct stat st {};
  ASSERT_EQ(::stat((tmp.path() + "/c/tree/big").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), f.size);
  EXPECT_EQ(st.st_blocks, 0);  // sparse: nothing fetched yet
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'700'000'000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 123'456'789);
  ASSERT_EQ(::stat((tmp.path() + "/c/tree/sub").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  char buf[64] = {};
  ASSERT_GT(::readlink((tmp.path() + "/c/tree/sub/link").c_str(), buf, sizeof buf - 1), 0);
  EXPECT_STREQ(buf, "../outside");
  ASSERT_EQ(::stat((tmp.path() + "/c").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);  // the sparse tree is not readable by others
}

TEST(CacheStoreTest, KeepsContentOfUnchangedFileAndDiscardsOnRequest) {
  hsm::testing::TempDir tmp;
  auto cs = CacheStore::open(tmp.path() + "/c");
  ASSERT_TRUE(cs.isOk());
  Entry f;
  f.name = "f";
  f.size = 4;
  ASSERT_TRUE((*cs)->materialize("", f, false).isOk());
  auto fd = (*cs)->openBeneath("f", O_RDWR);
  ASSERT_TRUE(fd.isOk());
  ASSERT_EQ(::pwrite(fd->get(), "data", 4, 0), 4);
  ASSERT_TRUE((*cs)->materialize("", f, false).isOk());
  char buf[4];
  ASSERT_EQ(::pread(fd->get(), buf, 4, 0), 4);
  EXPECT_EQ(std::string(buf, 4), "data");
  ASSERT_TRUE((*cs)->materialize("", f, true).isOk());
  ASSERT_EQ(::pread(fd->get(), buf, 4, 0), 4);
  EXPECT_EQ(std::string(buf, 4), std::string(4, '\0'));
}

TEST(CacheStoreTest, RefusesEscapes) {
  hsm::testing::TempDir tmp;
  auto cs = CacheStore::open(tmp.path() + "/c");
  ASSERT_TRUE(cs.isOk());
  Entry bad;
  bad.name = "..";
  EXPECT_FALSE((*cs)->materialize("", bad, false).isOk());
  bad.name = "a/b";
  EXPECT_FALSE((*cs)->materialize("", bad, false).isOk());
  EXPECT_FALSE((*cs)->openBeneath("../c/meta/index.db", O_RDONLY).isOk());
  // A symlink inside the tree is never followed by the cache's own I/O.
  ASSERT_EQ(::symlink("/etc", (tmp.path() + "/c/tree/evil").c_str()), 0);
  EXPECT_FALSE((*cs)->openBeneath("evil/hostname", O_RDONLY).isOk());
  Entry f;
  f.name = "x";
  f.size = 1;
  EXPECT_FALSE((*cs)->materialize("evil", f, false).isOk());
}

TEST(CacheStoreTest, SecondOpenOfSameCacheIsBusy) {
  hsm::testing::TempDir tmp;
  auto first = CacheStore::open(tmp.path() + "/c");
  ASSERT_TRUE(first.isOk());
  auto second = CacheStore::open(tmp.path() + "/c", /*lockWaitMs=*/0);
  ASSERT_FALSE(second.isOk());
  EXPECT_EQ(second.status().code(), EBUSY);
}

}  // namespace
}  // namespace hsm::cache
