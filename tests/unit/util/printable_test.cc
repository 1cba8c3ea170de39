#include "util/printable.h"

#include <gtest/gtest.h>

namespace hsm {
namespace {

TEST(PrintableTest, EscapesControlCharactersAndKeepsTheRest) {
  EXPECT_EQ(printable("plain name.txt"), "plain name.txt");
  EXPECT_EQ(printable("caf\xc3\xa9 \xe6\x97\xa5"), "caf\xc3\xa9 \xe6\x97\xa5");  // UTF-8 kept
  EXPECT_EQ(printable("a\x1b]0;pwned\x07z"), "a\\x1b]0;pwned\\x07z");           // OSC title
  EXPECT_EQ(printable("line\nforged: error"), "line\\x0aforged: error");
  EXPECT_EQ(printable("del\x7f"), "del\\x7f");
  EXPECT_EQ(printable("c1\xc2\x9b" "2J"), "c1\\xc2\\x9b2J");  // CSI as UTF-8 C1
  EXPECT_EQ(printable("nbsp\xc2\xa0"), "nbsp\xc2\xa0");        // not a control
  EXPECT_EQ(printable(std::string_view("nul\0x", 5)), "nul\\x00x");
}

}  // namespace
}  // namespace hsm
