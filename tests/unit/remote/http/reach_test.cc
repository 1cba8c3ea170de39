// Issue #15, item 4: which redirects an HTTP source may follow, and where to.
#include "remote/http/http_remote.h"

#include <gtest/gtest.h>

namespace hsm::remote {
namespace {

HttpRemote::Reach reachOf(const std::string& url, HttpOptions o = {}) {
  auto r = HttpRemote::open(url, std::move(o));
  EXPECT_TRUE(r.isOk()) << r.status().message();
  return (*r)->reach();
}

TEST(HttpReachTest, SameOriginOnlyByDefault) {
  auto r = reachOf("http://127.0.0.1:8080/pub/");
  EXPECT_EQ(r.origin, "http://127.0.0.1:8080");
  EXPECT_TRUE(r.loopback);  // the source is on loopback: it may be reached there
  EXPECT_EQ(r.refusal("http://127.0.0.1:8080/other/f", "127.0.0.1"), "");
  EXPECT_NE(r.refusal("http://127.0.0.1:9090/f", "127.0.0.1"), "");  // another port
  EXPECT_NE(r.refusal("https://127.0.0.1:8080/f", "127.0.0.1"), "");  // another scheme
  EXPECT_NE(r.refusal("file:///etc/passwd", ""), "");
}

TEST(HttpReachTest, NoLoopbackOrLinkLocalUnlessTheSourceIsThere) {
  HttpOptions o;
  o.redirectsAnywhere = true;
  auto r = reachOf("http://fanhsm-test.invalid/pub/", o);  // resolves nowhere
  EXPECT_TRUE(r.anyOrigin);
  EXPECT_FALSE(r.loopback);
  EXPECT_EQ(r.refusal("http://mirror.example/f", "203.0.113.7"), "");
  for (const char* ip : {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "0.0.0.0"}) {
    EXPECT_NE(r.refusal("http://mirror.example/f", ip), "") << ip;
  }
  for (const char* ip : {"169.254.169.254", "fe80::1", "::ffff:169.254.1.1"}) {
    EXPECT_NE(r.refusal("http://mirror.example/f", ip), "") << ip;
  }
}

TEST(HttpReachTest, OtherOriginsNeverWithCredentialsOrHeaders) {
  HttpOptions withHeader;
  withHeader.redirectsAnywhere = true;
  withHeader.headers = {"PRIVATE-TOKEN: x"};
  EXPECT_FALSE(reachOf("http://127.0.0.1:8080/", withHeader).anyOrigin);
  HttpOptions withUser;
  withUser.redirectsAnywhere = true;
  withUser.user = "a:b";
  EXPECT_FALSE(reachOf("http://127.0.0.1:8080/", withUser).anyOrigin);
  HttpOptions inUrl;
  inUrl.redirectsAnywhere = true;
  EXPECT_FALSE(reachOf("http://a:b@127.0.0.1:8080/", inUrl).anyOrigin);
}

}  // namespace
}  // namespace hsm::remote
