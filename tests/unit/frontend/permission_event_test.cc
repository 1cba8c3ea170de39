#include "frontend/fanotify/permission_event.h"

#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include "frontend/fanotify/fanotify_defs.h"

namespace hsm::frontend {
namespace {

// A socketpair stands in for the fanotify group: what the event writes is the response.
class PermissionEventTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv_), 0); }
  void TearDown() override {
    ::close(sv_[0]);
    ::close(sv_[1]);
  }
  int eventFd() { return ::dup(0); }
  fanotify_response readResponse() {
    fanotify_response r{};
    EXPECT_EQ(::read(sv_[1], &r, sizeof r), static_cast<ssize_t>(sizeof r));
    return r;
  }
  int sv_[2];
  std::atomic<uint64_t> denied_{0}, pending_{0};
};

TEST_F(PermissionEventTest, AllowAnswersOnceWithTheEventFd) {
  int fd = eventFd();
  {
    PermissionEvent ev(sv_[0], fd, FAN_PRE_ACCESS, true, &denied_, &pending_);
    EXPECT_EQ(pending_, 1u);
    ev.allow();
    EXPECT_TRUE(ev.answered());
  }
  auto r = readResponse();
  EXPECT_EQ(r.fd, fd);
  EXPECT_EQ(r.response, static_cast<uint32_t>(FAN_ALLOW));
  EXPECT_EQ(pending_, 0u);
  EXPECT_EQ(denied_, 0u);
}

TEST_F(PermissionEventTest, UnansweredEventIsDeniedWithEioOnDestruction) {
  int fd = eventFd();
  { PermissionEvent ev(sv_[0], fd, FAN_PRE_ACCESS, true, &denied_, &pending_); }
  auto r = readResponse();
  EXPECT_EQ(r.fd, fd);
  EXPECT_EQ(r.response, static_cast<uint32_t>(FAN_DENY_ERRNO(EIO)));
  EXPECT_EQ(denied_, 1u);
  EXPECT_EQ(pending_, 0u);
}

TEST_F(PermissionEventTest, MovedEventAnswersOnlyOnce) {
  int fd = eventFd();
  {
    PermissionEvent a(sv_[0], fd, FAN_PRE_ACCESS, true, &denied_, &pending_);
    PermissionEvent b(std::move(a));
    b.deny(ENOSPC);
  }
  auto r = readResponse();
  EXPECT_EQ(r.response, static_cast<uint32_t>(FAN_DENY_ERRNO(ENOSPC)));
  char extra;
  EXPECT_EQ(::recv(sv_[1], &extra, 1, MSG_DONTWAIT), -1);  // nothing else was written
}

TEST_F(PermissionEventTest, NonPreContentGroupsDenyWithoutErrno) {
  int fd = eventFd();
  { PermissionEvent ev(sv_[0], fd, FAN_OPEN_PERM, false, &denied_, &pending_); }
  EXPECT_EQ(readResponse().response, static_cast<uint32_t>(FAN_DENY));
}

TEST_F(PermissionEventTest, ErrnosOutsideTheKernelsListBecomeEio) {
  {
    PermissionEvent ev(sv_[0], eventFd(), FAN_PRE_ACCESS, true, &denied_, &pending_);
    ev.deny(ENOENT);
  }
  EXPECT_EQ(readResponse().response, static_cast<uint32_t>(FAN_DENY_ERRNO(EIO)));
  EXPECT_EQ(fanotifyErrno(ESTALE), EIO);
  EXPECT_EQ(fanotifyErrno(ENOSPC), ENOSPC);
  EXPECT_EQ(fanotifyErrno(EACCES), EIO);
}

}  // namespace
}  // namespace hsm::frontend
