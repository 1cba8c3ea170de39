// FuseFrontend over a FakeRemote, mounted for real: needs root and /dev/fuse (skipped
// otherwise). The cache lives in /dev/shm (tmpfs) when it exists: FUSE needs no
// pre-content events. Every mount is taken away by the fixture, also on failure.
#include "frontend/fuse/fuse_frontend.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "cache/meta_db.h"
#include "fake_remote.h"
#include "temp_dir.h"

namespace hsm::frontend {
namespace {

using hsm::testing::FakeRemote;
using hsm::testing::patternBytes;

constexpr uint64_t kChunk = 64 * 1024;

bool isMounted(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // Field 5 is the mount point.
    std::istringstream fields(line);
    std::string f;
    for (int i = 0; i < 5 && fields >> f; ++i) {
    }
    if (f == mountpoint) return true;
  }
  return false;
}

// A directory for the cache on tmpfs if there is one, removed on destruction.
class ShmDir {
 public:
  ShmDir() {
    std::string base = std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp";
    std::string tmpl = base + "/fanhsm-fuse-test.XXXXXX";
    char* p = ::mkdtemp(tmpl.data());
    path_ = p ? p : "";
  }
  ~ShmDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Last line of defence: whatever happened, nothing stays mounted at the mount point.
class MountGuard {
 public:
  explicit MountGuard(std::string mountpoint) : mountpoint_(std::move(mountpoint)) {}
  ~MountGuard() {
    if (!mountpoint_.empty() && isMounted(mountpoint_)) {
      ::umount2(mountpoint_.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
    }
  }

 private:
  std::string mountpoint_;
};

class FuseFrontendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) {
      GTEST_SKIP() << "mounting FUSE needs root";
    }
    int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      GTEST_SKIP() << "/dev/fuse is not usable";
    }
    ::close(fd);
    ASSERT_FALSE(shm_.path().empty());
    mountpoint_ = mnt_.path() + "/mnt";
    ASSERT_EQ(::mkdir(mountpoint_.c_str(), 0755), 0);
    guard_ = std::make_unique<MountGuard>(mountpoint_);

    remote_.addDir("a");
    remote_.addDir("a/b");
    remote_.addDir("a/b/c");
    remote_.addFile("a/b/c/deep.txt", "deep content\n");
    remote_.addDir("other");
    remote_.addFile("other/x", "x");
    remote_.addFile("small", patternBytes(1000, 1));
    remote_.addFile("big", patternBytes(kChunk * 16 + 12345, 2));
    remote_.addFile("rand", patternBytes(kChunk * 32 + 7, 3));
    remote_.addFile("mapped", patternBytes(700000, 4));
    remote_.addFile("part", patternBytes(kChunk * 40, 5));
    remote_.addFile("failing", patternBytes(kChunk * 2, 6));
    remote_.addFile("conc", patternBytes(kChunk * 24 + 99, 7));
    remote_.addFile("empty", "");
    remote_.addSymlink("link", "small");
    openAll();
    mount();
  }

  void TearDown() override {
    frontend_.reset();  // stop(): detaches the mount
    if (!mountpoint_.empty()) {
      EXPECT_FALSE(isMounted(mountpoint_));
    }
  }

  void openAll() {
    auto cs = cache::CacheStore::open(shm_.path() + "/cache");
    ASSERT_TRUE(cs.isOk()) << cs.status().message();
    cache_ = std::move(*cs);
    // No background crawl: directories are listed only when the mount asks.
    populator_ = std::make_unique<core::NamespacePopulator>(remote_, *cache_, 0);
    ASSERT_TRUE(populator_->start().isOk());
    core::HydratorConfig hc;
    hc.chunkSize = kChunk;
    hc.maxFetch = 4 * kChunk;
    hc.readahead = 8 * kChunk;
    hc.syncInterval = std::chrono::milliseconds(20);
    hc.failureMemory = std::chrono::milliseconds(0);  // tests retry at once (HydratorTest covers it)
    hydrator_ = std::make_unique<core::Hydrator>(remote_, *cache_, hc);
  }

  void closeAll() {
    frontend_.reset();
    if (hydrator_) {
      EXPECT_TRUE(hydrator_->flush().isOk());
    }
    hydrator_.reset();
    populator_.reset();
    cache_.reset();
  }

  void mount() {
    FuseConfig fc;
    fc.treePath = cache_->treePath();
    fc.mountpoint = mountpoint_;
    fc.workers = 8;
    fc.fsName = "fanhsm:fake";
    frontend_ = std::make_unique<FuseFrontend>(fc, *hydrator_, *populator_, *cache_);
    Status s = frontend_->start();
    ASSERT_TRUE(s.isOk()) << s.message();
    ASSERT_TRUE(isMounted(mountpoint_));
  }

  std::string p(const std::string& rel) const { return mountpoint_ + "/" + rel; }

  std::string readAll(const std::string& rel, size_t bufSize = 100000) {
    int fd = ::open(p(rel).c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0) << rel << ": " << std::strerror(errno);
    if (fd < 0) return {};
    std::string out;
    std::string buf(bufSize, '\0');
    while (true) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      EXPECT_GE(n, 0) << std::strerror(errno);
      if (n <= 0) break;
      out.append(buf.data(), static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }

  std::string xattr(const std::string& rel) {
    char buf[64];
    ssize_t n = ::getxattr(p(rel).c_str(), "user.fanhsm.state", buf, sizeof buf);
    if (n < 0) return std::string("errno:") + std::strerror(errno);
    return std::string(buf, static_cast<size_t>(n));
  }

  std::optional<int> dirState(const std::string& rel) {
    auto row = cache_->db().get(rel);
    if (!row.isOk() || !row->has_value()) return std::nullopt;
    return (*row)->state;
  }

  hsm::testing::TempDir mnt_;
  ShmDir shm_;
  std::string mountpoint_;
  FakeRemote remote_;
  std::unique_ptr<cache::CacheStore> cache_;
  std::unique_ptr<core::NamespacePopulator> populator_;
  std::unique_ptr<core::Hydrator> hydrator_;
  std::unique_ptr<MountGuard> guard_;
  std::unique_ptr<FuseFrontend> frontend_;
};

TEST_F(FuseFrontendTest, SequentialReadIsByteForByte) {
  EXPECT_EQ(readAll("big"), patternBytes(kChunk * 16 + 12345, 2));
  EXPECT_EQ(readAll("small", 7), patternBytes(1000, 1));
  EXPECT_EQ(readAll("empty"), "");
  EXPECT_EQ(xattr("big"), "full");
}

TEST_F(FuseFrontendTest, RandomPreadIsByteForByte) {
  const std::string want = patternBytes(kChunk * 32 + 7, 3);
  int fd = ::open(p("rand").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  std::mt19937_64 rng(42);
  std::string buf;
  for (int i = 0; i < 200; ++i) {
    uint64_t off = rng() % (want.size() + 100);
    size_t len = 1 + rng() % (3 * kChunk);
    buf.assign(len, '\0');
    ssize_t n = ::pread(fd, buf.data(), len, static_cast<off_t>(off));
    ASSERT_GE(n, 0) << std::strerror(errno);
    std::string expect = off < want.size() ? want.substr(off, len) : std::string();
    ASSERT_EQ(std::string(buf.data(), static_cast<size_t>(n)), expect)
        << "at " << off << "+" << len;
  }
  ::close(fd);
}

TEST_F(FuseFrontendTest, MmapIsByteForByte) {
  const std::string want = patternBytes(700000, 4);
  int fd = ::open(p("mapped").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  void* m = ::mmap(nullptr, want.size(), PROT_READ, MAP_SHARED, fd, 0);
  ASSERT_NE(m, MAP_FAILED) << std::strerror(errno);
  // Touch the end first: the pages fault in out of order.
  EXPECT_EQ(static_cast<const char*>(m)[want.size() - 1], want.back());
  EXPECT_EQ(std::memcmp(m, want.data(), want.size()), 0);
  ::munmap(m, want.size());
  ::close(fd);
}

TEST_F(FuseFrontendTest, ConcurrentReadersSeeTheSameBytes) {
  const std::string want = patternBytes(kChunk * 24 + 99, 7);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      int fd = ::open(p("conc").c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        bad++;
        return;
      }
      std::mt19937_64 rng(t);
      std::string buf(50000, '\0');
      for (int i = 0; i < 50; ++i) {
        uint64_t off = rng() % want.size();
        ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
        if (n < 0 ||
            std::string(buf.data(), static_cast<size_t>(n)) != want.substr(off, buf.size()))
          bad++;
      }
      ::close(fd);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad, 0);
}

TEST_F(FuseFrontendTest, ASlowRangeDoesNotStallReadsOfPresentRanges) {
  const std::string want = patternBytes(kChunk * 40, 5);
  // Opened before the slow read: an open of a file that is not full drops the kernel's
  // pages and so waits for reads of that file in flight (kernel behaviour).
  int fd = ::open(p("part").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0);  // no kernel readahead
  // Present in the cache, not in the kernel's page cache: a read must reach the daemon.
  ASSERT_TRUE(hydrator_->ensure("part", kChunk * 10, kChunk * 4).isOk());
  remote_.closeGate();
  std::thread slow([&] {
    int sfd = ::open(p("part").c_str(), O_RDONLY | O_CLOEXEC);
    char sbuf[4096];
    EXPECT_EQ(::pread(sfd, sbuf, sizeof sbuf, kChunk * 30), static_cast<ssize_t>(sizeof sbuf));
    EXPECT_EQ(std::string(sbuf, sizeof sbuf), want.substr(kChunk * 30, sizeof sbuf));
    ::close(sfd);
  });
  struct Opener {  // the gate opens even if an assertion below fails
    FakeRemote& r;
    std::thread& t;
    ~Opener() {
      r.openGate();
      t.join();
    }
  } opener{remote_, slow};
  ASSERT_TRUE(remote_.waitForBlockedReads(1));
  const int readsBefore = remote_.reads();
  char buf[4096];
  EXPECT_EQ(::pread(fd, buf, sizeof buf, kChunk * 11 + 100), static_cast<ssize_t>(sizeof buf));
  EXPECT_EQ(std::string(buf, sizeof buf), want.substr(kChunk * 11 + 100, sizeof buf));
  EXPECT_EQ(remote_.reads(), readsBefore);
  ::close(fd);
}

TEST_F(FuseFrontendTest, LookupOfADeepPathListsOnlyTheDirectoriesOnTheWay) {
  EXPECT_EQ(remote_.lists(), 1);  // the root, at start
  EXPECT_EQ(dirState("a"), cache::kDirUnlisted);
  struct stat st {};
  ASSERT_EQ(::stat(p("a/b/c/deep.txt").c_str(), &st), 0) << std::strerror(errno);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_size, 13);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'700'000'000);
  EXPECT_EQ(remote_.lists(), 4);  // root, a, a/b, a/b/c
  EXPECT_EQ(dirState("a/b/c"), cache::kDirListed);
  EXPECT_EQ(dirState("other"), cache::kDirUnlisted);
  EXPECT_EQ(xattr("a"), "listed");
  EXPECT_EQ(xattr("other"), "unlisted");
  EXPECT_EQ(::stat(p("a/b/nope").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(readAll("a/b/c/deep.txt"), "deep content\n");
  EXPECT_EQ(remote_.lists(), 4);
}

TEST_F(FuseFrontendTest, WritesAreRefusedWithErofs) {
  auto expectErofs = [](int rc, const char* what) {
    EXPECT_EQ(rc, -1) << what;
    EXPECT_EQ(errno, EROFS) << what << ": " << std::strerror(errno);
  };
  expectErofs(::open(p("small").c_str(), O_WRONLY | O_CLOEXEC), "open O_WRONLY");
  expectErofs(::open(p("small").c_str(), O_RDWR | O_CLOEXEC), "open O_RDWR");
  expectErofs(::open(p("new").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644), "create");
  expectErofs(::mkdir(p("newdir").c_str(), 0755), "mkdir");
  expectErofs(::unlink(p("small").c_str()), "unlink");
  expectErofs(::rename(p("small").c_str(), p("renamed").c_str()), "rename");
  expectErofs(::truncate(p("small").c_str(), 0), "truncate");
  expectErofs(::chmod(p("small").c_str(), 0600), "chmod");
  expectErofs(::symlink("x", p("newlink").c_str()), "symlink");
  expectErofs(::setxattr(p("small").c_str(), "user.x", "1", 1, 0), "setxattr");
  EXPECT_EQ(readAll("small"), patternBytes(1000, 1));
}

TEST_F(FuseFrontendTest, ReaddirShowsTheListing) {
  auto names = [&](const std::string& rel) {
    std::set<std::string> out;
    DIR* d = ::opendir(p(rel).c_str());
    EXPECT_NE(d, nullptr) << rel << ": " << std::strerror(errno);
    if (!d) return out;
    while (struct dirent* de = ::readdir(d)) out.insert(de->d_name);
    ::closedir(d);
    return out;
  };
  EXPECT_EQ(names(""),
            (std::set<std::string>{".", "..", "a", "other", "small", "big", "rand", "mapped",
                                   "part", "failing", "conc", "empty", "link"}));
  EXPECT_EQ(dirState("other"), cache::kDirUnlisted);
  EXPECT_EQ(names("other"), (std::set<std::string>{".", "..", "x"}));  // opendir lists it
  EXPECT_EQ(dirState("other"), cache::kDirListed);
  struct stat st {};
  ASSERT_EQ(::lstat(p("link").c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  char target[64] = {};
  ASSERT_EQ(::readlink(p("link").c_str(), target, sizeof target - 1), 5);
  EXPECT_STREQ(target, "small");
  ASSERT_EQ(::stat(p("link").c_str(), &st), 0);  // followed by the kernel
  EXPECT_EQ(st.st_size, 1000);
  struct statvfs sv {};
  ASSERT_EQ(::statvfs(mountpoint_.c_str(), &sv), 0);
  EXPECT_GT(sv.f_bsize, 0u);
}

TEST_F(FuseFrontendTest, StateXattrFollowsTheContent) {
  EXPECT_EQ(xattr("small"), "empty");
  EXPECT_EQ(xattr("part"), "empty");
  char list[128];
  ssize_t n = ::listxattr(p("small").c_str(), list, sizeof list);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(list, static_cast<size_t>(n)), std::string("user.fanhsm.state", 18));
  EXPECT_EQ(::getxattr(p("small").c_str(), "user.other", list, sizeof list), -1);
  EXPECT_EQ(errno, ENODATA);
  EXPECT_EQ(::getxattr(p("small").c_str(), "user.fanhsm.state", list, 2), -1);
  EXPECT_EQ(errno, ERANGE);

  int fd = ::open(p("part").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  char buf[100];
  ASSERT_EQ(::pread(fd, buf, sizeof buf, kChunk * 10), 100);
  EXPECT_EQ(std::string(buf, 100), patternBytes(kChunk * 40, 5).substr(kChunk * 10, 100));
  ::close(fd);
  EXPECT_EQ(xattr("part"), "partial");
  readAll("small");
  EXPECT_EQ(xattr("small"), "full");
  EXPECT_EQ(xattr(""), "listed");
}

TEST_F(FuseFrontendTest, FetchFailuresAreEioNeverZeros) {
  remote_.failNextReads(1000, ETIMEDOUT);
  int fd = ::open(p("failing").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  char buf[4096];
  EXPECT_EQ(::pread(fd, buf, sizeof buf, 0), -1);
  EXPECT_EQ(errno, EIO);
  remote_.failNextReads(0);
  ASSERT_EQ(::pread(fd, buf, sizeof buf, 0), static_cast<ssize_t>(sizeof buf));
  EXPECT_EQ(std::string(buf, sizeof buf), patternBytes(kChunk * 2, 6).substr(0, sizeof buf));
  ::close(fd);
  EXPECT_GT(frontend_->stats().denied, 0u);
}

TEST_F(FuseFrontendTest, ASecondMountOfTheCacheFetchesNothingAgain) {
  const std::string want = patternBytes(kChunk * 16 + 12345, 2);
  ASSERT_EQ(readAll("big"), want);
  ASSERT_EQ(readAll("a/b/c/deep.txt"), "deep content\n");
  const int reads = remote_.reads();
  const int lists = remote_.lists();
  closeAll();
  EXPECT_FALSE(isMounted(mountpoint_));
  openAll();
  mount();
  EXPECT_EQ(xattr("big"), "full");
  EXPECT_EQ(readAll("big"), want);
  EXPECT_EQ(readAll("a/b/c/deep.txt"), "deep content\n");
  EXPECT_EQ(remote_.reads(), reads);
  EXPECT_EQ(remote_.lists(), lists);  // listings are persistent too
}

TEST_F(FuseFrontendTest, UnmountOfABusyMountIsEbusyUnlessLazy) {
  int fd = ::open(p("small").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  Status s = frontend_->unmount(false);
  EXPECT_EQ(s.code(), EBUSY) << s.message();
  EXPECT_NE(s.message().find(mountpoint_), std::string::npos);
  EXPECT_TRUE(isMounted(mountpoint_));
  ::close(fd);
  s = frontend_->unmount(false);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_FALSE(isMounted(mountpoint_));
  EXPECT_TRUE(frontend_->waitUntilUnused(std::chrono::seconds(10)));
}

TEST_F(FuseFrontendTest, LazyUnmountKeepsServingOpenFilesUntilStop) {
  int fd = ::open(p("big").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(frontend_->unmount(true).isOk());
  EXPECT_FALSE(isMounted(mountpoint_));
  char buf[4096];
  ASSERT_EQ(::pread(fd, buf, sizeof buf, kChunk * 3), static_cast<ssize_t>(sizeof buf));
  EXPECT_EQ(std::string(buf, sizeof buf),
            patternBytes(kChunk * 16 + 12345, 2).substr(kChunk * 3, 4096));
  EXPECT_FALSE(frontend_->waitUntilUnused(std::chrono::seconds(0)));
  frontend_->stop();  // the file is still open: its connection is closed
  EXPECT_EQ(::pread(fd, buf, sizeof buf, kChunk * 15), -1);
  EXPECT_EQ(errno, ENOTCONN);
  ::close(fd);
}

}  // namespace
}  // namespace hsm::frontend
