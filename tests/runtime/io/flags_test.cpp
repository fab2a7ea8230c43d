#include "runtime/io/flags.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tern {
namespace {

Flags make_flags() {
  Flags f("prog", "does things");
  f.add_string("model", "cnn", "model name");
  f.add_int("epochs", 3, "epochs");
  f.add_float("lr", 0.05, "learning rate");
  f.add_bool("nesterov", false, "use Nesterov");
  return f;
}

bool parse(Flags& f, std::vector<const char*> args) {
  args.insert(args.begin(), "prog");
  return f.parse(static_cast<int>(args.size()), args.data());
}

TEST(Flags, ParsesBothFormsAndKeepsDefaults) {
  Flags f = make_flags();
  ASSERT_TRUE(parse(f, {"--model", "mlp", "--lr=0.1", "--nesterov"}));
  EXPECT_EQ(f.get_string("model"), "mlp");
  EXPECT_DOUBLE_EQ(f.get_float("lr"), 0.1);
  EXPECT_TRUE(f.get_bool("nesterov"));
  EXPECT_EQ(f.get_int("epochs"), 3);
  EXPECT_FALSE(f.was_set("epochs"));
  EXPECT_TRUE(f.was_set("model"));
}

TEST(Flags, NoPrefixTurnsABoolOff) {
  Flags f = make_flags();
  ASSERT_TRUE(parse(f, {"--nesterov", "--no-nesterov"}));
  EXPECT_FALSE(f.get_bool("nesterov"));
}

TEST(Flags, BadInputIsAUsageError) {
  for (std::vector<const char*> bad : std::vector<std::vector<const char*>>{
           {"--epochs", "three"}, {"--epochs"}, {"--bogus", "1"}, {"stray"}, {"--lr=nan"}, {"--nesterov=maybe"},
           {"--epochs=3.5"}}) {
    Flags f = make_flags();
    EXPECT_THROW(parse(f, bad), UsageError) << bad[0];
  }
}

TEST(Flags, HelpListsEveryFlagWithItsDefault) {
  Flags f = make_flags();
  EXPECT_FALSE(parse(f, {"--help"}));
  const std::string u = f.usage();
  for (const char* s : {"--model STR", "(default: cnn)", "--epochs N", "(default: 3)", "(default: 0.05)",
                        "--nesterov", "(default: false)"})
    EXPECT_NE(u.find(s), std::string::npos) << s << "\n" << u;
}

TEST(Flags, UsageErrorsGetTheUsageLineNotTheWholeHelp) {
  Flags plain = make_flags();
  EXPECT_EQ(plain.usage().rfind("usage: prog [flags]\ndoes things\n", 0), 0u) << plain.usage();
  Flags f("ternrun", "Run ranks.", "-n N [flags] PROGRAM [ARGS...]");
  f.add_float("grace", 5, "seconds between SIGTERM and SIGKILL");
  EXPECT_EQ(f.usage().rfind("usage: ternrun -n N [flags] PROGRAM [ARGS...]\nRun ranks.\n", 0), 0u) << f.usage();
  const std::string s = f.short_usage();
  EXPECT_EQ(s, "usage: ternrun -n N [flags] PROGRAM [ARGS...]\nternrun --help lists the flags.\n");
  EXPECT_EQ(s.find("--grace"), std::string::npos);
}

}  // namespace
}  // namespace tern
