#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <string>

#include "runtime/error.h"
#include "runtime/io/jsonl.h"

namespace tern {
namespace {

TEST(Jsonl, WritesOneEscapedObjectPerLine) {
  const std::string path = ::testing::TempDir() + "/tern_jsonl_test.jsonl";
  {
    JsonlWriter w(path);
    w.write(JsonObject().add("event", "epoch").add("epoch", 1).add("loss", 0.25).add("ok", true));
    w.write(JsonObject().add("note", "a \"quoted\"\nline").add("bad", std::nan("")));
  }
  std::ifstream in(path);
  std::string l1, l2;
  std::getline(in, l1);
  std::getline(in, l2);
  EXPECT_EQ(l1, R"({"event": "epoch", "epoch": 1, "loss": 0.25, "ok": true})");
  EXPECT_EQ(l2, R"({"note": "a \"quoted\"\nline", "bad": null})");
}

TEST(Jsonl, UnwritablePathIsAClearError) {
  EXPECT_THROW(JsonlWriter("/nonexistent-dir/x.jsonl"), Error);
}

}  // namespace
}  // namespace tern
