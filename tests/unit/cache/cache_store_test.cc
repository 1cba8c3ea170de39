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
  EXPECT_EQ(std::string(buf, 4), "data");  // the old inode, still open, is untouched
  auto fresh = (*cs)->openBeneath("f", O_RDONLY);
  ASSERT_TRUE(fresh.isOk());
  ASSERT_EQ(::pread(fresh->get(), buf, 4, 0), 4);
  EXPECT_EQ(std::string(buf, 4), std::string(4, '\0'));  // the name holds a new, empty file
}

TEST(CacheStoreTest, RemovesEntriesAndSubtreesWithoutFollowingSymlinks) {
  hsm::testing::TempDir tmp;
  auto cs = CacheStore::open(tmp.path() + "/c");
  ASSERT_TRUE(cs.isOk());
  Entry d;
  d.name = "d";
  d.type = EntryType::kDir;
  ASSERT_TRUE((*cs)->materialize("", d, false).isOk());
  d.name = "sub";
  ASSERT_TRUE((*cs)->materialize("d", d, false).isOk());
  Entry f;
  f.name = "f";
  f.size = 10;
  ASSERT_TRUE((*cs)->materialize("d/sub", f, false).isOk());
  std::string outside = tmp.path() + "/outside";
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  ASSERT_EQ(::close(::open((outside + "/keep").c_str(), O_CREAT | O_WRONLY, 0644)), 0);
  ASSERT_EQ(::symlink(outside.c_str(), (tmp.path() + "/c/tree/d/sub/link").c_str()), 0);
  auto names = (*cs)->names("d");
  ASSERT_TRUE(names.isOk());
  EXPECT_EQ(*names, std::vector<std::string>{"sub"});
  ASSERT_TRUE((*cs)->removeEntry("", "d").isOk());
  struct stat st {};
  EXPECT_NE(::lstat((tmp.path() + "/c/tree/d").c_str(), &st), 0);
  EXPECT_EQ(::stat((outside + "/keep").c_str(), &st), 0);  // the symlink was not followed
  EXPECT_EQ((*cs)->removeEntry("", "d").code(), ENOENT);
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
