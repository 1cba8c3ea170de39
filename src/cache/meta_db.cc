#include "cache/meta_db.h"

#include "util/rel_path.h"

namespace hsm::cache {
namespace {

// A prepared statement. Binds are 1-based. Either owned (finalized on destruction) or
// borrowed from the connection's cache of prepared statements, keyed by the address of its
// SQL text (prepared once, reset and returned to the cache on destruction): parsing SQL
// for every row was most of the crawl's CPU time at a million entries.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    rc_ = sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr);
  }
  Stmt(sqlite3* db, MetaDb::StmtCache& cache, const char* sql) : db_(db), cached_(true) {
    auto it = cache.find(sql);
    if (it != cache.end()) {
      stmt_ = it->second;
      rc_ = SQLITE_OK;
      return;
    }
    rc_ = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr);
    if (rc_ == SQLITE_OK) {
      cache.emplace(sql, stmt_);
    } else {
      cached_ = false;  // finalize what a failed prepare left
    }
  }
  ~Stmt() {
    if (cached_) {
      sqlite3_reset(stmt_);
      sqlite3_clear_bindings(stmt_);
    } else {
      sqlite3_finalize(stmt_);
    }
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Status prepared() const {
    if (rc_ == SQLITE_OK) return Status::ok();
    return Status::error(EIO, fmt::format("index: prepare: {}", sqlite3_errmsg(db_)));
  }
  Stmt& bind(int i, const std::string& v) {
    sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  // SQLITE_ROW -> true, SQLITE_DONE -> false, else error.
  Result<bool> step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return Status::error(EIO, fmt::format("index: {}", sqlite3_errmsg(db_)));
  }
  Status run() {
    auto r = step();
    if (!r) return r.status();
    return Status::ok();
  }
  // Steps through every remaining row, calling f() on each (f reads the columns).
  template <typename F>
  Status eachRow(F&& f) {
    while (true) {
      auto row = step();
      if (!row) return row.status();
      if (!*row) return Status::ok();
      f();
    }
  }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  int64_t i64(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::string text(int col) const {
    const auto* p = sqlite3_column_text(stmt_, col);
    return p ? std::string(reinterpret_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }
  std::string blob(int col) const {
    const void* p = sqlite3_column_blob(stmt_, col);
    return p ? std::string(static_cast<const char*>(p),
                           static_cast<size_t>(sqlite3_column_bytes(stmt_, col)))
             : std::string();
  }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int rc_;
  bool cached_ = false;
};

// Rolls back unless committed.
class Txn {
 public:
  explicit Txn(sqlite3* db) : db_(db) {
    ok_ = sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK;
  }
  ~Txn() {
    if (ok_ && !done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Status begun() const {
    return ok_ ? Status::ok()
               : Status::error(EIO, fmt::format("index: begin: {}", sqlite3_errmsg(db_)));
  }
  Status commit() {
    done_ = true;
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      Status s = Status::error(EIO, fmt::format("index: commit: {}", sqlite3_errmsg(db_)));
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return s;
    }
    return Status::ok();
  }

 private:
  sqlite3* db_;
  bool ok_ = false;
  bool done_ = false;
};

constexpr const char* kSelectEntry =
    "SELECT type, size, mtime_ns, mode, link, version, state, present, bytes_present, "
    "listed_at, pinned, last_access, ino FROM entries WHERE path = ?1";

// v4: running totals of entries by (type, state, pinned), maintained by triggers on every
// insert, delete and update of the counted columns: any writer of `entries` is accounted,
// with no code of its own. (A REPLACE deletes a row without firing DELETE triggers unless
// recursive_triggers is on: open() turns it on for every connection.)
constexpr const char* kCreateTotals =
    "CREATE TABLE entry_totals("
    " type INTEGER NOT NULL, state INTEGER NOT NULL, pinned INTEGER NOT NULL,"
    " n INTEGER NOT NULL, size INTEGER NOT NULL, present INTEGER NOT NULL,"
    " PRIMARY KEY(type, state, pinned)) WITHOUT ROWID;"
    "CREATE TRIGGER entry_totals_ins AFTER INSERT ON entries BEGIN"
    " INSERT INTO entry_totals(type, state, pinned, n, size, present)"
    "  VALUES(NEW.type, NEW.state, NEW.pinned, 1, NEW.size, NEW.bytes_present)"
    "  ON CONFLICT(type, state, pinned) DO UPDATE SET n = n + 1,"
    "   size = size + excluded.size, present = present + excluded.present;"
    " END;"
    "CREATE TRIGGER entry_totals_del AFTER DELETE ON entries BEGIN"
    " UPDATE entry_totals SET n = n - 1, size = size - OLD.size,"
    "  present = present - OLD.bytes_present"
    "  WHERE type = OLD.type AND state = OLD.state AND pinned = OLD.pinned;"
    " END;"
    "CREATE TRIGGER entry_totals_upd AFTER UPDATE OF type, state, pinned, size, bytes_present"
    " ON entries BEGIN"
    " UPDATE entry_totals SET n = n - 1, size = size - OLD.size,"
    "  present = present - OLD.bytes_present"
    "  WHERE type = OLD.type AND state = OLD.state AND pinned = OLD.pinned;"
    " INSERT INTO entry_totals(type, state, pinned, n, size, present)"
    "  VALUES(NEW.type, NEW.state, NEW.pinned, 1, NEW.size, NEW.bytes_present)"
    "  ON CONFLICT(type, state, pinned) DO UPDATE SET n = n + 1,"
    "   size = size + excluded.size, present = present + excluded.present;"
    " END;";

// Paths strictly below directory `dir` ("" is the root) sort in [lo, hi): '0' follows '/'.
std::pair<std::string, std::string> subtreeRange(const std::string& dir) {
  if (dir.empty()) return {"", "\xff"};
  return {dir + "/", dir + "0"};
}

}  // namespace

const char* stateName(State s) {
  switch (s) {
    case State::kEmpty:
      return "empty";
    case State::kPartial:
      return "partial";
    case State::kFull:
      return "full";
  }
  return "unknown";
}

Result<std::unique_ptr<MetaDb>> MetaDb::open(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           // mu_ serializes every use of the connection: SQLite's own
                           // per-call mutex would only add cost.
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    return Status::error(EIO, fmt::format("index '{}': {}", path, msg));
  }
  std::unique_ptr<MetaDb> m(new MetaDb(db));
  sqlite3_busy_timeout(db, 5000);
  HSM_RETURN_IF_ERROR(m->exec("PRAGMA journal_mode=WAL").withContext(path));
  HSM_RETURN_IF_ERROR(m->exec("PRAGMA synchronous=NORMAL"));
  // The totals' triggers must also see rows that a REPLACE deletes (see kCreateTotals).
  HSM_RETURN_IF_ERROR(m->exec("PRAGMA recursive_triggers=ON"));
  HSM_RETURN_IF_ERROR(m->migrate().withContext(fmt::format("index '{}'", path)));
  return m;
}

MetaDb::~MetaDb() {
  for (auto& [sql, stmt] : stmts_) sqlite3_finalize(stmt);
  sqlite3_close(db_);
}

Status MetaDb::exec(const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    Status s = Status::error(EIO, fmt::format("index: {}", err ? err : "error"));
    sqlite3_free(err);
    return s;
  }
  return Status::ok();
}

Status MetaDb::migrate() {
  std::lock_guard lock(mu_);
  HSM_RETURN_IF_ERROR(exec(
      "CREATE TABLE IF NOT EXISTS settings(key TEXT PRIMARY KEY, value TEXT NOT NULL) "
      "WITHOUT ROWID"));
  Stmt get(db_, "SELECT value FROM settings WHERE key = 'schema_version'");
  HSM_RETURN_IF_ERROR(get.prepared());
  auto row = get.step();
  if (!row) return row.status();
  int version = *row ? std::stoi(get.text(0)) : 0;
  if (version > kSchemaVersion) {
    return Status::error(EPROTO, fmt::format("schema version {} is newer than this fanhsm ({})",
                                             version, kSchemaVersion));
  }
  if (version == 0) {
    Txn txn(db_);
    HSM_RETURN_IF_ERROR(txn.begun());
    HSM_RETURN_IF_ERROR(exec(
        "CREATE TABLE entries("
        " path TEXT PRIMARY KEY,"
        " type INTEGER NOT NULL,"
        " size INTEGER NOT NULL,"
        " mtime_ns INTEGER NOT NULL,"
        " mode INTEGER NOT NULL,"
        " link TEXT NOT NULL DEFAULT '',"
        " version TEXT NOT NULL DEFAULT '',"
        " state INTEGER NOT NULL DEFAULT 0,"
        " present BLOB,"
        " bytes_present INTEGER NOT NULL DEFAULT 0"
        ") WITHOUT ROWID"));
    HSM_RETURN_IF_ERROR(exec(
        "CREATE INDEX entries_unlisted ON entries(type, state) WHERE type = 1 AND state = 0"));
    HSM_RETURN_IF_ERROR(
        exec("INSERT INTO settings(key, value) VALUES('schema_version', '1')"));
    HSM_RETURN_IF_ERROR(txn.commit());
    version = 1;
  }
  if (version == 1) {
    // v2: directories remember when they were listed, for revalidation after a TTL.
    Txn txn(db_);
    HSM_RETURN_IF_ERROR(txn.begun());
    HSM_RETURN_IF_ERROR(exec("ALTER TABLE entries ADD COLUMN listed_at INTEGER NOT NULL DEFAULT 0"));
    HSM_RETURN_IF_ERROR(exec("UPDATE settings SET value = '2' WHERE key = 'schema_version'"));
    HSM_RETURN_IF_ERROR(txn.commit());
    version = 2;
  }
  if (version == 2) {
    // v3: cache management — pins, and the last use of each file's content, with an index
    // that yields release candidates (content, no pin) oldest first without a scan.
    Txn txn(db_);
    HSM_RETURN_IF_ERROR(txn.begun());
    HSM_RETURN_IF_ERROR(exec("ALTER TABLE entries ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0"));
    HSM_RETURN_IF_ERROR(
        exec("ALTER TABLE entries ADD COLUMN last_access INTEGER NOT NULL DEFAULT 0"));
    HSM_RETURN_IF_ERROR(exec(
        "CREATE INDEX entries_lru ON entries(last_access) "
        "WHERE type = 0 AND bytes_present > 0 AND pinned = 0"));
    HSM_RETURN_IF_ERROR(exec("UPDATE settings SET value = '3' WHERE key = 'schema_version'"));
    HSM_RETURN_IF_ERROR(txn.commit());
    version = 3;
  }
  if (version == 3) {
    // v4: totals by (type, state, pinned) kept by triggers, so stats() and contentBytes()
    // read a handful of rows instead of scanning every entry. Built once from the rows.
    Txn txn(db_);
    HSM_RETURN_IF_ERROR(txn.begun());
    HSM_RETURN_IF_ERROR(exec(kCreateTotals));
    HSM_RETURN_IF_ERROR(exec(
        "INSERT INTO entry_totals(type, state, pinned, n, size, present) "
        "SELECT type, state, pinned, count(*), sum(size), sum(bytes_present) FROM entries "
        "GROUP BY type, state, pinned"));
    HSM_RETURN_IF_ERROR(exec("UPDATE settings SET value = '4' WHERE key = 'schema_version'"));
    HSM_RETURN_IF_ERROR(txn.commit());
    version = 4;
  }
  if (version == 4) {
    // v5: the cache inode each file row describes. Rows of an older cache learn theirs on
    // their next load (adoptIno).
    Txn txn(db_);
    HSM_RETURN_IF_ERROR(txn.begun());
    HSM_RETURN_IF_ERROR(exec("ALTER TABLE entries ADD COLUMN ino INTEGER NOT NULL DEFAULT 0"));
    HSM_RETURN_IF_ERROR(exec("UPDATE settings SET value = '5' WHERE key = 'schema_version'"));
    HSM_RETURN_IF_ERROR(txn.commit());
  }
  return Status::ok();
}

Result<std::optional<std::string>> MetaDb::getSetting(const std::string& key) {
  std::lock_guard lock(mu_);
  Stmt s(db_, stmts_, "SELECT value FROM settings WHERE key = ?1");
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, key);
  auto row = s.step();
  if (!row) return row.status();
  if (!*row) return std::optional<std::string>();
  return std::optional<std::string>(s.text(0));
}

Status MetaDb::setSetting(const std::string& key, const std::string& value) {
  std::lock_guard lock(mu_);
  Stmt s(db_, stmts_, "INSERT INTO settings(key, value) VALUES(?1, ?2) "
              "ON CONFLICT(key) DO UPDATE SET value = excluded.value");
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, key).bind(2, value);
  return s.run();
}

Result<std::optional<EntryRow>> MetaDb::get(const std::string& path) {
  std::lock_guard lock(mu_);
  Stmt s(db_, stmts_, kSelectEntry);
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, path);
  auto row = s.step();
  if (!row) return row.status();
  if (!*row) return std::optional<EntryRow>();
  EntryRow r;
  r.path = path;
  r.type = static_cast<EntryType>(s.i64(0));
  r.size = static_cast<uint64_t>(s.i64(1));
  r.mtimeNs = s.i64(2);
  r.mode = static_cast<uint32_t>(s.i64(3));
  r.linkTarget = s.text(4);
  r.version = s.text(5);
  r.state = static_cast<int>(s.i64(6));
  r.present = s.blob(7);
  r.bytesPresent = static_cast<uint64_t>(s.i64(8));
  r.listedAt = s.i64(9);
  r.pinned = s.i64(10) != 0;
  r.lastAccessNs = s.i64(11);
  r.ino = static_cast<uint64_t>(s.i64(12));
  return std::optional<EntryRow>(std::move(r));
}

Result<bool> MetaDb::upsertLocked(const std::string& path, const Entry& e, EntryInode ino) {
  Stmt sel(db_, stmts_, "SELECT type, version, size, pinned FROM entries WHERE path = ?1");
  HSM_RETURN_IF_ERROR(sel.prepared());
  sel.bind(1, path);
  auto row = sel.step();
  if (!row) return row.status();
  bool exists = *row;
  bool sameType = exists && sel.i64(0) == static_cast<int64_t>(e.type);
  bool changed = exists && e.type == EntryType::kFile &&
                 (!sameType || sel.text(1) != e.version ||
                  static_cast<uint64_t>(sel.i64(2)) != e.size);
  // An empty file has nothing to fetch: it is complete from the start.
  const int64_t initialState = static_cast<int64_t>(
      e.type == EntryType::kFile && e.size == 0 ? State::kFull : State::kEmpty);
  if (exists && sameType && !changed) {
    // A fresh inode (?7) in place of the old one: the content described the old one.
    Stmt up(db_, stmts_,
            "UPDATE entries SET mtime_ns = ?2, mode = ?3, link = ?4, "
            "state = CASE WHEN ?7 THEN ?6 ELSE state END, "
            "present = CASE WHEN ?7 THEN NULL ELSE present END, "
            "bytes_present = CASE WHEN ?7 THEN 0 ELSE bytes_present END, "
            "ino = CASE WHEN ?5 != 0 THEN ?5 ELSE ino END WHERE path = ?1");
    HSM_RETURN_IF_ERROR(up.prepared());
    up.bind(1, path).bind(2, e.mtimeNs).bind(3, int64_t{e.mode}).bind(4, e.linkTarget);
    up.bind(5, static_cast<int64_t>(ino.ino)).bind(6, initialState);
    up.bind(7, int64_t{ino.fresh && e.type == EntryType::kFile ? 1 : 0});
    HSM_RETURN_IF_ERROR(up.run());
    return false;
  }
  // A file whose remote version changed keeps its pin (the new content is wanted too).
  const int64_t pinned = exists && sameType && e.type == EntryType::kFile ? sel.i64(3) : 0;
  Stmt ins(db_, stmts_,
           "INSERT OR REPLACE INTO entries(path, type, size, mtime_ns, mode, link, version, "
           "state, present, bytes_present, pinned, ino) "
           "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL, 0, ?9, ?10)");
  HSM_RETURN_IF_ERROR(ins.prepared());
  ins.bind(1, path)
      .bind(2, static_cast<int64_t>(e.type))
      .bind(3, static_cast<int64_t>(e.size))
      .bind(4, e.mtimeNs)
      .bind(5, int64_t{e.mode})
      .bind(6, e.linkTarget)
      .bind(7, e.version)
      .bind(8, initialState)
      .bind(9, pinned)
      .bind(10, static_cast<int64_t>(ino.ino));
  HSM_RETURN_IF_ERROR(ins.run());
  return changed;
}

Result<bool> MetaDb::upsertEntry(const std::string& path, const Entry& e) {
  std::lock_guard lock(mu_);
  return upsertLocked(path, e);
}

Status MetaDb::applyListing(const std::string& dir, const std::vector<Entry>& entries,
                            std::vector<std::string>* changed, const std::string& validator,
                            int64_t listedAt, const std::vector<EntryInode>* inos,
                            bool durable) {
  if (inos && inos->size() != entries.size()) {
    return Status::error(EINVAL, "applyListing: one inode per entry");
  }
  std::lock_guard lock(mu_);
  auto body = [&]() -> Status {
    Txn txn(db_);
    HSM_RETURN_IF_ERROR(txn.begun());
    for (size_t i = 0; i < entries.size(); ++i) {
      std::string path = joinPath(dir, entries[i].name);
      auto c = upsertLocked(path, entries[i], inos ? (*inos)[i] : EntryInode{});
      if (!c) return c.status();
      if (*c && changed) changed->push_back(path);
    }
    Stmt mark(db_, stmts_,
              "UPDATE entries SET state = 1, version = ?2, listed_at = ?3 WHERE path = ?1 AND type = 1");
    HSM_RETURN_IF_ERROR(mark.prepared());
    mark.bind(1, dir).bind(2, validator).bind(3, listedAt);
    HSM_RETURN_IF_ERROR(mark.run());
    return txn.commit();
  };
  return durable ? durableTxnLocked(body) : body();
}

Result<bool> MetaDb::adoptIno(const std::string& path, const std::string& version, uint64_t ino) {
  std::lock_guard lock(mu_);
  Stmt s(db_, stmts_,
         "UPDATE entries SET ino = ?3 WHERE path = ?1 AND version = ?2 AND type = 0 AND ino = 0");
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, path).bind(2, version).bind(3, static_cast<int64_t>(ino));
  HSM_RETURN_IF_ERROR(s.run());
  return sqlite3_changes(db_) > 0;
}

Status MetaDb::resetContent(const std::string& path, const std::string& version, uint64_t ino) {
  std::lock_guard lock(mu_);
  return durableTxnLocked([&]() -> Status {
    Stmt s(db_, stmts_,
           "UPDATE entries SET state = CASE WHEN size = 0 THEN 2 ELSE 0 END, present = NULL, "
           "bytes_present = 0, ino = ?3 WHERE path = ?1 AND version = ?2 AND type = 0");
    HSM_RETURN_IF_ERROR(s.prepared());
    s.bind(1, path).bind(2, version).bind(3, static_cast<int64_t>(ino));
    HSM_RETURN_IF_ERROR(s.run());
    if (sqlite3_changes(db_) == 0) {
      return Status::error(ENOENT, fmt::format("'{}' at version '{}' is not in the index", path,
                                               version));
    }
    return Status::ok();
  });
}

Status MetaDb::durableTxnLocked(const std::function<Status()>& body) {
  // WAL with synchronous=NORMAL makes a commit durable only at the next checkpoint; with
  // FULL the commit syncs the WAL before it returns.
  HSM_RETURN_IF_ERROR(exec("PRAGMA synchronous=FULL"));
  Status result = body();
  Status restore = exec("PRAGMA synchronous=NORMAL");
  HSM_RETURN_IF_ERROR(result);
  return restore;
}

Status MetaDb::touchListing(const std::string& dir, int64_t listedAt) {
  std::lock_guard lock(mu_);
  Stmt s(db_, stmts_, "UPDATE entries SET listed_at = ?2 WHERE path = ?1 AND type = 1");
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, dir).bind(2, listedAt);
  return s.run();
}

Status MetaDb::removeSubtree(const std::string& path) {
  if (path.empty()) return Status::error(EINVAL, "refusing to remove the root");
  std::lock_guard lock(mu_);
  // Paths below "a" sort between "a/" and "a0" ('0' follows '/').
  Stmt s(db_, stmts_, "DELETE FROM entries WHERE path = ?1 OR (path >= ?2 AND path < ?3)");
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, path).bind(2, path + "/").bind(3, path + "0");
  return s.run();
}

Status MetaDb::recordContent(const std::vector<ContentUpdate>& updates) {
  if (updates.empty()) return Status::ok();
  std::lock_guard lock(mu_);
  Txn txn(db_);
  HSM_RETURN_IF_ERROR(txn.begun());
  Stmt s(db_, stmts_,
         "UPDATE entries SET state = ?3, present = ?4, bytes_present = ?5, "
         "last_access = max(last_access, ?6) "
         "WHERE path = ?1 AND version = ?2 AND (?7 = 0 OR ino = ?7)");
  HSM_RETURN_IF_ERROR(s.prepared());
  for (const auto& u : updates) {
    s.bind(1, u.path)
        .bind(2, u.version)
        .bind(3, static_cast<int64_t>(u.state))
        .bindBlob(4, u.present)
        .bind(5, static_cast<int64_t>(u.bytesPresent))
        .bind(6, u.accessNs)
        .bind(7, static_cast<int64_t>(u.ino));
    HSM_RETURN_IF_ERROR(s.run());
    s.reset();
  }
  return txn.commit();
}

Result<size_t> MetaDb::releaseContent(
    const std::vector<std::pair<std::string, std::string>>& pathVersions) {
  if (pathVersions.empty()) return size_t{0};
  std::lock_guard lock(mu_);
  // On disk before the caller punches holes.
  size_t updated = 0;
  Status done = durableTxnLocked([&]() -> Status {
    Txn txn(db_);
    HSM_RETURN_IF_ERROR(txn.begun());
    Stmt s(db_, stmts_,
           "UPDATE entries SET state = 0, present = NULL, bytes_present = 0 "
           "WHERE path = ?1 AND version = ?2 AND type = 0");
    HSM_RETURN_IF_ERROR(s.prepared());
    for (const auto& [path, version] : pathVersions) {
      s.bind(1, path).bind(2, version);
      HSM_RETURN_IF_ERROR(s.run());
      updated += static_cast<size_t>(sqlite3_changes(db_));
      s.reset();
    }
    return txn.commit();
  });
  HSM_RETURN_IF_ERROR(done);
  return updated;
}

Result<std::vector<ReleaseCandidate>> MetaDb::releaseCandidates(size_t limit) {
  std::lock_guard lock(mu_);
  Stmt s(db_, stmts_,
         "SELECT path, version, size, bytes_present, mtime_ns, last_access FROM entries "
         "INDEXED BY entries_lru WHERE type = 0 AND bytes_present > 0 AND pinned = 0 "
         "ORDER BY last_access LIMIT ?1");
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, static_cast<int64_t>(limit));
  std::vector<ReleaseCandidate> out;
  HSM_RETURN_IF_ERROR(s.eachRow([&] {
    out.push_back({s.text(0), s.text(1), static_cast<uint64_t>(s.i64(2)),
                   static_cast<uint64_t>(s.i64(3)), s.i64(4), s.i64(5)});
  }));
  return out;
}

Status MetaDb::touchAccess(const std::string& path, int64_t ns) {
  std::lock_guard lock(mu_);
  Stmt s(db_, stmts_, "UPDATE entries SET last_access = ?2 WHERE path = ?1 AND last_access < ?2");
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, path).bind(2, ns);
  return s.run();
}

Result<uint64_t> MetaDb::setPinned(const std::string& path, bool pinned) {
  std::lock_guard lock(mu_);
  auto [lo, hi] = subtreeRange(path);
  Stmt s(db_, stmts_,
         "UPDATE entries SET pinned = ?4 WHERE type = 0 AND pinned != ?4 AND "
         "(path = ?1 OR (path >= ?2 AND path < ?3))");
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, path).bind(2, lo).bind(3, hi).bind(4, int64_t{pinned ? 1 : 0});
  HSM_RETURN_IF_ERROR(s.run());
  return static_cast<uint64_t>(sqlite3_changes(db_));
}

Result<std::vector<FileRef>> MetaDb::filesUnder(const std::string& path) {
  std::lock_guard lock(mu_);
  auto [lo, hi] = subtreeRange(path);
  Stmt s(db_, stmts_,
         "SELECT path, size, bytes_present, pinned, version FROM entries WHERE type = 0 AND "
         "(path = ?1 OR (path >= ?2 AND path < ?3)) ORDER BY path");
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, path).bind(2, lo).bind(3, hi);
  std::vector<FileRef> out;
  HSM_RETURN_IF_ERROR(s.eachRow([&] {
    out.push_back({s.text(0), static_cast<uint64_t>(s.i64(1)), static_cast<uint64_t>(s.i64(2)),
                   s.i64(3) != 0, s.text(4)});
  }));
  return out;
}

Result<std::vector<std::string>> MetaDb::unlistedDirsUnder(const std::string& path, size_t limit) {
  std::lock_guard lock(mu_);
  auto [lo, hi] = subtreeRange(path);
  Stmt s(db_, stmts_,
         "SELECT path FROM entries WHERE type = 1 AND state = 0 AND "
         "(path = ?1 OR (path >= ?2 AND path < ?3)) LIMIT ?4");
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, path).bind(2, lo).bind(3, hi).bind(4, static_cast<int64_t>(limit));
  std::vector<std::string> out;
  HSM_RETURN_IF_ERROR(s.eachRow([&] { out.push_back(s.text(0)); }));
  return out;
}

Result<uint64_t> MetaDb::contentBytes() {
  std::lock_guard lock(mu_);
  Stmt s(db_, stmts_, "SELECT coalesce(sum(present), 0) FROM entry_totals WHERE type = 0");
  HSM_RETURN_IF_ERROR(s.prepared());
  auto row = s.step();
  if (!row) return row.status();
  return static_cast<uint64_t>(s.i64(0));
}

Result<std::vector<std::string>> MetaDb::unlistedDirs(size_t limit,
                                                      const std::optional<std::string>& after) {
  std::lock_guard lock(mu_);
  // The partial index entries_unlisted holds exactly these rows, in path order: a range
  // scan from `after`, never a scan of the table.
  Stmt s(db_, stmts_, after ? "SELECT path FROM entries INDEXED BY entries_unlisted "
                      "WHERE type = 1 AND state = 0 AND path > ?2 ORDER BY path LIMIT ?1"
                    : "SELECT path FROM entries INDEXED BY entries_unlisted "
                      "WHERE type = 1 AND state = 0 ORDER BY path LIMIT ?1");
  HSM_RETURN_IF_ERROR(s.prepared());
  s.bind(1, static_cast<int64_t>(limit));
  if (after) s.bind(2, *after);
  std::vector<std::string> out;
  while (true) {
    auto row = s.step();
    if (!row) return row.status();
    if (!*row) break;
    out.push_back(s.text(0));
  }
  return out;
}

Result<CacheStats> MetaDb::stats() { return statsFrom(false); }

Result<CacheStats> MetaDb::statsByScan() { return statsFrom(true); }

Result<CacheStats> MetaDb::statsFrom(bool scan) {
  std::lock_guard lock(mu_);
  Stmt s(db_, stmts_, scan ? "SELECT type, state, count(*), sum(size), sum(bytes_present), sum(pinned), "
                     "sum(pinned * size) FROM entries GROUP BY type, state"
                   : "SELECT type, state, sum(n), sum(size), sum(present), sum(pinned * n), "
                     "sum(pinned * size) FROM entry_totals GROUP BY type, state");
  HSM_RETURN_IF_ERROR(s.prepared());
  CacheStats st;
  while (true) {
    auto row = s.step();
    if (!row) return row.status();
    if (!*row) break;
    auto type = static_cast<EntryType>(s.i64(0));
    int state = static_cast<int>(s.i64(1));
    auto n = static_cast<uint64_t>(s.i64(2));
    if (type == EntryType::kFile) {
      st.files += n;
      st.bytesTotal += static_cast<uint64_t>(s.i64(3));
      st.bytesPresent += static_cast<uint64_t>(s.i64(4));
      st.filesPinned += static_cast<uint64_t>(s.i64(5));
      st.bytesPinned += static_cast<uint64_t>(s.i64(6));
      if (state == static_cast<int>(State::kEmpty)) st.filesEmpty += n;
      if (state == static_cast<int>(State::kPartial)) st.filesPartial += n;
      if (state == static_cast<int>(State::kFull)) st.filesFull += n;
    } else if (type == EntryType::kDir) {
      st.dirs += n;
      if (state == kDirListed) st.dirsListed += n;
    } else {
      st.symlinks += n;
    }
  }
  return st;
}

}  // namespace hsm::cache
