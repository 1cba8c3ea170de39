#include "remote/http/listing_parser.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>

#include "remote/http/url.h"

namespace hsm::remote::http {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::map<std::string, std::string> readMeta(const fs::path& p) {
  std::map<std::string, std::string> m;
  std::istringstream in(slurp(p));
  std::string line;
  while (std::getline(in, line)) {
    auto tab = line.find('\t');
    if (tab != std::string::npos) m[line.substr(0, tab)] = line.substr(tab + 1);
  }
  return m;
}

struct Expected {
  std::string name;
  bool isDir;
  std::optional<uint64_t> size;
  int64_t mtime;
};

std::vector<Expected> readExpected(const fs::path& p) {
  std::vector<Expected> out;
  std::istringstream in(slurp(p));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string name, kind, size, mtime;
    std::getline(ls, name, '\t');
    std::getline(ls, kind, '\t');
    std::getline(ls, size, '\t');
    std::getline(ls, mtime, '\t');
    out.push_back({name, kind == "d",
                   size == "-" ? std::nullopt : std::optional<uint64_t>(std::stoull(size)),
                   std::stoll(mtime)});
  }
  return out;
}

// Every page captured from a real server (tests/corpus/capture_listings.py) parses to
// exactly the tree it was served from.
TEST(ListingCorpusTest, RealServerPagesParseToTheTreeServed) {
  int cases = 0;
  for (const auto& dir : fs::directory_iterator(HSM_CORPUS_DIR)) {
    if (!dir.is_directory() || dir.path().filename() == "hostile") continue;
    SCOPED_TRACE(dir.path().filename().string());
    auto meta = readMeta(dir.path() / "meta");
    fs::path page = fs::exists(dir.path() / "page.json") ? dir.path() / "page.json" : dir.path() / "page.html";
    auto result = parseListing(meta["url"], meta["content-type"], slurp(page));
    auto expected = readExpected(dir.path() / "expected");
    ASSERT_EQ(result.entries.size(), expected.size());
    std::string server = dir.path().filename().string();
    bool printsDates = server != "apache-plain" && server != "python";
    for (size_t i = 0; i < expected.size(); ++i) {
      const auto& e = result.entries[i];
      EXPECT_EQ(e.name, expected[i].name);
      EXPECT_EQ(e.isDir, expected[i].isDir) << e.name;
      if (server == "nginx-json") {
        EXPECT_EQ(e.size, expected[i].size) << e.name;
        ASSERT_TRUE(e.mtimeSec.has_value()) << e.name;
        EXPECT_EQ(*e.mtimeSec, expected[i].mtime) << e.name;
      } else {
        EXPECT_FALSE(e.size.has_value()) << "HTML sizes are not trusted: " << e.name;
      }
      if (printsDates) {
        ASSERT_TRUE(e.mtimeSec.has_value()) << e.name;
        EXPECT_EQ(*e.mtimeSec / 60, expected[i].mtime / 60) << e.name;  // minutes printed
      }
    }
    EXPECT_TRUE(result.rejected.empty()) << result.rejected.front();
    ++cases;
  }
  EXPECT_GE(cases, 8);
}

ListingResult parseHtml(const std::string& links) {
  return parseListing("http://127.0.0.1:8080/pub/dir/", "text/html",
                      "<html><body><pre>" + links + "</pre></body></html>");
}

std::vector<std::string> names(const ListingResult& r) {
  std::vector<std::string> out;
  for (const auto& e : r.entries) out.push_back(e.name);
  return out;
}

TEST(ListingHostileTest, OnlyDirectChildrenOnTheSameOriginSurvive) {
  auto r = parseHtml(
      "<a href=\"../\">up</a><a href=\"./\">self</a><a href=\"/pub/\">parent</a>"
      "<a href=\"?C=N;O=D\">sort</a><a href=\"#top\">anchor</a>"
      "<a href=\"http://evil.example/x\">other host</a><a href=\"//evil.example/y\">scheme-rel</a>"
      "<a href=\"https://127.0.0.1:8080/pub/dir/tls\">other scheme</a>"
      "<a href=\"javascript:alert(1)\">js</a><a href=\"mailto:a@b\">mail</a>"
      "<a href=\"a/b\">deep</a><a href=\"..%2Fescape\">encoded slash</a>"
      "<a href=\"nul%00byte\">nul</a><a href=\"bad%FFutf8\">utf8</a><a href=\"bad%zz\">pct</a>"
      "<a href=\"%2E%2E/\">dotdot</a><a href=\"%2e\">dot</a>"
      "<a href=\"ok\">ok</a><a href=\"ok\">dup</a><a href=\"/pub/dir/abs\">abs</a>"
      "<a href=\"http://127.0.0.1:8080/pub/dir/full\">full</a><a href=\"sub/\">dir</a>"
      "<a href=\"x/../y\">dots resolved</a>");
  EXPECT_EQ(names(r), (std::vector<std::string>{"abs", "full", "ok", "sub", "y"}));
  EXPECT_TRUE(r.entries[3].isDir);
  std::string all;
  for (const auto& s : r.rejected) all += s + "\n";
  for (const char* reason : {"another origin", "not an http(s) link", "not a direct child",
                             "NUL", "UTF-8", "percent-encoding", "duplicate"}) {
    EXPECT_NE(all.find(reason), std::string::npos) << reason << " in\n" << all;
  }
}

TEST(ListingHostileTest, OverLongNamesAreRejected) {
  std::string longName(256, 'a');
  auto r = parseHtml("<a href=\"" + longName + "\">x</a><a href=\"" + std::string(255, 'b') + "\">y</a>");
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries[0].name, std::string(255, 'b'));
  EXPECT_EQ(r.rejected.size(), 1u);
}

TEST(ListingHostileTest, MalformedAndTruncatedInputNeverCrash) {
  EXPECT_TRUE(parseHtml("<a href=\"x\"").entries.size() <= 1);
  auto j = parseListing("http://h/d/", "application/json", "[{\"name\":\"a\",\"type\":\"file\",\"size\":");
  EXPECT_TRUE(j.entries.empty());
  EXPECT_FALSE(j.rejected.empty());
  auto j2 = parseListing("http://h/d/", "application/json",
                         "[{\"name\":\"..\",\"type\":\"directory\"},{\"name\":\"a/b\",\"type\":\"file\"},"
                         "{\"name\":5},{\"name\":\"ok\",\"type\":\"file\",\"size\":-3},"
                         "{\"name\":\"s\",\"type\":\"other\"}]");
  ASSERT_EQ(names(j2), std::vector<std::string>{"ok"});
  EXPECT_FALSE(j2.entries[0].size.has_value());
  EXPECT_EQ(j2.rejected.size(), 4u);
  EXPECT_TRUE(parseListing("not a url", "", "<a href=x>").entries.empty());
  std::string nested;
  for (int i = 0; i < 20000; ++i) nested += "<div>";
  nested += "<a href=\"deepest\">x</a>";
  EXPECT_EQ(names(parseHtml(nested)), std::vector<std::string>{"deepest"});
}

TEST(ListingHostileTest, HugeListingIsParsedInFull) {
  std::string page;
  page.reserve(200000 * 40);
  for (int i = 0; i < 200000; ++i) page += "<a href=\"file" + std::to_string(i) + "\">f</a>\n";
  auto r = parseHtml(page);
  EXPECT_EQ(r.entries.size(), 200000u);
}

TEST(ListingDateTest, FormatsServersPrint) {
  EXPECT_EQ(parseListingDate("15-Nov-2023 01:16"), 1700010960);
  EXPECT_EQ(parseListingDate("  2023-11-15 01:16  "), 1700010960);
  EXPECT_EQ(parseListingDate("2023-Nov-15 01:16:23"), 1700010983);
  EXPECT_EQ(parseListingDate("Wed, 15 Nov 2023 01:16:23 GMT"), 1700010983);
  EXPECT_FALSE(parseListingDate("- &nbsp;").has_value());
  EXPECT_FALSE(parseListingDate("99-Foo-2023 01:16").has_value());
  EXPECT_FALSE(parseListingDate("2023-13-45 99:99").has_value());
}

TEST(UrlTest, ResolveAndDecode) {
  auto base = parseUrl("http://User:pw@Example.ORG:80/a/b/?q#f");
  ASSERT_TRUE(base.has_value());
  EXPECT_EQ(base->authority, "example.org:80");
  EXPECT_EQ(base->path, "/a/b/");
  EXPECT_EQ(resolve(*base, "c")->path, "/a/b/c");
  EXPECT_EQ(resolve(*base, "../c")->path, "/a/c");
  EXPECT_EQ(resolve(*base, "../../../../c")->path, "/c");
  EXPECT_EQ(resolve(*base, "/x/./y/")->path, "/x/y/");
  EXPECT_TRUE(resolve(*base, "c?x=1")->hasQuery);
  EXPECT_FALSE(resolve(*base, "ftp://h/x").has_value());
  EXPECT_EQ(percentDecode("a%20b%2F"), "a b/");
  EXPECT_FALSE(percentDecode("a%2").has_value());
  EXPECT_FALSE(percentDecode("%g0").has_value());
  EXPECT_EQ(removeDotSegments("/a/b/.."), "/a/");
}

}  // namespace
}  // namespace hsm::remote::http
