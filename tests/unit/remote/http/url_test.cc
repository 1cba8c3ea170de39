#include "remote/http/url.h"

#include <gtest/gtest.h>

namespace hsm::remote::http {
namespace {

TEST(UrlTest, ParsesAbsoluteHttpUrls) {
  auto u = parseUrl("http://User:pw@Example.ORG:80/a/b/?q#f");
  ASSERT_TRUE(u.has_value());
  EXPECT_EQ(u->scheme, "http");
  EXPECT_EQ(u->authority, "example.org");  // userinfo and default port dropped
  EXPECT_EQ(u->path, "/a/b/");
  EXPECT_TRUE(u->hasQuery);
  EXPECT_TRUE(u->hasFragment);
  EXPECT_EQ(u->origin(), "http://example.org");
  EXPECT_EQ(parseUrl("https://h:443")->authority, "h");
  EXPECT_EQ(parseUrl("https://h:443")->path, "/");
  EXPECT_EQ(parseUrl("https://h:8443/x")->authority, "h:8443");
  EXPECT_EQ(parseUrl("http://[::1]:8080/")->authority, "[::1]:8080");
  EXPECT_FALSE(parseUrl("ftp://h/").has_value());
  EXPECT_FALSE(parseUrl("http:///x").has_value());
  EXPECT_FALSE(parseUrl("http://h:/x").has_value());
  EXPECT_FALSE(parseUrl("/just/a/path").has_value());
  EXPECT_FALSE(parseUrl("").has_value());
}

TEST(UrlTest, ResolvesReferences) {
  auto base = *parseUrl("http://h:8080/a/b/");
  EXPECT_EQ(resolve(base, "c")->path, "/a/b/c");
  EXPECT_EQ(resolve(base, "c/")->path, "/a/b/c/");
  EXPECT_EQ(resolve(base, "./c")->path, "/a/b/c");
  EXPECT_EQ(resolve(base, "../c")->path, "/a/c");
  EXPECT_EQ(resolve(base, "..")->path, "/a/");
  EXPECT_EQ(resolve(base, ".")->path, "/a/b/");
  EXPECT_EQ(resolve(base, "../../../../c")->path, "/c");
  EXPECT_EQ(resolve(base, "/x/./y/")->path, "/x/y/");
  EXPECT_EQ(resolve(base, "c//d")->path, "/a/b/c//d");
  EXPECT_EQ(resolve(base, "%2e%2e/c")->path, "/a/b/%2e%2e/c");  // encoded: not a dot segment
  EXPECT_EQ(resolve(base, "")->path, "/a/b/");
  EXPECT_EQ(resolve(base, "  c  ")->path, "/a/b/c");
  EXPECT_EQ(resolve(base, "./a:b")->path, "/a/b/a:b");
  EXPECT_TRUE(resolve(base, "c?x=1")->hasQuery);
  EXPECT_TRUE(resolve(base, "#top")->hasFragment);
  EXPECT_EQ(resolve(base, "//other:1/p")->authority, "other:1");
  EXPECT_EQ(resolve(base, "//other:1/p")->scheme, "http");
  EXPECT_EQ(resolve(base, "HTTPS://H/p")->scheme, "https");
  EXPECT_FALSE(resolve(base, "ftp://h/x").has_value());
  EXPECT_FALSE(resolve(base, "javascript:alert(1)").has_value());
  EXPECT_FALSE(resolve(base, "java\nscript:alert(1)").has_value());
  EXPECT_FALSE(resolve(base, "a:b").has_value());  // a scheme "a:", as browsers read it
  EXPECT_FALSE(resolve(base, std::string(9000, 'x')).has_value());
}

TEST(UrlTest, RemovesDotSegments) {
  EXPECT_EQ(removeDotSegments("/a/b/.."), "/a/");
  EXPECT_EQ(removeDotSegments("/a/b/../c"), "/a/c");
  EXPECT_EQ(removeDotSegments("/.."), "/");
  EXPECT_EQ(removeDotSegments("/"), "/");
  EXPECT_EQ(removeDotSegments(""), "/");
  EXPECT_EQ(removeDotSegments("/a/./b/."), "/a/b/");
  EXPECT_EQ(removeDotSegments("/a//b"), "/a//b");
  EXPECT_EQ(removeDotSegments("/a/..."), "/a/...");
}

TEST(UrlTest, PercentDecodingAndEncoding) {
  EXPECT_EQ(percentDecode("a%20b%2F%2f"), "a b//");
  EXPECT_EQ(percentDecode("%C3%a9"), "\xC3\xA9");
  EXPECT_EQ(percentDecode("%00"), std::string(1, '\0'));
  EXPECT_EQ(percentDecode("plain+plus"), "plain+plus");  // '+' is not a space in paths
  EXPECT_FALSE(percentDecode("a%2").has_value());
  EXPECT_FALSE(percentDecode("%").has_value());
  EXPECT_FALSE(percentDecode("%g0").has_value());
  EXPECT_EQ(percentEncode("a b/é~-._?#%"), "a%20b%2F%C3%A9~-._%3F%23%25");
  const std::string all = [] {
    std::string s;
    for (int c = 0; c < 256; ++c) s.push_back(static_cast<char>(c));
    return s;
  }();
  EXPECT_EQ(percentDecode(percentEncode(all)), all);
}

TEST(UrlTest, DecodesPathSegments) {
  auto p = decodePath("/a/b%20c/");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->segments, (std::vector<std::string>{"a", "b c"}));
  EXPECT_TRUE(p->trailingSlash);
  p = decodePath("/x%2Fy");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->segments, (std::vector<std::string>{"x/y"}));  // one segment, decoded
  EXPECT_FALSE(p->trailingSlash);
  EXPECT_TRUE(decodePath("/")->segments.empty());
  EXPECT_EQ(decodePath("/a//b")->segments, (std::vector<std::string>{"a", "", "b"}));
  EXPECT_FALSE(decodePath("/a/%zz/").has_value());
}

}  // namespace
}  // namespace hsm::remote::http
