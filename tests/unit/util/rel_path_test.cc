#include "util/rel_path.h"

#include <gtest/gtest.h>

namespace hsm {
namespace {

TEST(RelPathTest, ValidNames) {
  EXPECT_TRUE(validateName("a", true).isOk());
  EXPECT_TRUE(validateName("file with spaces.txt", true).isOk());
  EXPECT_TRUE(validateName("caf\xc3\xa9", true).isOk());
  EXPECT_TRUE(validateName("...", true).isOk());
  EXPECT_TRUE(validateName(std::string(255, 'x'), true).isOk());
}

TEST(RelPathTest, RejectedNames) {
  EXPECT_EQ(validateName("", true).code(), EINVAL);
  EXPECT_EQ(validateName(".", true).code(), EINVAL);
  EXPECT_EQ(validateName("..", true).code(), EINVAL);
  EXPECT_EQ(validateName("a/b", true).code(), EINVAL);
  EXPECT_EQ(validateName(std::string("a\0b", 3), true).code(), EINVAL);
  EXPECT_EQ(validateName(std::string(256, 'x'), true).code(), EINVAL);
  EXPECT_EQ(validateName("\xff", true).code(), EINVAL);
  EXPECT_TRUE(validateName("\xff", false).isOk());  // local names may be any bytes
}

TEST(RelPathTest, Utf8Rules) {
  EXPECT_TRUE(isValidUtf8("\xe6\x97\xa5\xe6\x9c\xac"));
  EXPECT_TRUE(isValidUtf8("\xf0\x9f\x98\x80"));
  EXPECT_FALSE(isValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(isValidUtf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(isValidUtf8("\xf4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(isValidUtf8("\xe6\x97"));          // truncated
}

TEST(RelPathTest, PathsJoinAndSplit) {
  EXPECT_EQ(joinPath("", "a"), "a");
  EXPECT_EQ(joinPath("a/b", "c"), "a/b/c");
  EXPECT_EQ(parentPath("a/b/c"), "a/b");
  EXPECT_EQ(parentPath("a"), "");
  EXPECT_EQ(baseName("a/b/c"), "c");
  EXPECT_EQ(baseName("a"), "a");
  EXPECT_EQ(displayPath(""), ".");
  EXPECT_TRUE(validateRelPath("").isOk());
  EXPECT_TRUE(validateRelPath("a/b").isOk());
  EXPECT_FALSE(validateRelPath("a//b").isOk());
  EXPECT_FALSE(validateRelPath("/a").isOk());
  EXPECT_FALSE(validateRelPath("a/../b").isOk());
}

}  // namespace
}  // namespace hsm
