// The official VILA-U folder: parameter counts against SPEC §5.4, a tiny folder written by
// hand in the official layout, loaded, checked and exported again bit-exactly.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "vilau/config.h"
#include "vilau/core/error.h"
#include "vilau/io/tensor_store.h"
#include "vilau/model/official_checkpoint.h"

namespace vilau {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;

const std::string kPresets = VILAU_SOURCE_DIR "/configs/presets/";

ModelConfig preset(const std::string& name) {
  return *load_run_config(kPresets + name + ".yaml").model;
}

int64_t count(const std::vector<ComponentCount>& counts, const std::string& component,
              bool buffers = false) {
  for (const auto& c : counts) {
    if (c.component == component) {
      return buffers ? c.buffers : c.parameters;
    }
  }
  ADD_FAILURE() << "no component " << component;
  return 0;
}

TEST(StateDictAdapter, ParameterCountsMatchTheReleasedCheckpointSizes) {
  const auto counts = count_parameters(preset("7b-256"));
  // llm/: 13.48 GB of bf16 = 6 738 448 384 parameters (SPEC §5.4), exactly.
  EXPECT_EQ(count(counts, "llm"), 6738448384);
  // mm_projector/model.safetensors: 42 MB = 20 979 712 parameters, exactly.
  EXPECT_EQ(count(counts, "mm_projector"), 20979712);
  // vision_tower/model.safetensors: 2.71 GB = about 1 356.3 M values including EMA buffers.
  int64_t tower = 0;
  for (const auto& c : counts) {
    if (c.component.rfind("vision_tower.", 0) == 0) {
      tower += c.parameters + c.buffers;
    }
  }
  EXPECT_NEAR(static_cast<double>(tower) / 1e6, 1356.3, 0.5);
  EXPECT_NEAR(count(counts, "vision_tower.depth_transformer") / 1e6, 527.1, 0.1);
  EXPECT_NEAR(count(counts, "vision_tower.pixel_decoder") / 1e6, 42.7, 0.1);
  EXPECT_NEAR(count(counts, "vision_tower.quantizer", true) / 1e6, 67.2, 0.1);
}

TEST(StateDictAdapter, NamesMapBothWaysAndAliasesCanonicalise) {
  EXPECT_EQ(to_vilau_name(Component::llm, "model.norm.weight"), "llm.model.norm.weight");
  EXPECT_EQ(to_vilau_name(Component::vision_tower, "rqvaesiglip.logit_scale"),
            "vision_tower.rqvaesiglip.siglip_model.logit_scale");
  const auto [component, name] = to_official_name("mm_projector.layers.2.bias");
  EXPECT_EQ(component, Component::mm_projector);
  EXPECT_EQ(name, "layers.2.bias");
  EXPECT_THROW(to_official_name("decoder.conv_in.weight"), ShapeError);
}

class OfficialFolder : public vilau::testing::TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    config_ = preset("tiny");
  }

  // Writes the tiny model the way the official save code lays it out (SPEC §5.1-5.3).
  std::map<std::string, at::Tensor> write_official(const fs::path& root) {
    torch::manual_seed(1);
    std::map<Component, io::NamedTensors> parts;
    std::map<std::string, at::Tensor> ours;
    for (const ExpectedTensor& e : expected_tensors(config_)) {
      at::Tensor t = torch::randn(e.shape).to(torch::kBFloat16);
      ours[e.name] = t;
      auto [component, official] = to_official_name(e.name);
      // The official code saves the logit scalars under the short alias.
      if (official == "rqvaesiglip.siglip_model.logit_scale") official = "rqvaesiglip.logit_scale";
      parts[component].emplace_back(official, t);
    }
    const int64_t c = config_.vision_tower.vision.hidden_size;
    const json llm = {{"architectures", {"LlamaForCausalLM"}},
                      {"model_type", "llama"},
                      {"vocab_size", 516},
                      {"hidden_size", 64},
                      {"intermediate_size", 128},
                      {"num_hidden_layers", 2},
                      {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},
                      {"max_position_embeddings", 512},
                      {"rms_norm_eps", 1e-5},
                      {"rope_scaling", nullptr},
                      {"torch_dtype", "bfloat16"}};
    const json tower = {
        {"architectures", {"RQVAESIGLIPTransformer"}},
        {"model_type", "rqvaesigliptransformer_model"},
        {"hidden_size", c},
        {"rqvaesiglip",
         {{"embed_dim", c},
          {"n_embed", 64},
          {"latent_shape", {4, 4, c}},
          {"code_shape", {4, 4, 2}},
          {"shared_codebook", false},
          {"restart_unused_codes", true},
          {"decay", 0.99},
          {"latent_loss_weight", 0.25},
          {"decoder_latent_shape", nullptr},
          {"pretrained_model", "tiny-siglip"},
          {"ddconfig",
           {{"double_z", false},
            {"z_channels", 8},
            {"resolution", 32},
            {"in_channels", 3},
            {"out_ch", 3},
            {"ch", 32},
            {"ch_mult", {1, 1, 2, 2}},
            {"num_res_blocks", 1},
            {"attn_resolutions", {4}},
            {"dropout", 0.0}}}}},
        {"rqtransformer",
         {{"block_size", {4, 4, 2}},
          {"input_embed_dim_1", c},
          {"input_embed_dim_2", 64},
          {"embed_dim", 32},
          {"vocab_size", 64},
          {"head", {{"n_layer", 2}, {"block", {{"n_head", 4}}}}}}},
        {"vilau",
         {{"vision", {{"image_size", 32}, {"num_heads", 4}}}, {"text", {{"num_heads", 4}}}}}};
    const json projector = {{"mm_projector_type", "mlp2x_gelu"}, {"model_type", "v2l_projector"}};
    const json top = {{"architectures", {"VILAULlamaModel"}},
                      {"model_type", "vila_u_llama"},
                      {"llm_cfg", llm},
                      {"vision_tower_cfg", tower},
                      {"mm_projector_cfg", projector},
                      {"num_video_frames", 8},
                      {"mm_vision_select_layer", -2},
                      {"custom_field", "kept"}};
    const std::map<Component, json> configs = {{Component::llm, llm},
                                               {Component::vision_tower, tower},
                                               {Component::mm_projector, projector}};
    for (Component comp : kComponents) {
      const fs::path sub = root / component_folder(comp);
      fs::create_directories(sub);
      // llm/ sharded like the release, the rest in one file each.
      io::save_sharded(sub.string(), parts[comp], comp == Component::llm ? 100000 : 1ull << 30);
      std::ofstream(sub / "config.json") << configs.at(comp).dump(2);
    }
    std::ofstream(root / "llm" / "tokenizer_config.json") << R"({"legacy": false})";
    std::ofstream(root / "config.json") << top.dump(2);
    return ours;
  }

  ModelConfig config_;
};

TEST_F(OfficialFolder, HandWrittenFolderUsesSpecNames) {
  write_official(dir_);
  const io::TensorStore tower = io::TensorStore::open((dir_ / "vision_tower").string());
  // A sample of SPEC §5.3 names at tiny shapes.
  EXPECT_EQ(tower.info("rqvaesiglip.quantizer.codebooks.1.weight").shape,
            (std::vector<int64_t>{65, 32}));
  EXPECT_EQ(tower.info("rqvaesiglip.quantizer.codebooks.1.embed_ema").shape,
            (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(tower.info("rqvaesiglip.decoder.up.1.block.0.nin_shortcut.weight").shape,
            (std::vector<int64_t>{32, 64, 1, 1}));
  EXPECT_FALSE(tower.contains("rqvaesiglip.decoder.up.2.block.0.nin_shortcut.weight"));
  EXPECT_EQ(tower.info("rqvaesiglip.decoder.up.3.attn.1.proj_out.weight").shape,
            (std::vector<int64_t>{64, 64, 1, 1}));
  EXPECT_EQ(tower.info("rqvaesiglip.siglip_model.vision_model.head.attention.in_proj_weight").shape,
            (std::vector<int64_t>{96, 32}));
  EXPECT_EQ(tower.info("rqtransformer.head_transformer.blocks.1.mlp.0.weight").shape,
            (std::vector<int64_t>{128, 32}));
  EXPECT_EQ(tower.info("rqtransformer.pos_emb_d").shape, (std::vector<int64_t>{1, 2, 32}));
  EXPECT_TRUE(tower.contains("rqvaesiglip.logit_scale"));
  EXPECT_GT(io::TensorStore::open((dir_ / "llm").string()).files().size(), 1u);  // really sharded
}

TEST_F(OfficialFolder, LoadsChecksExportsAndReloadsBitExact) {
  const auto written = write_official(dir_);
  const OfficialCheckpoint first = OfficialCheckpoint::open(dir_.string());
  EXPECT_TRUE(first.check().ok()) << first.check().summary();
  ModelConfig expected = config_;
  expected.name = dir_.filename().string();
  EXPECT_EQ(to_yaml(first.config()), to_yaml(expected));  // every size parsed back
  EXPECT_EQ(first.tensor("vision_tower.rqvaesiglip.siglip_model.logit_scale").item<float>(),
            written.at("vision_tower.rqvaesiglip.siglip_model.logit_scale").item<float>());

  ExportOptions options;
  options.source = dir_.string();
  options.max_shard_bytes = 100000;
  const fs::path out1 = dir_ / "export1", out2 = dir_ / "export2";
  export_official(out1.string(), first.config(), first.load_all(), options);
  const OfficialCheckpoint second = OfficialCheckpoint::open(out1.string());
  EXPECT_TRUE(second.check().ok()) << second.check().summary();
  EXPECT_EQ(second.names(), first.names());
  for (const std::string& name : first.names()) {
    const at::Tensor a = first.tensor(name), b = second.tensor(name);
    ASSERT_EQ(a.scalar_type(), b.scalar_type()) << name;
    ASSERT_EQ(std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()), 0) << name;
  }
  EXPECT_EQ(second.raw("config").at("custom_field"), "kept");  // fields we do not model survive
  EXPECT_TRUE(fs::exists(out1 / "llm" / "tokenizer_config.json"));
  EXPECT_TRUE(fs::exists(out1 / "llm" / "model.safetensors.index.json"));

  // Export of the export is byte-identical: nothing drifts across round trips.
  options.source = out1.string();
  export_official(out2.string(), second.config(), second.load_all(), options);
  for (const auto& file : fs::recursive_directory_iterator(out1)) {
    if (!file.is_regular_file()) continue;
    const fs::path twin = out2 / fs::relative(file.path(), out1);
    std::ifstream a(file.path(), std::ios::binary), b(twin, std::ios::binary);
    const std::string sa((std::istreambuf_iterator<char>(a)), {}),
        sb((std::istreambuf_iterator<char>(b)), {});
    EXPECT_EQ(sa, sb) << file.path();
  }
}

// What the official loader and generate_image_content read besides the weights: the LLM's
// generation config (do_sample routes image generation to the path that passes the tower)
// and the tower's image processor, written when the source folder has none.
TEST_F(OfficialFolder, ExportWritesTheGenerationAndPreprocessorConfigs) {
  write_official(dir_);
  fs::remove(dir_ / "llm" / "generation_config.json");
  fs::remove(dir_ / "vision_tower" / "preprocessor_config.json");
  const OfficialCheckpoint source = OfficialCheckpoint::open(dir_.string());
  ExportOptions options;
  options.source = dir_.string();
  const fs::path out = dir_ / "export";
  export_official(out.string(), source.config(), source.load_all(), options);
  const json generation = json::parse(std::ifstream(out / "llm" / "generation_config.json"));
  EXPECT_EQ(generation.at("do_sample"), true);
  EXPECT_EQ(generation.at("eos_token_id"), 2);
  EXPECT_EQ(generation.at("max_length"), config_.llm.max_position_embeddings);
  EXPECT_EQ(generation.at("temperature"), 0.6);
  EXPECT_EQ(generation.at("top_p"), 0.9);
  const json processor =
      json::parse(std::ifstream(out / "vision_tower" / "preprocessor_config.json"));
  EXPECT_EQ(processor.at("image_processor_type"), "CLIPImageProcessor");
  EXPECT_EQ(processor.at("crop_size").at("height"), config_.vision_tower.vision.image_size);
  EXPECT_EQ(processor.at("size").at("width"), config_.vision_tower.vision.image_size);
  EXPECT_EQ(processor.at("image_mean"), json({0.5, 0.5, 0.5}));
  EXPECT_EQ(processor.at("resample"), 3);
  // And the folder still reads back as the same model.
  EXPECT_EQ(to_yaml(OfficialCheckpoint::open(out.string()).config().vision_tower),
            to_yaml(source.config().vision_tower));
}

TEST(OfficialConfig, TowersNameTheirGoogleSiglipCheckpoint) {
  const auto vision = [](const std::string& name) {
    return load_run_config(VILAU_SOURCE_DIR "/configs/presets/" + name + ".yaml")
        .model->vision_tower.vision;
  };
  EXPECT_EQ(siglip_model_name(vision("7b-256")), "google/siglip-large-patch16-256");
  EXPECT_EQ(siglip_model_name(vision("7b-384")), "google/siglip-so400m-patch14-384");
  EXPECT_EQ(siglip_model_name(vision("tiny")), "");  // no such Google model
}

TEST_F(OfficialFolder, HeadCountFromSiglipNameWhenNoVilauSection) {
  write_official(dir_);
  json tower = json::parse(std::ifstream(dir_ / "vision_tower" / "config.json"));
  tower.erase("vilau");
  tower["rqvaesiglip"]["pretrained_model"] = "google/siglip-large-patch16-32";
  std::ofstream(dir_ / "vision_tower" / "config.json") << tower.dump();
  const OfficialCheckpoint ckpt = OfficialCheckpoint::open(dir_.string());
  EXPECT_EQ(ckpt.config().vision_tower.vision.num_heads, 16);
  EXPECT_EQ(ckpt.config().vision_tower.vision.image_size, 32);
}

TEST_F(OfficialFolder, ReportsMissingUnexpectedAndMismatchedByName) {
  write_official(dir_);
  // Rewrite the projector: drop one tensor, reshape another, add a stray one.
  const fs::path proj = dir_ / "mm_projector";
  io::save_sharded(proj.string(),
                   {{"layers.0.weight", torch::zeros({64, 31})},
                    {"layers.0.bias", torch::zeros({64})},
                    {"layers.2.weight", torch::zeros({64, 64})},
                    {"layers.9.bias", torch::zeros({1})}},
                   1ull << 30);
  const TensorCheck check = OfficialCheckpoint::open(dir_.string()).check();
  EXPECT_FALSE(check.ok());
  EXPECT_EQ(check.missing, (std::vector<std::string>{"mm_projector.layers.2.bias"}));
  EXPECT_EQ(check.unexpected, (std::vector<std::string>{"mm_projector.layers.9.bias"}));
  ASSERT_EQ(check.mismatched.size(), 1u);
  EXPECT_EQ(check.mismatched[0], "mm_projector.layers.0.weight: expected [64, 32], found [64, 31]");
  EXPECT_THAT(check.summary(), AllOf(HasSubstr("1 missing: mm_projector.layers.2.bias"),
                                     HasSubstr("1 unexpected: mm_projector.layers.9.bias")));
}

TEST_F(OfficialFolder, ExportRefusesWeightsThatDoNotFit) {
  auto weights = write_official(dir_);
  weights.erase("llm.model.norm.weight");
  weights["llm.lm_head.weight"] = torch::zeros({3, 3});
  try {
    export_official((dir_ / "bad").string(), config_, weights);
    FAIL() << "no error";
  } catch (const ShapeError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("1 missing: llm.model.norm.weight"),
                                HasSubstr("llm.lm_head.weight: expected [516, 64], found [3, 3]")));
  }
  EXPECT_FALSE(fs::exists(dir_ / "bad"));  // nothing written
}

TEST_F(OfficialFolder, ClearErrorsForBrokenFolders) {
  write_official(dir_);
  fs::remove(dir_ / "llm" / "config.json");
  try {
    OfficialCheckpoint::open(dir_.string());
    FAIL() << "no error";
  } catch (const IoError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("llm/config.json"), HasSubstr("no such file")));
  }
  std::ofstream(dir_ / "llm" / "config.json")
      << R"({"vocab_size": 516, "hidden_size": 64, "intermediate_size": 128,
      "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 512,
      "rope_scaling": {"type": "dynamic", "factor": 2.0}})";
  try {
    OfficialCheckpoint::open(dir_.string());
    FAIL() << "no error";
  } catch (const FormatError& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr("llm/config.json"), HasSubstr("rope_scaling type"),
                                HasSubstr("found \"dynamic\"")));
  }
}

}  // namespace
}  // namespace vilau
