// Progress bars in logs (stderr not a terminal, as under ctest): a line at most every two
// seconds and the last one, so a loop of thousands of updates does not flood the log.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "vilau/core/progress.h"

namespace vilau {
namespace {

TEST(ProgressBar, LogsAreThrottledAndEndWithTheLastCount) {
  ::testing::internal::CaptureStderr();
  {
    ProgressBar bar("answering", 3000, "question");
    for (int i = 1; i <= 3000; ++i) bar.update(i);
    bar.finish();
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  // The first update and the last; finish() does not repeat the last line.
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 2) << log;
  EXPECT_THAT(log, ::testing::HasSubstr("answering [#"));
  EXPECT_THAT(log, ::testing::HasSubstr("3000/3000 question"));

  ::testing::internal::CaptureStderr();
  {
    ProgressBar bar("train", 100, "step");
    bar.update(10);
    bar.finish("loss 1.5");  // stopped early: the end is still logged, with its status
  }
  const std::string early = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(std::count(early.begin(), early.end(), '\n'), 2) << early;
  EXPECT_THAT(early, ::testing::HasSubstr("10/100 step | "));
  EXPECT_THAT(early, ::testing::HasSubstr("| loss 1.5"));
  ::testing::internal::CaptureStderr();
  {
    ProgressBar quiet("x", 10, "step", 0, false);
    quiet.update(5);
    quiet.finish();
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

}  // namespace
}  // namespace vilau
