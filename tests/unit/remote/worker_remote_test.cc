// What the daemon accepts from the fetch worker (the less trusted side): the errno of an
// end frame, and content frames against the range that was asked for.
#include "remote/worker/worker_remote.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <string>

namespace hsm::remote {
namespace {

std::string endPayload(const std::string& errnoJson, const std::string& error) {
  return "{\"errno\": " + errnoJson + ", \"error\": " + nlohmann::json(error).dump() +
         ", \"ranges\": false}";
}

TEST(DecodeEndTest, Success) {
  bool ranges = true;
  Status s = decodeEnd(endPayload("0", ""), &ranges);
  EXPECT_TRUE(s.isOk()) << s.message();
  EXPECT_FALSE(ranges);
}

TEST(DecodeEndTest, PassesErrnosARemoteMayReturn) {
  for (int err : {ESTALE, ENOENT, EACCES, EIO, ENOTDIR}) {
    bool ranges = true;
    Status s = decodeEnd(endPayload(std::to_string(err), "source 'x': gone"), &ranges);
    EXPECT_EQ(s.code(), err);
    EXPECT_EQ(s.message(), "source 'x': gone");
    EXPECT_TRUE(remoteMayReturn(err)) << err;
  }
}

TEST(DecodeEndTest, OtherErrnosAreEproto) {
  // ENOSPC/EDQUOT would start an eviction pass, EPIPE/ECONNRESET read as a dead worker,
  // ECANCELED as a stopping daemon; the rest is not an errno at all.
  for (const char* err : {"28", "122", "32", "104", "125", "-5", "-28", "4096", "2147483647",
                          "1099511627776", "18446744073709551615"}) {
    bool ranges = true;
    Status s = decodeEnd(endPayload(err, "disk full, honest"), &ranges);
    EXPECT_EQ(s.code(), EPROTO) << err;
    EXPECT_EQ(s.message(), fmt::format("fetch worker: errno {} is not one a remote may return: "
                                       "disk full, honest",
                                       err));
  }
  EXPECT_FALSE(remoteMayReturn(ENOSPC));
  EXPECT_FALSE(remoteMayReturn(EDQUOT));
  EXPECT_FALSE(remoteMayReturn(0));
  EXPECT_FALSE(remoteMayReturn(-EIO));
}

TEST(DecodeEndTest, HugeErrnoDoesNotWrapToAnother) {
  // 2^32 + 28 and 2^64 - 2^32 + 5 truncate to ENOSPC and EIO as an int.
  for (const char* err : {"4294967324", "18446744069414584325", "-4294967291"}) {
    bool ranges = true;
    EXPECT_EQ(decodeEnd(endPayload(err, "x"), &ranges).code(), EPROTO) << err;
  }
}

TEST(DecodeEndTest, ErrnoThatIsNoIntegerIsEproto) {
  for (const char* err : {"28.0", "5.5", "\"5\"", "true", "null", "[5]", "{}"}) {
    bool ranges = true;
    Status s = decodeEnd(endPayload(err, "x"), &ranges);
    EXPECT_EQ(s.code(), EPROTO) << err;
  }
}

TEST(DecodeEndTest, SuccessWithAnErrorIsEproto) {
  bool ranges = true;
  Status s = decodeEnd(endPayload("0", "it failed, really"), &ranges);
  EXPECT_EQ(s.code(), EPROTO);
  EXPECT_NE(s.message().find("it failed, really"), std::string::npos) << s.message();
}

TEST(DecodeEndTest, MalformedIsEproto) {
  bool ranges = true;
  for (const char* p : {"", "{", "[]", "{\"errno\": 0}", "{\"errno\": 0, \"error\": \"\"}",
                        "{\"errno\": 0, \"error\": 5, \"ranges\": true}",
                        "{\"errno\": 0, \"error\": \"\", \"ranges\": 1}"}) {
    EXPECT_EQ(decodeEnd(p, &ranges).code(), EPROTO) << p;
  }
}

TEST(CheckDataFrameTest, InsideTheRange) {
  EXPECT_TRUE(checkDataFrame(100, 200, 0).isOk());
  EXPECT_TRUE(checkDataFrame(100, 200, 50).isOk());
  EXPECT_TRUE(checkDataFrame(100, 200, 100).isOk());  // up to the end exactly
  EXPECT_TRUE(checkDataFrame(200, 200, 0).isOk());
  // A read to the end of the file (length UINT64_MAX) asks for everything.
  EXPECT_TRUE(checkDataFrame(0, UINT64_MAX, 1 << 20).isOk());
  EXPECT_TRUE(checkDataFrame(UINT64_MAX - 10, UINT64_MAX, 10).isOk());
}

TEST(CheckDataFrameTest, PastTheEndIsEproto) {
  EXPECT_EQ(checkDataFrame(100, 200, 101).code(), EPROTO);
  EXPECT_EQ(checkDataFrame(200, 200, 1).code(), EPROTO);
  EXPECT_EQ(checkDataFrame(0, 0, 1).code(), EPROTO);
  EXPECT_EQ(checkDataFrame(201, 200, 0).code(), EPROTO);  // already past: never accepted
}

TEST(CheckDataFrameTest, OverflowIsEproto) {
  EXPECT_EQ(checkDataFrame(UINT64_MAX - 10, UINT64_MAX, 11).code(), EPROTO);
  EXPECT_EQ(checkDataFrame(UINT64_MAX, UINT64_MAX, 1).code(), EPROTO);
  EXPECT_EQ(checkDataFrame(UINT64_MAX - 1, UINT64_MAX, SIZE_MAX).code(), EPROTO);
}

}  // namespace
}  // namespace hsm::remote
