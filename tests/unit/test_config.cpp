// Config loading: inheritance, overrides and every rejection with its message.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"
#include "vilau/config.h"
#include "vilau/core/error.h"
#include "vilau/core/logging.h"

namespace vilau {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using vilau::testing::error_of;

const std::string kData = VILAU_TEST_DATA_DIR "/configs/";
const std::string kPresets = VILAU_SOURCE_DIR "/configs/presets/";

TEST(Config, PresetsLoadAndValidate) {
  const Config c256 = load_run_config(kPresets + "7b-256.yaml");
  ASSERT_TRUE(c256.model.has_value());
  EXPECT_EQ(c256.model->llm.hidden_size, 4096);
  EXPECT_EQ(c256.model->vision_tower.vision.grid(), 16);
  EXPECT_EQ(c256.model->vision_tower.quantizer.depth, 4);
  EXPECT_EQ(c256.model->depth_transformer.embed_dim, 2560);
  EXPECT_FALSE(c256.sampling.has_value());

  const Config tiny = load_run_config(kPresets + "tiny.yaml");
  EXPECT_EQ(tiny.model->name, "vila-u-tiny");
  EXPECT_EQ(tiny.model->llm.num_kv_heads, 2);
}

TEST(Config, InheritanceMergesKeyByKeyAndChildWins) {
  // 7b-384 extends 7b-256: changed keys come from the child, the rest from the parent.
  const Config c = load_run_config(kPresets + "7b-384.yaml");
  EXPECT_EQ(c.model->name, "vila-u-7b-384");
  EXPECT_EQ(c.model->vision_tower.vision.hidden_size, 1152);
  EXPECT_EQ(c.model->vision_tower.vision.num_heads, 16);  // inherited
  EXPECT_EQ(c.model->vision_tower.vision.grid(), 27);
  EXPECT_EQ(c.model->vision_tower.quantizer.depth, 16);
  EXPECT_EQ(c.model->vision_tower.decoder.latent_shape, (std::vector<int64_t>{24, 24}));
  EXPECT_EQ(c.model->vision_tower.decoder.ch_mult, (std::vector<int64_t>{1, 1, 2, 2, 4}));
  EXPECT_EQ(c.model->llm.hidden_size, 4096);

  const Config child = load_run_config(kData + "child.yaml");
  EXPECT_EQ(child.model->name, "child");
  EXPECT_EQ(child.model->llm.num_layers, 3);
  EXPECT_EQ(child.model->llm.hidden_size, 64);
  EXPECT_TRUE(child.model->vision_tower.decoder.attn_resolutions.empty());  // lists replace
}

TEST(Config, SeveralParentsMergeInOrder) {
  const Config c = load_run_config(kData + "two_parents.yaml");
  ASSERT_TRUE(c.model && c.sampling);
  EXPECT_EQ(c.model->name, "vila-u-tiny");
  EXPECT_EQ(c.sampling->text.temperature, 0.0);  // greedy.yaml
  EXPECT_EQ(c.sampling->image.top_k, 900);       // default.yaml, via greedy.yaml
  EXPECT_EQ(c.sampling->seed, 7);                // this file
}

TEST(Config, OverridesReplaceValuesAndLists) {
  const Config c =
      load_run_config(kPresets + "tiny.yaml",
                      {"model.llm.num_layers=5", "model.vision_tower.decoder.ch_mult=[1,2,2,2]",
                       "model.name=renamed", "sampling.cfg_scale=1.5"});
  EXPECT_EQ(c.model->llm.num_layers, 5);
  EXPECT_EQ(c.model->vision_tower.decoder.ch_mult, (std::vector<int64_t>{1, 2, 2, 2}));
  EXPECT_EQ(c.model->name, "renamed");
  ASSERT_TRUE(c.sampling.has_value());  // an override may create a whole section
  EXPECT_DOUBLE_EQ(c.sampling->cfg_scale, 1.5);
  EXPECT_EQ(c.sampling->image.top_k, 900);  // the rest keeps its defaults
}

TEST(Config, UnknownKeyNamesFileLineAndKnownKeys) {
  const std::string msg =
      error_of<ConfigError>([] { load_run_config(kData + "unknown_key.yaml"); });
  EXPECT_THAT(
      msg, AllOf(HasSubstr("unknown_key.yaml:4:5"), HasSubstr("unknown key 'model.llm.hiden_size'"),
                 HasSubstr("one of: vocab_size, hidden_size")));
}

TEST(Config, WrongTypeNamesKeyExpectedAndFound) {
  const std::string msg = error_of<ConfigError>([] { load_run_config(kData + "wrong_type.yaml"); });
  EXPECT_THAT(msg, AllOf(HasSubstr("wrong_type.yaml:4:5"), HasSubstr("key 'model.llm.num_layers'"),
                         HasSubstr("expected an integer, found 'two'")));
}

TEST(Config, QuotedNumberIsAString) {
  const std::string msg =
      error_of<ConfigError>([] { load_run_config(kData + "quoted_number.yaml"); });
  EXPECT_THAT(msg, AllOf(HasSubstr("quoted_number.yaml:3:3"),
                         HasSubstr("expected an integer, found the string \"7\"")));
}

TEST(Config, MissingRequiredKey) {
  const std::string msg =
      error_of<ConfigError>([] { load_run_config(kData + "missing_required.yaml"); });
  EXPECT_THAT(msg, AllOf(HasSubstr("missing_required.yaml:1:1"),
                         HasSubstr("missing required key 'model.vision_tower'")));
}

TEST(Config, MissingFile) {
  const std::string msg = error_of<IoError>([] { load_run_config(kData + "does_not_exist.yaml"); });
  EXPECT_THAT(msg, AllOf(HasSubstr("does_not_exist.yaml"), HasSubstr("no such file")));
}

TEST(Config, MissingParentNamesTheIncludingLine) {
  const std::string msg = error_of<IoError>([] { load_run_config(kData + "missing_parent.yaml"); });
  EXPECT_THAT(msg, AllOf(HasSubstr("missing_parent.yaml:1:1: defaults"),
                         HasSubstr("no_such_parent.yaml"), HasSubstr("no such file")));
}

TEST(Config, MalformedYaml) {
  const std::string msg = error_of<ConfigError>([] { load_run_config(kData + "malformed.yaml"); });
  EXPECT_THAT(msg, AllOf(HasSubstr("malformed.yaml:"), HasSubstr("malformed YAML")));
}

TEST(Config, DefaultsCycle) {
  const std::string msg = error_of<ConfigError>([] { load_run_config(kData + "cycle_a.yaml"); });
  EXPECT_THAT(msg, AllOf(HasSubstr("cycle in defaults"), HasSubstr("cycle_a.yaml -> "),
                         HasSubstr("cycle_b.yaml")));
}

TEST(Config, OverrideOfNonExistentKey) {
  const std::string msg = error_of<ConfigError>(
      [] { load_run_config(kPresets + "tiny.yaml", {"model.llm.num_layerz=4"}); });
  EXPECT_THAT(msg, AllOf(HasSubstr("override '--set model.llm.num_layerz=4'"),
                         HasSubstr("unknown key 'model.llm.num_layerz'"), HasSubstr("num_layers")));

  const std::string top =
      error_of<ConfigError>([] { load_run_config(kPresets + "tiny.yaml", {"trainer.lr=1"}); });
  EXPECT_THAT(top, HasSubstr("unknown key 'trainer'"));
}

TEST(Config, MalformedOverrides) {
  EXPECT_THAT(
      error_of<ConfigError>([] { load_run_config(kPresets + "tiny.yaml", {"model.name"}); }),
      HasSubstr("expected KEY.PATH=VALUE, found 'model.name'"));
  EXPECT_THAT(
      error_of<ConfigError>([] { load_run_config(kPresets + "tiny.yaml", {"model.name.x=1"}); }),
      HasSubstr("cannot descend into 'model.name'"));
  EXPECT_THAT(error_of<ConfigError>(
                  [] { load_run_config(kPresets + "tiny.yaml", {"model.llm.num_layers=x"}); }),
              AllOf(HasSubstr("override '--set model.llm.num_layers=x'"), HasSubstr("found 'x'")));
}

TEST(Config, SemanticValidationNamesFileAndKey) {
  const std::string msg = error_of<ConfigError>([] { load_run_config(kData + "bad_heads.yaml"); });
  EXPECT_THAT(msg, AllOf(HasSubstr("bad_heads.yaml"), HasSubstr("model.llm.num_heads"),
                         HasSubstr("expected a positive divisor of hidden_size 64, found 5")));
  // The decoder must upsample the latent grid exactly to the image size.
  const std::string res = error_of<ConfigError>([] {
    load_run_config(kPresets + "tiny.yaml", {"model.vision_tower.decoder.ch_mult=[1,2]"});
  });
  EXPECT_THAT(res, HasSubstr("model.vision_tower.decoder.resolution"));
  // GroupNorm(32) in every decoder block needs widths that are multiples of 32.
  const std::string groups = error_of<ConfigError>(
      [] { load_run_config(kPresets + "tiny.yaml", {"model.vision_tower.decoder.ch=24"}); });
  EXPECT_THAT(groups, AllOf(HasSubstr("model.vision_tower.decoder.ch_mult[0]"),
                            HasSubstr("multiple of 32"), HasSubstr("found 24")));
}

TEST(Config, PrintedConfigReadsBackIdentically) {
  const Config original = load_run_config(kPresets + "7b-384.yaml", {"sampling.seed=3"});
  const std::string printed = to_yaml(original);
  const auto path = std::filesystem::temp_directory_path() / "vilau_roundtrip.yaml";
  std::ofstream(path) << printed;
  const Config reread = load_run_config(path.string());
  EXPECT_EQ(to_yaml(reread), printed);
  EXPECT_THAT(printed,
              AllOf(HasSubstr("latent_shape: [24, 24]"), HasSubstr("rope_scaling_factor: 2.0"),
                    HasSubstr("name: \"vila-u-7b-384\"")));
  std::filesystem::remove(path);
}

TEST(Config, EmptyFileIsAnEmptyConfig) {
  const ConfigTree tree = ConfigTree::parse("", "empty.yaml");
  Config c;
  ConfigReader(tree.root()).read(c);
  EXPECT_FALSE(c.model.has_value());
  EXPECT_THAT(error_of<ConfigError>([] { ConfigTree::parse("- 1\n- 2\n", "list.yaml"); }),
              HasSubstr("list.yaml:1:1: top level of a config: expected a mapping, found a list"));
}

TEST(Logging, RejectsUnknownLevel) {
  EXPECT_THAT(error_of<ConfigError>([] { init_logging("loud"); }),
              AllOf(HasSubstr("unknown log level"), HasSubstr("found 'loud'")));
  EXPECT_NO_THROW(init_logging("warn"));
}

}  // namespace
}  // namespace vilau
