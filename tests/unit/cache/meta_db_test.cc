
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <random>

#include "cache/meta_db.h"
#include "temp_dir.h"

namespace hsm::cache {
namespace {

Entry file(const std::string& name, uint64_t size, const std::string& version) {
  Entry e;
  e.name = name;
  e.type = EntryType::kFile;
  e.size = size;
  e.version = version;
  e.mode = 0644;
  e.mtimeNs = 42;
  return e;
}

Entry dir(const std::string& name) {
  Entry e;
  e.name = name;
  e.type = EntryType::kDir;
  e.mode = 0755;
  return e;
}

class MetaDbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = MetaDb::open(tmp_.path() + "/index.db");
    ASSERT_TRUE(db.isOk()) << db.status().message();
    db_ = std::move(*db);
    ASSERT_TRUE(db_->upsertEntry("", dir("")).isOk());
  }
  hsm::testing::TempDir tmp_;
  std::unique_ptr<MetaDb> db_;
};

TEST_F(MetaDbTest, ListingMarksDirectoryAndAddsChildren) {
  std::vector<std::string> changed;
  ASSERT_TRUE(db_->applyListing("", {file("a", 10, "v1"), dir("d")}, &changed).isOk());
  EXPECT_TRUE(changed.empty());
  auto root = db_->get("");
  ASSERT_TRUE(root.isOk() && root->has_value());
  EXPECT_EQ((*root)->state, kDirListed);
  auto a = db_->get("a");
  ASSERT_TRUE(a.isOk() && a->has_value());
  EXPECT_EQ((*a)->size, 10u);
  EXPECT_EQ((*a)->version, "v1");
  EXPECT_EQ((*a)->state, static_cast<int>(State::kEmpty));
  auto unlisted = db_->unlistedDirs(100);
  ASSERT_TRUE(unlisted.isOk());
  EXPECT_EQ(*unlisted, std::vector<std::string>{"d"});
  auto missing = db_->get("nope");
  ASSERT_TRUE(missing.isOk());
  EXPECT_FALSE(missing->has_value());
}

TEST_F(MetaDbTest, EmptyFilesStartFull) {
  ASSERT_TRUE(db_->applyListing("", {file("empty", 0, "v0")}, nullptr).isOk());
  EXPECT_EQ((*db_->get("empty"))->state, static_cast<int>(State::kFull));
}

TEST_F(MetaDbTest, SameVersionKeepsContentStateChangedVersionResets) {
  ASSERT_TRUE(db_->applyListing("", {file("a", 10, "v1")}, nullptr).isOk());
  ASSERT_TRUE(db_->recordContent({{"a", "v1", State::kFull, "\x01", 10}}).isOk());
  std::vector<std::string> changed;
  ASSERT_TRUE(db_->applyListing("", {file("a", 10, "v1")}, &changed).isOk());
  EXPECT_TRUE(changed.empty());
  EXPECT_EQ((*db_->get("a"))->state, static_cast<int>(State::kFull));
  ASSERT_TRUE(db_->applyListing("", {file("a", 10, "v2")}, &changed).isOk());
  EXPECT_EQ(changed, std::vector<std::string>{"a"});
  auto row = *db_->get("a");
  EXPECT_EQ(row->state, static_cast<int>(State::kEmpty));
  EXPECT_EQ(row->bytesPresent, 0u);
  EXPECT_TRUE(row->present.empty());
}

TEST_F(MetaDbTest, ListingTimesAndSubtreeRemoval) {
  ASSERT_TRUE(db_->applyListing("", {dir("a"), dir("ab"), file("a0", 1, "v")}, nullptr, "etag:x", 100).isOk());
  ASSERT_TRUE(db_->applyListing("a", {file("f", 1, "v"), dir("s")}, nullptr, "", 100).isOk());
  ASSERT_TRUE(db_->applyListing("a/s", {file("g", 1, "v")}, nullptr, "", 100).isOk());
  auto root = *db_->get("");
  EXPECT_EQ(root->version, "etag:x");
  EXPECT_EQ(root->listedAt, 100);
  ASSERT_TRUE(db_->touchListing("", 200).isOk());
  EXPECT_EQ((*db_->get(""))->listedAt, 200);
  ASSERT_TRUE(db_->removeSubtree("a").isOk());
  for (const char* gone : {"a", "a/f", "a/s", "a/s/g"}) EXPECT_FALSE(db_->get(gone)->has_value()) << gone;
  for (const char* kept : {"ab", "a0", ""}) EXPECT_TRUE(db_->get(kept)->has_value()) << kept;
  EXPECT_FALSE(db_->removeSubtree("").isOk());
}

TEST_F(MetaDbTest, RecordContentIgnoresStaleVersion) {
  ASSERT_TRUE(db_->applyListing("", {file("a", 10, "v2")}, nullptr).isOk());
  ASSERT_TRUE(db_->recordContent({{"a", "v1", State::kFull, "\x01", 10}}).isOk());
  EXPECT_EQ((*db_->get("a"))->state, static_cast<int>(State::kEmpty));
}

TEST_F(MetaDbTest, StatsCountByTypeAndState) {
  ASSERT_TRUE(db_->applyListing("", {file("a", 10, "v"), file("b", 20, "v"), file("c", 5, "v"),
                                     dir("d")},
                                nullptr)
                  .isOk());
  ASSERT_TRUE(db_->recordContent({{"a", "v", State::kFull, "\x01", 10},
                                  {"b", "v", State::kPartial, "\x01", 4}})
                  .isOk());
  auto st = db_->stats();
  ASSERT_TRUE(st.isOk());
  EXPECT_EQ(st->files, 3u);
  EXPECT_EQ(st->filesFull, 1u);
  EXPECT_EQ(st->filesPartial, 1u);
  EXPECT_EQ(st->filesEmpty, 1u);
  EXPECT_EQ(st->dirs, 2u);
  EXPECT_EQ(st->dirsListed, 1u);
  EXPECT_EQ(st->bytesTotal, 35u);
  EXPECT_EQ(st->bytesPresent, 14u);
}

TEST_F(MetaDbTest, ReleaseCandidatesOldestUseFirstWithoutPinnedOrEmpty) {
  ASSERT_TRUE(db_->applyListing("", {file("a", 10, "v"), file("b", 10, "v"), file("c", 10, "v"),
                                     file("e", 10, "v"), dir("d")},
                                nullptr)
                  .isOk());
  ASSERT_TRUE(db_->applyListing("d", {file("x", 10, "v")}, nullptr).isOk());
  ASSERT_TRUE(db_->recordContent({{"a", "v", State::kFull, "\x01", 10, 300},
                                  {"b", "v", State::kPartial, "\x01", 4, 100},
                                  {"c", "v", State::kFull, "\x01", 10, 200},
                                  {"d/x", "v", State::kFull, "\x01", 10, 50}})
                  .isOk());
  auto pinned = db_->setPinned("d", true);
  ASSERT_TRUE(pinned.isOk());
  EXPECT_EQ(*pinned, 1u);  // d/x; directories themselves carry no pin
  ASSERT_TRUE(db_->touchAccess("b", 400).isOk());
  ASSERT_TRUE(db_->touchAccess("c", 150).isOk());  // never moves backwards
  auto c = db_->releaseCandidates(10);
  ASSERT_TRUE(c.isOk()) << c.status().message();
  ASSERT_EQ(c->size(), 3u);  // e has no content, d/x is pinned
  EXPECT_EQ((*c)[0].path, "c");
  EXPECT_EQ((*c)[1].path, "a");
  EXPECT_EQ((*c)[2].path, "b");
  EXPECT_EQ((*c)[2].lastAccessNs, 400);
  EXPECT_EQ((*c)[1].mtimeNs, 42);

  auto st = db_->stats();
  ASSERT_TRUE(st.isOk());
  EXPECT_EQ(st->filesPinned, 1u);
  EXPECT_EQ(st->bytesPinned, 10u);
  auto bytes = db_->contentBytes();
  ASSERT_TRUE(bytes.isOk());
  EXPECT_EQ(*bytes, 34u);
}

TEST_F(MetaDbTest, ReleaseContentIsVersionGuarded) {
  ASSERT_TRUE(db_->applyListing("", {file("a", 10, "v"), file("b", 10, "v2")}, nullptr).isOk());
  ASSERT_TRUE(db_->recordContent({{"a", "v", State::kFull, "\x01", 10, 1},
                                  {"b", "v2", State::kFull, "\x01", 10, 1}})
                  .isOk());
  auto n = db_->releaseContent({{"a", "v"}, {"b", "v1"}, {"missing", "v"}});
  ASSERT_TRUE(n.isOk()) << n.status().message();
  EXPECT_EQ(*n, 1u);
  auto a = *db_->get("a");
  EXPECT_EQ(a->state, static_cast<int>(State::kEmpty));
  EXPECT_EQ(a->bytesPresent, 0u);
  EXPECT_TRUE(a->present.empty());
  EXPECT_EQ((*db_->get("b"))->state, static_cast<int>(State::kFull));
}

TEST_F(MetaDbTest, PinSurvivesNewRemoteVersionAndSubtreeQueries) {
  ASSERT_TRUE(db_->applyListing("", {file("a", 10, "v1"), dir("d"), dir("d2")}, nullptr).isOk());
  ASSERT_TRUE(db_->applyListing("d", {file("x", 3, "v"), dir("sub")}, nullptr).isOk());
  ASSERT_TRUE(db_->setPinned("a", true).isOk());
  std::vector<std::string> changed;
  ASSERT_TRUE(db_->applyListing("", {file("a", 11, "v2"), dir("d"), dir("d2")}, &changed).isOk());
  ASSERT_EQ(changed.size(), 1u);
  EXPECT_TRUE((*db_->get("a"))->pinned);

  auto files = db_->filesUnder("d");
  ASSERT_TRUE(files.isOk());
  ASSERT_EQ(files->size(), 1u);
  EXPECT_EQ((*files)[0].path, "d/x");
  EXPECT_EQ((*files)[0].version, "v");
  auto all = db_->filesUnder("");
  ASSERT_TRUE(all.isOk());
  EXPECT_EQ(all->size(), 2u);
  auto unlisted = db_->unlistedDirsUnder("d", 10);
  ASSERT_TRUE(unlisted.isOk());
  ASSERT_EQ(unlisted->size(), 1u);
  EXPECT_EQ((*unlisted)[0], "d/sub");
  auto unlistedAll = db_->unlistedDirsUnder("", 10);
  ASSERT_TRUE(unlistedAll.isOk());
  EXPECT_EQ(unlistedAll->size(), 2u);  // d/sub and d2; "d2" must not match the range of "d"
}

TEST_F(MetaDbTest, PersistsAcrossReopenWithSettings) {
  ASSERT_TRUE(db_->applyListing("", {file("a", 10, "v1")}, nullptr).isOk());
  ASSERT_TRUE(db_->setSetting("source", "dir:/x").isOk());
  db_.reset();
  auto db = MetaDb::open(tmp_.path() + "/index.db");
  ASSERT_TRUE(db.isOk());
  auto s = (*db)->getSetting("source");
  ASSERT_TRUE(s.isOk() && s->has_value());
  EXPECT_EQ(**s, "dir:/x");
  EXPECT_TRUE((*(*db)->get("a")).has_value());
}

void expectSameTotals(MetaDb& db) {
  auto fast = db.stats();
  auto scan = db.statsByScan();
  ASSERT_TRUE(fast.isOk() && scan.isOk());
  EXPECT_EQ(fast->files, scan->files);
  EXPECT_EQ(fast->filesEmpty, scan->filesEmpty);
  EXPECT_EQ(fast->filesPartial, scan->filesPartial);
  EXPECT_EQ(fast->filesFull, scan->filesFull);
  EXPECT_EQ(fast->dirs, scan->dirs);
  EXPECT_EQ(fast->dirsListed, scan->dirsListed);
  EXPECT_EQ(fast->symlinks, scan->symlinks);
  EXPECT_EQ(fast->bytesTotal, scan->bytesTotal);
  EXPECT_EQ(fast->bytesPresent, scan->bytesPresent);
  EXPECT_EQ(fast->filesPinned, scan->filesPinned);
  EXPECT_EQ(fast->bytesPinned, scan->bytesPinned);
  auto bytes = db.contentBytes();
  ASSERT_TRUE(bytes.isOk());
  EXPECT_EQ(*bytes, scan->bytesPresent);
}

// Every writer moves the running totals (v4 triggers) exactly as a full scan sees them.
TEST_F(MetaDbTest, TotalsFollowEveryWriter) {
  std::mt19937 rng(7);
  std::vector<Entry> top;
  for (int i = 0; i < 40; ++i) top.push_back(file("f" + std::to_string(i), 100 + i, "v1"));
  for (int i = 0; i < 5; ++i) top.push_back(dir("d" + std::to_string(i)));
  ASSERT_TRUE(db_->applyListing("", top, nullptr).isOk());
  for (int i = 0; i < 5; ++i) {
    std::vector<Entry> sub;
    for (int j = 0; j < 10; ++j) sub.push_back(file("g" + std::to_string(j), 50, "v1"));
    ASSERT_TRUE(db_->applyListing("d" + std::to_string(i), sub, nullptr).isOk());
  }
  expectSameTotals(*db_);
  for (int round = 0; round < 200; ++round) {
    const std::string f = "f" + std::to_string(rng() % 40);
    switch (rng() % 7) {
      case 0:
        ASSERT_TRUE(db_->recordContent({{f, "v1", State::kPartial, "\x01", 10, 5}}).isOk());
        break;
      case 1:
        ASSERT_TRUE(db_->recordContent({{f, "v1", State::kFull, "\xff", 100, 6}}).isOk());
        break;
      case 2:
        ASSERT_TRUE(db_->releaseContent({{f, "v1"}}).isOk());
        break;
      case 3:
        ASSERT_TRUE(db_->setPinned(rng() % 2 ? f : "d" + std::to_string(rng() % 5), rng() % 2).isOk());
        break;
      case 4: {  // a new remote version replaces the row (INSERT OR REPLACE)
        auto up = db_->upsertEntry(f, file(f, 300, "v" + std::to_string(rng() % 3)));
        ASSERT_TRUE(up.isOk());
        break;
      }
      case 5:
        ASSERT_TRUE(db_->touchAccess(f, round).isOk());
        break;
      case 6: {
        const std::string d = "d" + std::to_string(rng() % 5);
        ASSERT_TRUE(db_->removeSubtree(d).isOk());
        ASSERT_TRUE(db_->upsertEntry(d, dir(d)).isOk());
        break;
      }
    }
    expectSameTotals(*db_);
  }
}

TEST_F(MetaDbTest, UnlistedDirsWalkInBatchesByCursor) {
  std::vector<Entry> top;
  for (int i = 0; i < 25; ++i) top.push_back(dir("d" + std::to_string(100 + i)));
  top.push_back(file("x", 1, "v"));
  ASSERT_TRUE(db_->applyListing("", top, nullptr).isOk());
  ASSERT_TRUE(db_->applyListing("d105", {}, nullptr).isOk());  // listed: not returned
  std::vector<std::string> all;
  std::optional<std::string> cursor;
  for (int batches = 0; batches < 100; ++batches) {
    auto b = db_->unlistedDirs(4, cursor);
    ASSERT_TRUE(b.isOk());
    if (b->empty()) break;
    EXPECT_LE(b->size(), 4u);
    all.insert(all.end(), b->begin(), b->end());
    cursor = b->back();
  }
  ASSERT_EQ(all.size(), 24u);
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
  EXPECT_EQ(std::count(all.begin(), all.end(), "d105"), 0);
}

// A cache made by a v3 fanhsm: the v3 -> v4 migration builds the totals from its rows.
TEST(MetaDbOpenTest, MigratesV3DatabaseAndBuildsTotals) {
  hsm::testing::TempDir tmp;
  const std::string path = tmp.path() + "/index.db";
  {
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &raw), SQLITE_OK);
    const char* v3 =
        "CREATE TABLE settings(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE entries(path TEXT PRIMARY KEY, type INTEGER NOT NULL, size INTEGER NOT "
        "NULL, mtime_ns INTEGER NOT NULL, mode INTEGER NOT NULL, link TEXT NOT NULL DEFAULT '', "
        "version TEXT NOT NULL DEFAULT '', state INTEGER NOT NULL DEFAULT 0, present BLOB, "
        "bytes_present INTEGER NOT NULL DEFAULT 0, listed_at INTEGER NOT NULL DEFAULT 0, "
        "pinned INTEGER NOT NULL DEFAULT 0, last_access INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
        "CREATE INDEX entries_unlisted ON entries(type, state) WHERE type = 1 AND state = 0;"
        "CREATE INDEX entries_lru ON entries(last_access) WHERE type = 0 AND bytes_present > 0 "
        "AND pinned = 0;"
        "INSERT INTO settings VALUES('schema_version', '3');"
        "INSERT INTO entries(path, type, size, mtime_ns, mode, state) VALUES('', 1, 0, 0, 493, 1);"
        "INSERT INTO entries(path, type, size, mtime_ns, mode, state) VALUES('d', 1, 0, 0, 493, 0);"
        "INSERT INTO entries(path, type, size, mtime_ns, mode, version, state, bytes_present, "
        " pinned) VALUES('a', 0, 100, 0, 420, 'v', 2, 100, 1), ('b', 0, 50, 0, 420, 'v', 1, 10, 0),"
        " ('c', 0, 70, 0, 420, 'v', 0, 0, 0);"
        "INSERT INTO entries(path, type, size, mtime_ns, mode, link) VALUES('l', 2, 0, 0, 511, 'x');";
    char* err = nullptr;
    ASSERT_EQ(sqlite3_exec(raw, v3, nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
    sqlite3_close(raw);
  }
  auto db = MetaDb::open(path);
  ASSERT_TRUE(db.isOk()) << db.status().message();
  auto v = (*db)->getSetting("schema_version");
  ASSERT_TRUE(v.isOk() && v->has_value());
  EXPECT_EQ(**v, std::to_string(MetaDb::kSchemaVersion));
  auto st = (*db)->stats();
  ASSERT_TRUE(st.isOk());
  EXPECT_EQ(st->files, 3u);
  EXPECT_EQ(st->filesFull, 1u);
  EXPECT_EQ(st->filesPartial, 1u);
  EXPECT_EQ(st->filesEmpty, 1u);
  EXPECT_EQ(st->dirs, 2u);
  EXPECT_EQ(st->dirsListed, 1u);
  EXPECT_EQ(st->symlinks, 1u);
  EXPECT_EQ(st->bytesTotal, 220u);
  EXPECT_EQ(st->bytesPresent, 110u);
  EXPECT_EQ(st->filesPinned, 1u);
  EXPECT_EQ(st->bytesPinned, 100u);
  // Migrated rows stay accounted by the triggers from then on.
  ASSERT_TRUE((*db)->recordContent({{"c", "v", State::kFull, "\x01", 70, 1}}).isOk());
  ASSERT_TRUE((*db)->removeSubtree("a").isOk());
  expectSameTotals(**db);
  auto bytes = (*db)->contentBytes();
  ASSERT_TRUE(bytes.isOk());
  EXPECT_EQ(*bytes, 80u);
  db->reset();
  auto again = MetaDb::open(path);  // opening a v4 database again changes nothing
  ASSERT_TRUE(again.isOk());
  expectSameTotals(**again);
}

TEST(MetaDbOpenTest, RefusesNewerSchema) {
  hsm::testing::TempDir tmp;
  {
    auto db = MetaDb::open(tmp.path() + "/index.db");
    ASSERT_TRUE(db.isOk());
    ASSERT_TRUE((*db)->setSetting("schema_version", "99").isOk());
  }
  auto db = MetaDb::open(tmp.path() + "/index.db");
  ASSERT_FALSE(db.isOk());
  EXPECT_EQ(db.status().code(), EPROTO);
}

}  // namespace
}  // namespace hsm::cache
