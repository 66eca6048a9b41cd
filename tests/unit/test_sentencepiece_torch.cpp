// Debian's SentencePiece carries its own protobuf and LibTorch exports protobuf symbols
// too; a process that loads both can crash before main. This binary links both and uses
// both, so it fails if the two copies clash.
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <numeric>

namespace {

TEST(SentencePieceWithTorch, TrainEncodeAndRunTorchInOneProcess) {
  const auto dir = std::filesystem::temp_directory_path() / "vilau_sp_link";
  std::filesystem::create_directories(dir);
  const auto corpus = dir / "corpus.txt";
  {
    std::ofstream out(corpus);
    for (int i = 0; i < 200; ++i) {
      out << "a photo of a red cube number " << i << " on a blue table\n";
    }
  }
  const auto prefix = (dir / "sp").string();
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + corpus.string() + " --model_prefix=" + prefix +
      " --vocab_size=60 --model_type=bpe --minloglevel=2");
  ASSERT_TRUE(status.ok()) << status.ToString();

  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.Load(prefix + ".model").ok());
  std::vector<int> ids;
  ASSERT_TRUE(sp.Encode("a red cube on a blue table", &ids).ok());
  ASSERT_FALSE(ids.empty());
  std::string decoded;
  ASSERT_TRUE(sp.Decode(ids, &decoded).ok());
  EXPECT_EQ(decoded, "a red cube on a blue table");

  const torch::Tensor t = torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()));
  EXPECT_EQ(t.numel(), static_cast<int64_t>(ids.size()));
  EXPECT_EQ(t.sum().item<int64_t>(), std::accumulate(ids.begin(), ids.end(), int64_t{0}));
  std::filesystem::remove_all(dir);
}

}  // namespace
