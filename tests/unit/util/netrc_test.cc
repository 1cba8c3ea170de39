#include "util/netrc.h"

#include <gtest/gtest.h>

namespace hsm {
namespace {

TEST(NetrcTest, MachineThenDefault) {
  const char* text =
      "machine other.example login bob password b0b\n"
      "machine mirror.example\n  login alice\n  password \"s3cr3t pw\"\n"
      "macdef init\ncd /pub\nmachine mirror.example login mallory password x\n\n"
      "default login anonymous password guest@\n";
  EXPECT_EQ(netrcCredentials(text, "mirror.example"), "alice:s3cr3t pw");
  EXPECT_EQ(netrcCredentials(text, "other.example"), "bob:b0b");
  EXPECT_EQ(netrcCredentials(text, "elsewhere"), "anonymous:guest@");  // default
  EXPECT_EQ(netrcCredentials("machine a login x password y", "b"), std::nullopt);
  EXPECT_EQ(netrcCredentials("machine a password y", "a"), std::nullopt);  // no login
  EXPECT_EQ(netrcCredentials("login x password y machine", "x"), std::nullopt);  // truncated
  EXPECT_EQ(netrcCredentials("machine a login \"q\\\"uote\" password p", "a"), "q\"uote:p");
}

}  // namespace
}  // namespace hsm
