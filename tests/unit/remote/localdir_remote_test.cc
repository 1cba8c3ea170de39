#include "remote/localdir/localdir_remote.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include <gtest/gtest.h>

#include "temp_dir.h"

namespace hsm::remote {
namespace {

class StringSink final : public ByteSink {
 public:
  Status write(uint64_t, const char* data, size_t length) override {
    out.append(data, length);
    return Status::ok();
  }
  std::string out;
};

class LocalDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() + "/src";
    ::mkdir(root_.c_str(), 0755);
    ::mkdir((root_ + "/sub").c_str(), 0700);
    std::ofstream(root_ + "/sub/file") << "hello world";
    ASSERT_EQ(::symlink("/etc/passwd", (root_ + "/escape").c_str()), 0);
    ASSERT_EQ(::mkfifo((root_ + "/fifo").c_str(), 0600), 0);
    auto r = LocalDirRemote::open(root_);
    ASSERT_TRUE(r.isOk());
    remote_ = std::move(*r);
  }
  hsm::testing::TempDir tmp_;
  std::string root_;
  std::unique_ptr<LocalDirRemote> remote_;
};

TEST_F(LocalDirTest, ListsEntriesWithAttributesAndSkipsSpecialFiles) {
  auto l = remote_->list("", "");
  ASSERT_TRUE(l.isOk());
  ASSERT_EQ(l->entries.size(), 2u);
  EXPECT_EQ(l->entries[0].name, "escape");
  EXPECT_EQ(l->entries[0].type, EntryType::kSymlink);
  EXPECT_EQ(l->entries[0].linkTarget, "/etc/passwd");
  EXPECT_EQ(l->entries[1].name, "sub");
  EXPECT_EQ(l->entries[1].mode, 0700u);
  EXPECT_EQ(l->skipped.size(), 1u);  // the fifo
  auto s = remote_->list("sub", "");
  ASSERT_TRUE(s.isOk());
  ASSERT_EQ(s->entries.size(), 1u);
  EXPECT_EQ(s->entries[0].size, 11u);
  EXPECT_FALSE(s->entries[0].version.empty());
}

TEST_F(LocalDirTest, ReadsRangesAndChecksVersion) {
  auto s = remote_->list("sub", "");
  ASSERT_TRUE(s.isOk());
  StringSink sink;
  ASSERT_TRUE(remote_->read("sub/file", s->entries[0].version, 6, 100, sink).isOk());
  EXPECT_EQ(sink.out, "world");
  StringSink stale;
  EXPECT_EQ(remote_->read("sub/file", "other", 0, 5, stale).code(), ESTALE);
  ::unlink((root_ + "/sub/file").c_str());
  StringSink gone;
  EXPECT_EQ(remote_->read("sub/file", s->entries[0].version, 0, 5, gone).code(), ENOENT);
}

// Issue #14, item 8: a FIFO put where a listed file was made the read block in open()
// until a writer came (forever); a socket answered ENXIO. Both now fail that file alone.
TEST_F(LocalDirTest, SpecialFileWhereAFileWasFailsAtOnce) {
  auto s = remote_->list("sub", "");
  ASSERT_TRUE(s.isOk());
  const std::string version = s->entries[0].version;
  ASSERT_EQ(::unlink((root_ + "/sub/file").c_str()), 0);
  ASSERT_EQ(::mkfifo((root_ + "/sub/file").c_str(), 0644), 0);
  StringSink fifo;  // on the old code this call never returned
  EXPECT_EQ(remote_->read("sub/file", version, 0, 5, fifo).code(), ENOENT);
  EXPECT_TRUE(fifo.out.empty());
  ASSERT_EQ(::unlink((root_ + "/sub/file").c_str()), 0);
  const int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  const std::string sp = root_ + "/sub/file";
  ASSERT_LT(sp.size(), sizeof addr.sun_path);
  std::memcpy(addr.sun_path, sp.c_str(), sp.size() + 1);
  ASSERT_EQ(::bind(sock, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr), 0);
  StringSink socket;
  EXPECT_EQ(remote_->read("sub/file", version, 0, 5, socket).code(), ENOENT);
  ::close(sock);
}

TEST_F(LocalDirTest, NeverFollowsSymlinks) {
  StringSink sink;
  EXPECT_FALSE(remote_->read("escape", "x", 0, 10, sink).isOk());
  EXPECT_FALSE(remote_->list("escape", "").isOk());
  EXPECT_TRUE(sink.out.empty());
}

}  // namespace
}  // namespace hsm::remote
