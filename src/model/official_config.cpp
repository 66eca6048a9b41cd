#include "official_config.h"

#include <cmath>
#include <regex>

#include "vilau/core/error.h"
#include "vilau/model/official_checkpoint.h"

namespace vilau {

namespace {

using nlohmann::json;

// Typed access to a JSON object whose messages name the file and the key.
class Fields {
 public:
  Fields(const json& object, std::string file) : object_(object), file_(std::move(file)) {
    if (!object_.is_object()) {
      throw FormatError(describe(file_, "config", "a JSON object", object_.type_name()));
    }
  }
  bool has(const char* key) const { return object_.contains(key) && !object_.at(key).is_null(); }
  const json& at(const char* key) const {
    if (!has(key)) {
      throw FormatError(describe(file_, "missing key '" + std::string(key) + "'"));
    }
    return object_.at(key);
  }
  int64_t integer(const char* key) const {
    return typed<int64_t>(key, "an integer", &json::is_number_integer);
  }
  int64_t integer(const char* key, int64_t fallback) const {
    return has(key) ? integer(key) : fallback;
  }
  double number(const char* key, double fallback) const {
    return has(key) ? typed<double>(key, "a number", &json::is_number) : fallback;
  }
  bool boolean(const char* key, bool fallback) const {
    return has(key) ? typed<bool>(key, "true or false", &json::is_boolean) : fallback;
  }
  std::string string(const char* key, const std::string& fallback) const {
    return has(key) ? typed<std::string>(key, "a string", &json::is_string) : fallback;
  }
  std::vector<int64_t> integers(const char* key) const {
    const json& v = at(key);
    if (!v.is_array() ||
        !std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number_integer(); })) {
      throw FormatError(
          describe(file_, "key '" + std::string(key) + "'", "a list of integers", v.dump()));
    }
    return v.get<std::vector<int64_t>>();
  }
  Fields sub(const char* key) const { return Fields(at(key), file_ + " [" + key + "]"); }
  const std::string& file() const { return file_; }

 private:
  template <class T>
  T typed(const char* key, const char* expected, bool (json::*check)() const noexcept) const {
    const json& v = at(key);
    if (!(v.*check)()) {
      throw FormatError(describe(file_, "key '" + std::string(key) + "'", expected, v.dump()));
    }
    return v.get<T>();
  }
  const json& object_;
  std::string file_;
};

// The SigLIP configs are not in the checkpoint (the official code downloads them by name).
// vilau's own exports record the head count; otherwise the public Google models decide.
int64_t siglip_heads(const Fields& tower, const std::string& pretrained, const char* which) {
  if (tower.has("vilau")) {
    return tower.sub("vilau").sub(which).integer("num_heads");
  }
  if (pretrained.find("so400m") != std::string::npos ||
      pretrained.find("large") != std::string::npos) {
    return 16;
  }
  if (pretrained.find("base") != std::string::npos) {
    return 12;
  }
  throw FormatError(
      describe(tower.file(), "cannot tell the SigLIP head count of '" + pretrained + "'",
               "a known google/siglip-* model or a \"vilau\" section with num_heads"));
}

int64_t count_layers(const ShapeLookup& shape, const std::string& prefix) {
  int64_t n = 0;
  while (shape(prefix + "encoder.layers." + std::to_string(n) + ".layer_norm1.weight")) {
    ++n;
  }
  return n;
}

std::vector<int64_t> require_shape(const ShapeLookup& shape, const std::string& name, size_t rank,
                                   const std::string& root) {
  const auto s = shape(name);
  if (!s || s->size() != rank) {
    throw FormatError(describe(root + "/vision_tower", "tensor '" + name + "'",
                               "a tensor of rank " + std::to_string(rank),
                               s ? "another rank" : "no such tensor"));
  }
  return *s;
}

SiglipVisionConfig parse_vision(const Fields& tower, const std::string& pretrained,
                                const ShapeLookup& shape, const std::map<std::string, json>& raw,
                                const std::string& root) {
  const std::string p = "rqvaesiglip.siglip_model.vision_model.";
  SiglipVisionConfig v;
  const auto patch = require_shape(shape, p + "embeddings.patch_embedding.weight", 4, root);
  const auto pos = require_shape(shape, p + "embeddings.position_embedding.weight", 2, root);
  v.hidden_size = patch[0];
  v.patch_size = patch[2];
  v.num_layers = count_layers(shape, p);
  v.intermediate_size = require_shape(shape, p + "encoder.layers.0.mlp.fc1.weight", 2, root)[0];
  v.num_heads = siglip_heads(tower, pretrained, "vision");
  const auto grid = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(pos[0]))));
  // Image size: our own record, then the preprocessor, then the model name, then the grid.
  std::smatch m;
  if (tower.has("vilau")) {
    v.image_size = tower.sub("vilau").sub("vision").integer("image_size");
  } else if (raw.count("preprocessor") && raw.at("preprocessor").contains("crop_size") &&
             raw.at("preprocessor")["crop_size"].contains("height")) {
    v.image_size = raw.at("preprocessor")["crop_size"]["height"].get<int64_t>();
  } else if (std::regex_search(pretrained, m, std::regex(R"(-(\d+)$)"))) {
    v.image_size = std::stoll(m[1]);
  } else {
    v.image_size = grid * v.patch_size;
  }
  if (v.grid() != grid || grid * grid != pos[0]) {
    throw FormatError(describe(
        root + "/vision_tower", "position_embedding of " + std::to_string(pos[0]) + " rows",
        "a square grid of (image_size / patch_size)^2 = " + std::to_string(v.grid() * v.grid()),
        std::to_string(pos[0])));
  }
  return v;
}

SiglipTextConfig parse_text(const Fields& tower, const std::string& pretrained,
                            const ShapeLookup& shape, const std::string& root) {
  const std::string p = "rqvaesiglip.siglip_model.text_model.";
  SiglipTextConfig t;
  const auto tokens = require_shape(shape, p + "embeddings.token_embedding.weight", 2, root);
  t.vocab_size = tokens[0];
  t.hidden_size = tokens[1];
  t.max_positions = require_shape(shape, p + "embeddings.position_embedding.weight", 2, root)[0];
  t.num_layers = count_layers(shape, p);
  t.intermediate_size = require_shape(shape, p + "encoder.layers.0.mlp.fc1.weight", 2, root)[0];
  t.num_heads = siglip_heads(tower, pretrained, "text");
  return t;
}

LlmConfig parse_llm(const Fields& f) {
  LlmConfig l;
  l.vocab_size = f.integer("vocab_size");
  l.hidden_size = f.integer("hidden_size");
  l.intermediate_size = f.integer("intermediate_size");
  l.num_layers = f.integer("num_hidden_layers");
  l.num_heads = f.integer("num_attention_heads");
  l.num_kv_heads = f.integer("num_key_value_heads", l.num_heads);
  l.max_position_embeddings = f.integer("max_position_embeddings");
  l.rms_norm_eps = f.number("rms_norm_eps", 1e-6);  // transformers' LlamaConfig default
  l.rope_theta = f.number("rope_theta", 10000.0);
  l.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  if (f.has("rope_scaling")) {
    const Fields rope = f.sub("rope_scaling");
    const std::string type = rope.string("type", rope.string("rope_type", ""));
    if (type != "linear") {
      throw FormatError(describe(f.file(), "rope_scaling type",
                                 "\"linear\" (the only kind VILA-U uses)", "\"" + type + "\""));
    }
    l.rope_scaling_factor = rope.number("factor", 1.0);
  }
  return l;
}

}  // namespace

ModelConfig parse_official_configs(const std::map<std::string, json>& raw,
                                   const ShapeLookup& vision_shape, const std::string& root) {
  ModelConfig c;
  c.name = root.substr(root.find_last_of('/') + 1);
  const Fields top(raw.at("config"), root + "/config.json");
  c.num_video_frames = top.integer("num_video_frames", 8);
  c.llm = parse_llm(Fields(raw.at("llm"), root + "/llm/config.json"));
  const Fields projector(raw.at("mm_projector"), root + "/mm_projector/config.json");
  c.projector = projector.string("mm_projector_type", "mlp2x_gelu");

  const Fields tower(raw.at("vision_tower"), root + "/vision_tower/config.json");
  const Fields rq = tower.sub("rqvaesiglip");
  const std::string pretrained = rq.string("pretrained_model", "");
  VisionTowerConfig& t = c.vision_tower;
  t.vision = parse_vision(tower, pretrained, vision_shape, raw, root);
  t.vision.select_layer = top.integer("mm_vision_select_layer", -2);
  t.text = parse_text(tower, pretrained, vision_shape, root);

  t.quantizer.codebook_size = rq.integer("n_embed");
  const auto code_shape = rq.integers("code_shape");
  if (code_shape.size() != 3) {
    throw FormatError(
        describe(rq.file(), "code_shape", "[height, width, depth]", rq.at("code_shape").dump()));
  }
  t.quantizer.depth = code_shape[2];
  t.quantizer.shared_codebook = rq.boolean("shared_codebook", false);
  t.quantizer.restart_unused = rq.boolean("restart_unused_codes", true);
  t.quantizer.decay = rq.number("decay", 0.99);
  t.quantizer.commitment_weight = rq.number("latent_loss_weight", 0.25);

  const Fields dd = rq.sub("ddconfig");
  t.decoder.ch = dd.integer("ch");
  t.decoder.ch_mult = dd.integers("ch_mult");
  t.decoder.num_res_blocks = dd.integer("num_res_blocks");
  t.decoder.attn_resolutions =
      dd.has("attn_resolutions") ? dd.integers("attn_resolutions") : std::vector<int64_t>{};
  t.decoder.z_channels = dd.integer("z_channels");
  t.decoder.resolution = dd.integer("resolution");
  t.decoder.out_ch = dd.integer("out_ch", 3);
  t.decoder.dropout = dd.number("dropout", 0.0);
  t.decoder.latent_shape =
      rq.has("decoder_latent_shape") ? rq.integers("decoder_latent_shape") : std::vector<int64_t>{};

  const Fields rt = tower.sub("rqtransformer");
  c.depth_transformer.embed_dim = rt.integer("embed_dim");
  // Absent head settings mean the config class's own defaults: 6 layers of 40 heads.
  c.depth_transformer.num_layers = 6;
  c.depth_transformer.num_heads = 40;
  if (rt.has("head")) {
    const Fields head = rt.sub("head");
    c.depth_transformer.num_layers = head.integer("n_layer", 6);
    if (head.has("block")) {
      const Fields block = head.sub("block");
      c.depth_transformer.num_heads = block.integer("n_head", 40);
      c.depth_transformer.resid_dropout = block.number("resid_pdrop", 0.1);
      c.depth_transformer.attn_dropout = block.number("attn_pdrop", 0.0);
    }
  }
  try {
    c.validate("model");
  } catch (const ConfigError& e) {
    throw FormatError(describe(root, "configs describe an inconsistent model", {}, e.what()));
  }
  return c;
}

std::map<std::string, json> make_official_configs(const ModelConfig& c,
                                                  const std::map<std::string, json>& source) {
  auto start = [&](const char* which) {
    return source.count(which) ? source.at(which) : json::object();
  };
  const LlmConfig& l = c.llm;
  json llm = start("llm");
  llm.update({{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"hidden_act", "silu"},
              {"vocab_size", l.vocab_size},
              {"hidden_size", l.hidden_size},
              {"intermediate_size", l.intermediate_size},
              {"num_hidden_layers", l.num_layers},
              {"num_attention_heads", l.num_heads},
              {"num_key_value_heads", l.num_kv_heads},
              {"max_position_embeddings", l.max_position_embeddings},
              {"rms_norm_eps", l.rms_norm_eps},
              {"rope_theta", l.rope_theta},
              {"tie_word_embeddings", l.tie_word_embeddings},
              {"torch_dtype", llm.value("torch_dtype", "bfloat16")}});
  llm["rope_scaling"] = l.rope_scaling_factor == 1.0
                            ? json(nullptr)
                            : json{{"type", "linear"}, {"factor", l.rope_scaling_factor}};

  const VisionTowerConfig& t = c.vision_tower;
  const int64_t grid = t.vision.grid(), ch = t.vision.hidden_size;
  json tower = start("vision_tower");
  json rq = tower.value("rqvaesiglip", json::object());
  rq.update({{"embed_dim", ch},
             {"n_embed", t.quantizer.codebook_size},
             {"latent_shape", {grid, grid, ch}},
             {"code_shape", {grid, grid, t.quantizer.depth}},
             {"shared_codebook", t.quantizer.shared_codebook},
             {"restart_unused_codes", t.quantizer.restart_unused},
             {"decay", t.quantizer.decay},
             {"latent_loss_weight", t.quantizer.commitment_weight},
             {"ddconfig",
              {{"double_z", false},
               {"z_channels", t.decoder.z_channels},
               {"resolution", t.decoder.resolution},
               {"in_channels", 3},
               {"out_ch", t.decoder.out_ch},
               {"ch", t.decoder.ch},
               {"ch_mult", t.decoder.ch_mult},
               {"num_res_blocks", t.decoder.num_res_blocks},
               {"attn_resolutions", t.decoder.attn_resolutions},
               {"dropout", t.decoder.dropout}}}});
  // The official loader downloads SigLIP's config by this name, so it must name the tower's
  // own geometry (without it, siglip-large-patch16-256 is assumed). Only Google's public
  // towers have a name; other geometries rely on the "vilau" section below.
  if (!rq.contains("pretrained_model")) {
    const std::string name = siglip_model_name(t.vision);
    if (!name.empty()) rq["pretrained_model"] = name;
  }
  rq["decoder_latent_shape"] =
      t.decoder.latent_shape.empty() ? json(nullptr) : json(t.decoder.latent_shape);
  json rt = tower.value("rqtransformer", json::object());
  const DepthTransformerConfig& d = c.depth_transformer;
  rt.update({{"block_size", {grid, grid, t.quantizer.depth}},
             {"input_embed_dim_1", ch},
             {"input_embed_dim_2", l.hidden_size},
             {"embed_dim", d.embed_dim},
             {"vocab_size", t.quantizer.codebook_size},
             {"head",
              {{"n_layer", d.num_layers},
               {"block",
                {{"embed_dim", d.embed_dim},
                 {"n_head", d.num_heads},
                 {"resid_pdrop", d.resid_dropout},
                 {"attn_pdrop", d.attn_dropout}}}}}});
  tower.update(
      {{"architectures", {"RQVAESIGLIPTransformer"}},
       {"model_type", "rqvaesigliptransformer_model"},
       {"hidden_size", ch},
       {"rqvaesiglip", rq},
       {"rqtransformer", rt},
       // The official code fetches SigLIP's config by name at load time; we record
       // what the weights alone cannot tell.
       {"vilau",
        {{"vision", {{"image_size", t.vision.image_size}, {"num_heads", t.vision.num_heads}}},
         {"text", {{"num_heads", t.text.num_heads}}}}}});

  json projector = start("mm_projector");
  projector.update({{"mm_projector_type", c.projector}, {"model_type", "v2l_projector"}});

  json top = start("config");
  top.update({{"architectures", {"VILAULlamaModel"}},
              {"model_type", "vila_u_llama"},
              {"llm_cfg", llm},
              {"vision_tower_cfg", tower},
              {"mm_projector_cfg", projector},
              {"hidden_size", l.hidden_size},
              {"mm_hidden_size", ch},
              {"num_video_frames", c.num_video_frames},
              {"mm_vision_select_layer", t.vision.select_layer},
              {"image_aspect_ratio", top.value("image_aspect_ratio", "resize")},
              {"mm_use_im_start_end", true},
              {"mm_use_vi_start_end", true},
              {"mm_use_im_patch_token", false},
              {"model_dtype", top.value("model_dtype", "torch.bfloat16")}});
  return {{"config", top}, {"llm", llm}, {"vision_tower", tower}, {"mm_projector", projector}};
}

std::string siglip_model_name(const SiglipVisionConfig& v) {
  const std::string size = std::to_string(v.image_size);
  if (v.hidden_size == 1024 && v.patch_size == 16) return "google/siglip-large-patch16-" + size;
  if (v.hidden_size == 1152 && v.patch_size == 14) return "google/siglip-so400m-patch14-" + size;
  if (v.hidden_size == 768 && v.patch_size == 16) return "google/siglip-base-patch16-" + size;
  return "";
}

}  // namespace vilau
