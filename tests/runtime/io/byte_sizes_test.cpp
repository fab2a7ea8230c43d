#include "runtime/io/byte_sizes.h"

#include <gtest/gtest.h>

#include <string>

#include "runtime/error.h"

namespace tern {
namespace {

TEST(ParseBytes, ReadsPlainCountsAndBinaryUnits) {
  EXPECT_EQ(parse_bytes("300000"), 300000u);
  EXPECT_EQ(parse_bytes("256KB"), 256u * 1024);
  EXPECT_EQ(parse_bytes("256kb"), 256u * 1024);
  EXPECT_EQ(parse_bytes("256K"), 256u * 1024);
  EXPECT_EQ(parse_bytes("256 KiB"), 256u * 1024);
  EXPECT_EQ(parse_bytes("1.5MB"), 1536u * 1024);
  EXPECT_EQ(parse_bytes("2M"), 2u * 1024 * 1024);
  EXPECT_EQ(parse_bytes("512B"), 512u);
  EXPECT_EQ(parse_bytes(" 64KB "), 64u * 1024);
}

TEST(ParseBytes, RejectsWhatIsNotAByteCount) {
  for (const char* bad :
       {"", "KB", "abc", "-5", "12XB", "1.2.3KB", "0.5B", "0.3KB", "1e3", "99999999999999GB"}) {
    EXPECT_THROW(parse_bytes(bad), Error) << bad;
  }
  try {
    parse_bytes("12XB");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'12XB'"), std::string::npos) << e.what();
  }
}

TEST(FormatBytes, PicksTheUnitThatReads) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(812), "812 B");
  EXPECT_EQ(format_bytes(65024), "63.5 KB");
  EXPECT_EQ(format_bytes(size_t{5} << 19), "2.50 MB");
}

}  // namespace
}  // namespace tern
