// Issue #14, item 10: repeated lines are written once per window, and the file is bounded.
#include "util/log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "temp_dir.h"

namespace hsm::log {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t lines(const std::string& text) { return static_cast<size_t>(std::count(text.begin(), text.end(), '\n')); }

TEST(LogTest, RepeatsAreWrittenOnceAndTheFileIsBounded) {
  hsm::testing::TempDir tmp;
  const std::string path = tmp.path() + "/fanhsm.log";
  ASSERT_TRUE(setFile(path, 4096, 100).isOk());
  for (int i = 0; i < 1000; ++i) warn("read '{}': {}", "a/b", "Input/output error");
  EXPECT_EQ(lines(slurp(path)), 1u);  // before: 1000 lines
  info("another line");
  EXPECT_EQ(lines(slurp(path)), 2u);
  for (int i = 0; i < 200; ++i) info("distinct line number {} with some padding to grow the file", i);
  struct stat st {};
  ASSERT_EQ(::stat((path + ".1").c_str(), &st), 0);  // rotated
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_LE(static_cast<uint64_t>(st.st_size), 4096u + 200);
  // The last line is in the current file, or in the rotated one if it was the line that
  // made the file rotate (line lengths vary with the pid's digits).
  EXPECT_NE((slurp(path) + slurp(path + ".1")).find("distinct line number 199"), std::string::npos);
  setFd(2);
  ::close(100);
}

TEST(LogTest, ReopenStartsANewFileAfterItWasMovedAway) {
  hsm::testing::TempDir tmp;
  const std::string path = tmp.path() + "/fanhsm.log";
  ASSERT_TRUE(setFile(path, 0, 101).isOk());
  info("before the move");
  ASSERT_EQ(::rename(path.c_str(), (path + ".1").c_str()), 0);  // logrotate
  info("still into the moved file");
  ASSERT_TRUE(reopen().isOk());
  info("into the new file");
  EXPECT_NE(slurp(path + ".1").find("still into the moved file"), std::string::npos);
  EXPECT_EQ(slurp(path).find("before the move"), std::string::npos);
  EXPECT_NE(slurp(path).find("into the new file"), std::string::npos);
  setFd(2);
  ::close(101);
}

TEST(LogTest, LevelsByName) {
  EXPECT_EQ(parseLevel("debug"), Level::kDebug);
  EXPECT_EQ(parseLevel("warn"), Level::kWarn);
  EXPECT_EQ(parseLevel("error"), Level::kError);
  EXPECT_FALSE(parseLevel("loud").has_value());
}

}  // namespace
}  // namespace hsm::log
