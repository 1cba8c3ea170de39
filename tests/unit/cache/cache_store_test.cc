#include "cache/cache_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "cache/meta_db.h"
#include "temp_dir.h"

namespace hsm::cache {
namespace {

// Applies a listing of `dir` holding just `entries` (as the NamespacePopulator does).
Status apply(CacheStore& cs, const std::string& dir, const std::vector<Entry>& entries,
             bool relist = false) {
  auto r = cs.applyListing(dir, entries, "", 1, relist);
  return r ? Status::ok() : r.status();
}

Entry fileEntry(const std::string& name, uint64_t size, const std::string& version) {
  Entry f;
  f.name = name;
  f.size = size;
  f.version = version;
  f.mode = 0644;
  f.mtimeNs = 1'600'000'000'000'000'000;
  return f;
}

uint64_t inoOf(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

TEST(CacheStoreTest, MaterializesSparseFilesDirsAndSymlinks) {
  hsm::testing::TempDir tmp;
  auto cs = CacheStore::open(tmp.path() + "/c");
  ASSERT_TRUE(cs.isOk()) << cs.status().message();
  Entry f;
  f.name = "big";
  f.size = 100 << 20;
  f.mode = 0640;
  f.mtimeNs = 1'700'000'000'123'456'789;
  Entry d;
  d.name = "sub";
  d.type = EntryType::kDir;
  d.mode = 0750;
  ASSERT_TRUE(apply(**cs, "", {f, d}).isOk());
  Entry l;
  l.name = "link";
  l.type = EntryType::kSymlink;
  l.linkTarget = "../outside";
  ASSERT_TRUE(apply(**cs, "sub", {l}).isOk());

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
  // The index names the inode of each file it describes.
  auto row = (*cs)->db().get("big");
  ASSERT_TRUE(row.isOk() && row->has_value());
  EXPECT_EQ((**row).ino, inoOf(tmp.path() + "/c/tree/big"));
  ASSERT_EQ(::stat((tmp.path() + "/c").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);  // the sparse tree is not readable by others
}

TEST(CacheStoreTest, UnchangedFileKeepsInodeContentAndCtime) {
  hsm::testing::TempDir tmp;
  auto cs = CacheStore::open(tmp.path() + "/c");
  ASSERT_TRUE(cs.isOk());
  Entry f = fileEntry("f", 4, "v1");
  ASSERT_TRUE(apply(**cs, "", {f}).isOk());
  auto fd = (*cs)->openBeneath("f", O_RDWR);
  ASSERT_TRUE(fd.isOk());
  ASSERT_EQ(::pwrite(fd->get(), "data", 4, 0), 4);
  // As the Hydrator does after a write: the remote's mtime again.
  struct timespec ts[2] = {{1'600'000'000, 0}, {1'600'000'000, 0}};
  ASSERT_EQ(::futimens(fd->get(), ts), 0);
  ASSERT_TRUE((*cs)->db().recordContent({{"f", "v1", State::kFull, "\x01", 4}}).isOk());
  struct stat before {};
  ASSERT_EQ(::fstat(fd->get(), &before), 0);
  ASSERT_TRUE(apply(**cs, "", {f}, /*relist=*/true).isOk());
  struct stat after {};
  ASSERT_EQ(::stat((tmp.path() + "/c/tree/f").c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  EXPECT_EQ(after.st_ctim.tv_sec, before.st_ctim.tv_sec);  // no attribute was rewritten
  EXPECT_EQ(after.st_ctim.tv_nsec, before.st_ctim.tv_nsec);
  auto row = (*cs)->db().get("f");
  ASSERT_TRUE(row.isOk() && row->has_value());
  EXPECT_EQ((**row).state, static_cast<int>(State::kFull));
  char buf[4];
  ASSERT_EQ(::pread(fd->get(), buf, 4, 0), 4);
  EXPECT_EQ(std::string(buf, 4), "data");
}

// A change at the remote never touches the inode a reader holds (issue 13, item 2): the
// name gets a new, empty inode; the old one keeps every byte; the row names the new one.
void checkChangeLeavesHeldInodeAlone(uint64_t newSize) {
  hsm::testing::TempDir tmp;
  auto cs = CacheStore::open(tmp.path() + "/c");
  ASSERT_TRUE(cs.isOk());
  ASSERT_TRUE(apply(**cs, "", {fileEntry("f", 4, "v1")}).isOk());
  auto held = (*cs)->openBeneath("f", O_RDWR);
  ASSERT_TRUE(held.isOk());
  ASSERT_EQ(::pwrite(held->get(), "data", 4, 0), 4);
  const uint64_t oldIno = inoOf(tmp.path() + "/c/tree/f");
  ASSERT_TRUE((*cs)->db().recordContent({{"f", "v1", State::kFull, "\x01", 4, 0, oldIno}}).isOk());
  auto changes = (*cs)->applyListing("", {fileEntry("f", newSize, "v2")}, "", 2, true);
  ASSERT_TRUE(changes.isOk()) << changes.status().message();
  EXPECT_EQ(changes->changed, std::vector<std::string>{"f"});
  struct stat st {};
  ASSERT_EQ(::fstat(held->get(), &st), 0);
  EXPECT_EQ(st.st_size, 4);
  char buf[4];
  ASSERT_EQ(::pread(held->get(), buf, 4, 0), 4);
  EXPECT_EQ(std::string(buf, 4), "data");
  const uint64_t newIno = inoOf(tmp.path() + "/c/tree/f");
  EXPECT_NE(newIno, oldIno);
  ASSERT_EQ(::stat((tmp.path() + "/c/tree/f").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), newSize);
  EXPECT_EQ(st.st_blocks, 0);
  auto row = (*cs)->db().get("f");
  ASSERT_TRUE(row.isOk() && row->has_value());
  EXPECT_EQ((**row).ino, newIno);
  EXPECT_EQ((**row).version, "v2");
  EXPECT_EQ((**row).state, static_cast<int>(State::kEmpty));
  EXPECT_EQ((**row).bytesPresent, 0u);
  // Nothing is left in staging.
  auto left = ::opendir((tmp.path() + "/c/staging").c_str());
  ASSERT_NE(left, nullptr);
  int n = 0;
  while (auto* de = ::readdir(left)) n += de->d_name[0] != '.';
  ::closedir(left);
  EXPECT_EQ(n, 0);
}

TEST(CacheStoreTest, SizeChangeGivesNewInodeAndLeavesHeldOneAlone) { checkChangeLeavesHeldInodeAlone(8); }
TEST(CacheStoreTest, SameSizeChangeGivesNewInodeAndLeavesHeldOneAlone) {
  checkChangeLeavesHeldInodeAlone(4);
}

// A crash can leave the tree holding another inode than the row's (the rename of a new
// inode reached the disk, or the index was restored): the row's content is then nothing.
TEST(CacheStoreTest, RowNamingAnotherInodeIsReplacedAndHoldsNoContent) {
  hsm::testing::TempDir tmp;
  auto cs = CacheStore::open(tmp.path() + "/c");
  ASSERT_TRUE(cs.isOk());
  Entry f = fileEntry("f", 4, "v1");
  ASSERT_TRUE(apply(**cs, "", {f}).isOk());
  const std::string tree = tmp.path() + "/c/tree/f";
  ASSERT_TRUE((*cs)->db().recordContent({{"f", "v1", State::kFull, "\x01", 4, 0, inoOf(tree)}}).isOk());
  // Another inode under the name, as a crash between record and rename can leave it.
  const std::string other = tmp.path() + "/c/tree/.other";
  int ofd = ::open(other.c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_GE(ofd, 0);
  ASSERT_EQ(::ftruncate(ofd, 4), 0);
  ::close(ofd);
  ASSERT_EQ(::rename(other.c_str(), tree.c_str()), 0);
  auto row = (*cs)->db().get("f");
  ASSERT_TRUE(row.isOk() && row->has_value());
  ASSERT_NE((**row).ino, inoOf(tree));
  auto ino = (*cs)->replaceFile("f", **row);
  ASSERT_TRUE(ino.isOk()) << ino.status().message();
  EXPECT_EQ(*ino, inoOf(tree));
  row = (*cs)->db().get("f");
  EXPECT_EQ((**row).ino, *ino);
  EXPECT_EQ((**row).state, static_cast<int>(State::kEmpty));
  // And a listing that finds such a mismatch replaces it the same way.
  ASSERT_TRUE((*cs)->db().recordContent({{"f", "v1", State::kFull, "\x01", 4, 0, *ino}}).isOk());
  ofd = ::open(other.c_str(), O_CREAT | O_WRONLY, 0644);
  ASSERT_EQ(::ftruncate(ofd, 4), 0);
  ::close(ofd);
  ASSERT_EQ(::rename(other.c_str(), tree.c_str()), 0);
  ASSERT_TRUE(apply(**cs, "", {f}, true).isOk());
  row = (*cs)->db().get("f");
  EXPECT_EQ((**row).ino, inoOf(tree));
  EXPECT_EQ((**row).state, static_cast<int>(State::kEmpty));
}

TEST(CacheStoreTest, OpenClearsStaging) {
  hsm::testing::TempDir tmp;
  {
    auto cs = CacheStore::open(tmp.path() + "/c");
    ASSERT_TRUE(cs.isOk());
  }
  const std::string leftover = tmp.path() + "/c/staging/123.4";
  ASSERT_EQ(::close(::open(leftover.c_str(), O_CREAT | O_WRONLY, 0600)), 0);
  auto cs = CacheStore::open(tmp.path() + "/c");
  ASSERT_TRUE(cs.isOk());
  struct stat st {};
  EXPECT_NE(::stat(leftover.c_str(), &st), 0);
}

TEST(CacheStoreTest, RemovesEntriesAndSubtreesWithoutFollowingSymlinks) {
  hsm::testing::TempDir tmp;
  auto cs = CacheStore::open(tmp.path() + "/c");
  ASSERT_TRUE(cs.isOk());
  Entry d;
  d.name = "d";
  d.type = EntryType::kDir;
  ASSERT_TRUE(apply(**cs, "", {d}).isOk());
  d.name = "sub";
  ASSERT_TRUE(apply(**cs, "d", {d}).isOk());
  Entry f;
  f.name = "f";
  f.size = 10;
  ASSERT_TRUE(apply(**cs, "d/sub", {f}).isOk());
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
  EXPECT_FALSE(apply(**cs, "", {bad}).isOk());
  bad.name = "a/b";
  EXPECT_FALSE(apply(**cs, "", {bad}).isOk());
  EXPECT_FALSE((*cs)->openBeneath("../c/meta/index.db", O_RDONLY).isOk());
  // A symlink inside the tree is never followed by the cache's own I/O.
  ASSERT_EQ(::symlink("/etc", (tmp.path() + "/c/tree/evil").c_str()), 0);
  EXPECT_FALSE((*cs)->openBeneath("evil/hostname", O_RDONLY).isOk());
  Entry f;
  f.name = "x";
  f.size = 1;
  EXPECT_FALSE(apply(**cs, "evil", {f}).isOk());
}

TEST(CacheStoreTest, ForeignNonEmptyDirectoryIsRefused) {
  hsm::testing::TempDir tmp;
  const std::string dir = tmp.path() + "/photos";
  ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
  ASSERT_EQ(::close(::open((dir + "/holiday.jpg").c_str(), O_CREAT | O_WRONLY, 0644)), 0);
  auto cs = CacheStore::open(dir);
  ASSERT_FALSE(cs.isOk());
  EXPECT_EQ(cs.status().code(), EEXIST);
  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);  // untouched
  // A filesystem's root with only lost+found, and an existing cache, are fine.
  const std::string fsroot = tmp.path() + "/fsroot";
  ASSERT_EQ(::mkdir(fsroot.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((fsroot + "/lost+found").c_str(), 0700), 0);
  ASSERT_TRUE(CacheStore::open(fsroot).isOk());
  ASSERT_TRUE(CacheStore::open(fsroot).isOk());  // again: now a cache
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
