// Listing parser tests: every page captured from a real server (tests/corpus/listings/
// <server>/<case>.*, see capture.py there) must parse to exactly the tree it was served from;
// hand-written hostile pages (hostile/) must give exactly the expected entries and report
// every rejected link; generated pathological pages must finish quickly.
#include "remote/http/listing_parser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <tuple>

#include "remote/http/html_filter.h"
#include "util/rel_path.h"

namespace hsm::remote::http {
namespace {

namespace fs = std::filesystem;

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

struct Expected {
  std::string name;
  bool isDir = false;
  std::optional<uint64_t> size;
  std::optional<int64_t> mtime;
};

// name<TAB>d|f<TAB>size-or-?<TAB>mtime-or-?
std::vector<Expected> readExpected(const fs::path& p) {
  std::vector<Expected> out;
  for (const auto& line : lines(slurp(p))) {
    std::vector<std::string> f;
    std::istringstream ls(line);
    std::string field;
    while (std::getline(ls, field, '\t')) f.push_back(field);
    EXPECT_EQ(f.size(), 4u) << p << ": " << line;
    if (f.size() != 4) continue;
    Expected e;
    e.name = f[0];
    e.isDir = f[1] == "d";
    if (f[2] != "?") e.size = std::stoull(f[2]);
    if (f[3] != "?") e.mtime = std::stoll(f[3]);
    out.push_back(std::move(e));
  }
  return out;
}

struct Case {
  std::string server;  // directory under the corpus
  std::string name;    // file stem
  fs::path page;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.server << "/" << c.name; }

std::vector<Case> corpusCases(bool hostile) {
  std::vector<Case> out;
  for (const auto& dir : fs::directory_iterator(HSM_CORPUS_DIR)) {
    if (!dir.is_directory() || (dir.path().filename() == "hostile") != hostile) continue;
    for (const auto& f : fs::directory_iterator(dir.path())) {
      auto ext = f.path().extension();
      if (ext != ".html" && ext != ".json") continue;
      out.push_back({dir.path().filename().string(), f.path().stem().string(), f.path()});
    }
  }
  std::sort(out.begin(), out.end(), [](const Case& a, const Case& b) {
    return std::tie(a.server, a.name) < std::tie(b.server, b.name);
  });
  return out;
}

std::string caseName(const testing::TestParamInfo<Case>& info) {
  std::string s = info.param.server + "_" + info.param.name;
  for (auto& c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return s;
}

ListingResult parseCase(const Case& c) {
  auto url = lines(slurp(fs::path(c.page).replace_extension(".url")));
  EXPECT_EQ(url.size(), 1u);
  std::string type = c.page.extension() == ".json" ? "application/json" : "text/html";
  return parseListing(url.empty() ? "" : url[0], type, slurp(c.page));
}

// Servers that print minutes only; the others print seconds.
bool printsMinutes(const std::string& server) {
  return server.rfind("nginx-html", 0) == 0 || server.rfind("apache", 0) == 0;
}

std::string joined(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + "\n";
  return out;
}

void expectEntries(const ListingResult& r, const std::vector<Expected>& expected, bool minutes) {
  ASSERT_EQ(r.entries.size(), expected.size()) << "rejected:\n" << joined(r.rejected);
  for (size_t i = 0; i < expected.size(); ++i) {
    const auto& got = r.entries[i];
    const auto& want = expected[i];
    SCOPED_TRACE(want.name);
    EXPECT_EQ(got.name, want.name);
    EXPECT_EQ(got.isDir, want.isDir);
    EXPECT_EQ(got.size, want.size);  // approximate sizes must not appear as exact
    ASSERT_EQ(got.mtimeSec.has_value(), want.mtime.has_value());
    if (!want.mtime) continue;
    if (minutes) {
      EXPECT_EQ(*got.mtimeSec, *want.mtime / 60 * 60);
    } else {
      EXPECT_EQ(*got.mtimeSec, *want.mtime);
    }
  }
}

class RealServerListingTest : public testing::TestWithParam<Case> {};

TEST_P(RealServerListingTest, ParsesToTheTreeServed) {
  const Case& c = GetParam();
  auto r = parseCase(c);
  expectEntries(r, readExpected(fs::path(c.page).replace_extension(".expected")),
                printsMinutes(c.server));
  EXPECT_TRUE(r.rejected.empty()) << joined(r.rejected);
  ListingFormat want = c.server.rfind("nginx-json", 0) == 0 ? ListingFormat::kNginxJson
                       : c.server.rfind("nginx", 0) == 0    ? ListingFormat::kNginxHtml
                       : c.server.rfind("apache", 0) == 0   ? ListingFormat::kApache
                       : c.server.rfind("lighttpd", 0) == 0 ? ListingFormat::kLighttpd
                       : c.server.rfind("python", 0) == 0   ? ListingFormat::kPython
                                                            : ListingFormat::kGeneric;
  EXPECT_STREQ(formatName(r.detected), formatName(want));
}

INSTANTIATE_TEST_SUITE_P(Corpus, RealServerListingTest, testing::ValuesIn(corpusCases(false)),
                         caseName);

TEST(RealServerListingTest, CorpusCoversEveryServer) {
  auto cases = corpusCases(false);
  std::set<std::string> servers;
  for (const auto& c : cases) servers.insert(c.server);
  EXPECT_EQ(servers, (std::set<std::string>{"apache-fancy", "apache-plain", "apache-table",
                                            "lighttpd", "nginx-html-approx", "nginx-html-exact",
                                            "nginx-json", "python"}));
  EXPECT_GE(cases.size(), 24u);
}

class HostileListingTest : public testing::TestWithParam<Case> {};

// <case>.expected: exactly the entries that survive; <case>.rejects: lines that must each be
// (a prefix of / contained in) some rejected line.
TEST_P(HostileListingTest, OnlyTheExpectedEntriesSurviveAndRejectsAreReported) {
  const Case& c = GetParam();
  auto r = parseCase(c);
  expectEntries(r, readExpected(fs::path(c.page).replace_extension(".expected")),
                /*minutes=*/false);
  std::string all = joined(r.rejected);
  for (const auto& want : lines(slurp(fs::path(c.page).replace_extension(".rejects")))) {
    EXPECT_NE(all.find(want), std::string::npos) << "'" << want << "' not in\n" << all;
  }
  for (const auto& e : r.entries) EXPECT_TRUE(validateName(e.name, true).isOk()) << e.name;
}

INSTANTIATE_TEST_SUITE_P(Corpus, HostileListingTest, testing::ValuesIn(corpusCases(true)),
                         caseName);

const char* kBase = "http://127.0.0.1:8080/pub/dir/";

double secondsFor(const std::function<void()>& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(HostileListingTest, HugeListingIsParsedInFullAndQuickly) {
  // 200,000 entries in nginx's format, generated here rather than committed.
  std::string page =
      "<html>\n<head><title>Index of /pub/dir/</title></head>\n<body>\n"
      "<h1>Index of /pub/dir/</h1><hr><pre><a href=\"../\">../</a>\n";
  page.reserve(200000 * 110);
  for (int i = 0; i < 200000; ++i) {
    std::string n = "file" + std::to_string(i);
    page += "<a href=\"" + n + "\">" + n + "</a>                      15-Nov-2023 05:20   " +
            std::to_string(i) + "\n";
  }
  page += "</pre><hr></body>\n</html>\n";
  ListingResult r;
  double s = secondsFor([&] { r = parseListing(kBase, "text/html", page); });
  ASSERT_EQ(r.entries.size(), 200000u);
  EXPECT_EQ(r.detected, ListingFormat::kNginxHtml);
  EXPECT_TRUE(r.rejected.empty());
  EXPECT_EQ(r.entries[0].name, "file0");
  EXPECT_EQ(r.entries[1].name, "file1");
  EXPECT_EQ(r.entries[1].size, 1u);
  EXPECT_EQ(r.entries[1].mtimeSec, 1700025600);
  EXPECT_LT(s, 30.0);  // generous for sanitizer builds; seconds in a release build
}

TEST(HostileListingTest, RejectedReportIsBounded) {
  std::string page;
  for (int i = 0; i < 5000; ++i)
    page += "<a href=\"http://evil.example/" + std::to_string(i) + "\">x</a>";
  auto r = parseListing(kBase, "text/html", page);
  EXPECT_TRUE(r.entries.empty());
  ASSERT_EQ(r.rejected.size(), kMaxRejectedLines + 1);
  EXPECT_EQ(r.rejected.back(), "... and 4000 more rejected links");
}

// Shapes that make a tree builder quadratic (deep nesting, formatting-element cloning) stay
// fast because the page is filtered first.
TEST(HostileListingTest, PathologicalNestingStaysFast) {
  const std::vector<std::pair<std::string, std::string>> shapes = {
      {"<div>", ""},
      {"<table><tr><td>", ""},
      {"<pre>", ""},
      {"<b id=x>", "<p>t"},
      {"<a href=\"n\"><table><td>", ""},
      {"<svg><g>", ""},
      {"<select><option>", ""},
  };
  for (const auto& [open, tail] : shapes) {
    std::string page;
    for (int i = 0; i < 100000; ++i) page += open;
    for (int i = 0; i < 10000; ++i) page += tail;
    page += "<a href=\"deepest\">x</a>";
    ListingResult r;
    double s = secondsFor([&] { r = parseListing(kBase, "text/html", page); });
    EXPECT_LT(s, 20.0) << open;
    bool found = false;
    for (const auto& e : r.entries) found = found || e.name == "deepest";
    EXPECT_TRUE(found) << open;
  }
}

TEST(ListingParserTest, ControlCharactersInNamesAreKeptDecoded) {
  auto r = parseListing(kBase, "", "<a href=\"tab%09and%0Anewline\">x</a>");
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries[0].name, "tab\tand\nnewline");
}

TEST(ListingParserTest, BaseUrlVariants) {
  // Missing trailing slash, default port, encoded base in another hex case.
  auto r = parseListing("http://Host:80/a%c3%a9", "",
                        "<a href=\"/a%C3%A9/x\">x</a><a href=\"http://host/a\xC3\xA9/y/\">y</a>");
  ASSERT_EQ(r.entries.size(), 2u) << joined(r.rejected);
  EXPECT_EQ(r.entries[0].name, "x");
  EXPECT_EQ(r.entries[1].name, "y");
  EXPECT_TRUE(r.entries[1].isDir);
  EXPECT_TRUE(parseListing("not a url", "", "<a href=x>").entries.empty());
  EXPECT_FALSE(parseListing("ftp://h/d/", "", "<a href=x>").rejected.empty());
  EXPECT_FALSE(parseListing("http://h/%zz/", "", "<a href=x>").rejected.empty());
}

TEST(ListingParserTest, JsonChosenByContentTypeOrShape) {
  const std::string json = R"([{"name":"a","type":"file","size":3}])";
  EXPECT_EQ(parseListing(kBase, "application/json", json).detected, ListingFormat::kNginxJson);
  EXPECT_EQ(parseListing(kBase, "", "  \n" + json).detected, ListingFormat::kNginxJson);
  // A JSON content type on an HTML body (a misconfigured error page) is read as HTML.
  auto r = parseListing(kBase, "Application/JSON", "<a href=\"b\">b</a>");
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries[0].name, "b");
  EXPECT_FALSE(parseListing(kBase, "application/json", "").rejected.empty());
  EXPECT_FALSE(parseListing(kBase, "application/json", "{\"name\":\"a\"}").rejected.empty());
}

TEST(ListingParserTest, GenericPagesGiveNoSizesOrTimes) {
  auto r = parseListing(kBase, "text/html",
                        "<pre><a href=\"f\">f</a>  15-Nov-2023 05:20   1234\n</pre>");
  EXPECT_EQ(r.detected, ListingFormat::kGeneric);
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_FALSE(r.entries[0].size.has_value());
  EXPECT_FALSE(r.entries[0].mtimeSec.has_value());
}

TEST(ListingParserTest, NothingEscapesOnArbitraryBytes) {
  std::string junk;
  uint32_t x = 12345;
  for (int i = 0; i < 200000; ++i) {
    x = x * 1103515245 + 12345;
    junk.push_back(static_cast<char>("<>/\"'=a%#?&;: \n\x80\xff"[(x >> 16) % 18]));
  }
  for (const char* type : {"text/html", "application/json"}) {
    auto r = parseListing(kBase, type, junk);
    for (const auto& e : r.entries) EXPECT_TRUE(validateName(e.name, true).isOk()) << e.name;
  }
}

TEST(ListingDateTest, FormatsServersPrint) {
  size_t used = 0;
  EXPECT_EQ(parseListingDate("15-Nov-2023 01:16      1234", &used), 1700010960);
  EXPECT_EQ(used, 17u);
  EXPECT_EQ(parseListingDate("  2023-11-15 01:16  ", &used), 1700010960);
  EXPECT_EQ(used, 18u);
  EXPECT_EQ(parseListingDate("2023-11-15 01:16:23"), 1700010983);
  EXPECT_EQ(parseListingDate("2023-Nov-15 01:16:23"), 1700010983);
  EXPECT_EQ(parseListingDate("Wed, 15 Nov 2023 01:16:23 GMT"), 1700010983);
  EXPECT_EQ(parseListingDate("29-Feb-2024 00:00"), 1709164800);
  EXPECT_EQ(parseListingDate("01-Jan-1970 00:00"), 0);
  EXPECT_FALSE(parseListingDate("- &nbsp;").has_value());
  EXPECT_FALSE(parseListingDate("99-Foo-2023 01:16").has_value());
  EXPECT_FALSE(parseListingDate("2023-13-45 99:99").has_value());
  EXPECT_FALSE(parseListingDate("31-Apr-2023 01:16").has_value());
  EXPECT_FALSE(parseListingDate("Wed, 15 Nov 2023 01:16:23 CET").has_value());
  EXPECT_FALSE(parseListingDate("15-Nov-2023 01:1").has_value());
  EXPECT_FALSE(parseListingDate("").has_value());
}

TEST(ListingSizeTest, OnlyPlainByteCountsAreExact) {
  EXPECT_EQ(parseExactSize("0"), 0u);
  EXPECT_EQ(parseExactSize("1048577"), 1048577u);
  EXPECT_EQ(parseExactSize("18446744073709551615").has_value(), false);  // 20 digits
  EXPECT_EQ(parseExactSize("9999999999999999999"), 9999999999999999999u);
  for (const char* approx : {"1.0K", "10K", "0.1K", "1M", "-", "", "12a", "+1", " 1"}) {
    EXPECT_FALSE(parseExactSize(approx).has_value()) << approx;
  }
}

TEST(HtmlFilterTest, KeepsOnlyListingStructure) {
  EXPECT_EQ(filterListingHtml("<html><body><h1>T</h1><a href=\"x\">x</a></body></html>"),
            "T<a href=\"x\">x</a>");
  EXPECT_EQ(filterListingHtml("<a title='<b>' href=\"a>b\">"), "<a title='<b>' href=\"a>b\">");
  EXPECT_EQ(filterListingHtml("a<!-- <a href=x> -->b<script>\"<a href=y>\"</SCRIPT >c"), "abc");
  EXPECT_EQ(filterListingHtml("1 < 2 <3 <"), "1 < 2 <3 <");
  EXPECT_EQ(filterListingHtml("<td>x<a href=\"unterminated"), "<td>x");
  EXPECT_EQ(filterListingHtml("x<plaintext><a href=y>"), "x");
  std::string deep;
  for (int i = 0; i < 20; ++i) deep += "<table>";
  std::string kept;
  for (int i = 0; i < kMaxTableDepth; ++i) kept += "<table>";
  EXPECT_EQ(filterListingHtml(deep), kept);
}

}  // namespace
}  // namespace hsm::remote::http
