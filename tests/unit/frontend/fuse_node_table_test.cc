// Parts of the FUSE frontend that need no mount: the node table and the errno mapping.
#include <cerrno>

#include <gtest/gtest.h>

#include "frontend/fuse/fuse_errno.h"
#include "frontend/fuse/node_table.h"

namespace hsm::frontend {
namespace {

TEST(FuseNodeTable, RootIsAlwaysKnown) {
  NodeTable t;
  EXPECT_EQ(t.path(NodeTable::kRootId), "");
  t.forget(NodeTable::kRootId, 1000);
  EXPECT_EQ(t.path(NodeTable::kRootId), "");
  EXPECT_EQ(t.size(), 1u);
}

TEST(FuseNodeTable, LookupsCountAndForgetRemoves) {
  NodeTable t;
  uint64_t a = t.ref("a/b", 7);
  EXPECT_NE(a, NodeTable::kRootId);
  EXPECT_EQ(t.ref("a/b", 7), a);
  EXPECT_EQ(t.ref("a/b", 7), a);
  EXPECT_EQ(t.lookups(a), 3u);
  uint64_t c = t.ref("c", 8);
  EXPECT_NE(c, a);
  t.forget(a, 2);
  EXPECT_EQ(t.path(a), "a/b");
  t.forget(a, 1);
  EXPECT_EQ(t.path(a), std::nullopt);
  EXPECT_EQ(t.size(), 2u);
  // A path looked up again after it was forgotten gets a new id: ids are never reused.
  uint64_t a2 = t.ref("a/b", 7);
  EXPECT_NE(a2, a);
  EXPECT_GT(a2, c);
  t.forget(12345, 1);  // unknown: ignored
  t.forget(c, 99);     // more than it holds: gone
  EXPECT_EQ(t.path(c), std::nullopt);
}

TEST(FuseNodeTable, NewVersionOfAPathGetsANewIdTheOldOneStays) {
  NodeTable t;
  uint64_t v1 = t.ref("f", 100);
  EXPECT_EQ(t.idOf("f"), v1);
  EXPECT_EQ(t.version(v1), 100u);
  uint64_t v2 = t.ref("f", 200);  // the cache entry was replaced (remote change)
  EXPECT_NE(v2, v1);
  EXPECT_EQ(t.idOf("f"), v2);
  EXPECT_EQ(t.path(v1), "f");  // files open on the old version still resolve
  EXPECT_EQ(t.version(v1), 100u);
  EXPECT_EQ(t.version(v2), 200u);
  EXPECT_EQ(t.ref("f", 200), v2);
  t.forget(v1, 1);  // forgetting the old version leaves the path's newest id alone
  EXPECT_EQ(t.path(v1), std::nullopt);
  EXPECT_EQ(t.idOf("f"), v2);
  t.forget(v2, 2);
  EXPECT_EQ(t.idOf("f"), std::nullopt);
  EXPECT_EQ(t.version(NodeTable::kRootId), 0u);
  EXPECT_EQ(t.idOf(""), NodeTable::kRootId);
}

TEST(FuseErrno, MetadataErrorsNameTheCauseOrAreEio) {
  EXPECT_EQ(fuseErrno(ENOENT), ENOENT);
  EXPECT_EQ(fuseErrno(ENOTDIR), ENOTDIR);
  EXPECT_EQ(fuseErrno(ESTALE), ESTALE);
  EXPECT_EQ(fuseErrno(EDQUOT), ENOSPC);
  EXPECT_EQ(fuseErrno(ETIMEDOUT), EIO);
  EXPECT_EQ(fuseErrno(ECONNREFUSED), EIO);
  EXPECT_EQ(fuseErrno(ECANCELED), EIO);
  EXPECT_EQ(fuseErrno(EPROTO), EIO);
}

TEST(FuseErrno, ReadErrorsAreEioEnospcOrEstale) {
  EXPECT_EQ(fuseReadErrno(ENOSPC), ENOSPC);
  EXPECT_EQ(fuseReadErrno(EDQUOT), ENOSPC);
  EXPECT_EQ(fuseReadErrno(ESTALE), ESTALE);
  EXPECT_EQ(fuseReadErrno(ENOENT), EIO);
  EXPECT_EQ(fuseReadErrno(ETIMEDOUT), EIO);
  EXPECT_EQ(fuseReadErrno(EACCES), EIO);
}

}  // namespace
}  // namespace hsm::frontend
