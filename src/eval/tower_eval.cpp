#include "vilau/eval/tower_eval.h"

#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

#include "vilau/core/config.h"
#include "vilau/core/error.h"
#include "vilau/core/progress.h"
#include "vilau/eval/image_metrics.h"
#include "vilau/eval/jsonl.h"
#include "vilau/eval/shape_checker.h"
#include "vilau/io/image.h"
#include "vilau/tokenizer/tokenizer.h"
#include "vilau/vision/preprocess.h"

namespace fs = std::filesystem;

namespace vilau::eval {
namespace {

at::Device device_of(torch::nn::Module& module) {
  for (const auto& p : module.parameters()) {
    return p.device();
  }
  return at::kCPU;
}

// Pictures [B, 3, S, S] in [-1, 1] on the tower's device.
at::Tensor load_batch(const std::vector<std::string>& paths, size_t begin, size_t end, int64_t size,
                      at::Device device) {
  std::vector<at::Tensor> pixels;
  for (size_t i = begin; i < end; ++i) {
    pixels.push_back(preprocess_image(io::read_image_with_alpha(paths[i]), size));
  }
  return torch::stack(pixels).to(device);
}

std::string indexed_png(size_t i) {
  char name[32];
  std::snprintf(name, sizeof(name), "%06zu.png", i);
  return name;
}

}  // namespace

ReconstructionResult evaluate_reconstruction(VisionTowerImpl& tower,
                                             const std::vector<std::string>& images, int64_t batch,
                                             const std::string& save_dir, bool progress) {
  config_check(!images.empty(), "tower reconstruction", "at least one picture", "none");
  config_check(batch > 0, "--batch", "a positive count", std::to_string(batch));
  torch::NoGradGuard no_grad;
  const at::Device device = device_of(tower);
  const int64_t size = tower.config().vision.image_size;
  if (!save_dir.empty()) {
    fs::create_directories(fs::path(save_dir) / "inputs");
    fs::create_directories(fs::path(save_dir) / "reconstructions");
  }
  ReconstructionResult result;
  double psnr_sum = 0, ssim_sum = 0;
  int64_t finite = 0;
  ProgressBar bar("reconstruct", static_cast<int64_t>(images.size()), "image", 0, progress);
  for (size_t begin = 0; begin < images.size(); begin += static_cast<size_t>(batch)) {
    const size_t end = std::min(images.size(), begin + static_cast<size_t>(batch));
    const at::Tensor pixels = load_batch(images, begin, end, size, device);
    const at::Tensor decoded =
        postprocess_image(tower.decode_codes(tower.encode(pixels).codes).to(at::kFloat).cpu());
    const at::Tensor reference = postprocess_image(pixels.cpu());
    for (size_t i = begin; i < end; ++i) {
      const auto row = static_cast<int64_t>(i - begin);
      const double db = psnr(decoded[row], reference[row]);
      if (std::isfinite(db)) {
        psnr_sum += db;
        ++finite;
      }
      ssim_sum += ssim(decoded[row], reference[row]);
      if (!save_dir.empty()) {
        io::write_image((fs::path(save_dir) / "inputs" / indexed_png(i)).string(), reference[row]);
        io::write_image((fs::path(save_dir) / "reconstructions" / indexed_png(i)).string(),
                        decoded[row]);
      }
    }
    bar.update(static_cast<int64_t>(end));
  }
  bar.finish();
  result.count = static_cast<int64_t>(images.size());
  result.psnr_db = finite > 0 ? psnr_sum / static_cast<double>(finite) : INFINITY;
  result.ssim = ssim_sum / static_cast<double>(images.size());
  return result;
}

std::vector<LabelledImage> read_labelled_images(const std::string& path,
                                                const std::string& image_root) {
  const fs::path root = image_root.empty() ? fs::path(path).parent_path() : fs::path(image_root);
  std::vector<LabelledImage> out;
  const std::vector<nlohmann::json> rows = read_jsonl(path, "labelled pictures");
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string where = path + ":" + std::to_string(i + 1);
    const fs::path image = jsonl_string(rows[i], "image", where);
    out.push_back({(image.is_absolute() ? image : root / image).string(),
                   jsonl_string(rows[i], "label", where)});
  }
  return out;
}

ZeroShotResult zero_shot_classify(VisionTowerImpl& tower, const Tokenizer& tokenizer,
                                  const std::vector<LabelledImage>& images,
                                  const std::vector<std::string>& classes,
                                  const std::string& prompt_template, int64_t batch,
                                  bool progress) {
  config_check(!images.empty(), "zero-shot classification", "at least one picture", "none");
  config_check(batch > 0, "--batch", "a positive count", std::to_string(batch));
  const size_t slot = prompt_template.find("{}");
  config_check(slot != std::string::npos, "--template", "a prompt with {} for the class name",
               "'" + prompt_template + "'");
  std::map<std::string, int64_t> class_index;
  std::vector<std::string> prompts;
  for (const std::string& name : classes) {
    class_index.emplace(name, static_cast<int64_t>(prompts.size()));
    prompts.push_back(std::string(prompt_template).replace(slot, 2, name));
  }
  std::vector<int64_t> labels;
  for (const LabelledImage& image : images) {
    const auto it = class_index.find(image.label);
    config_check(it != class_index.end(), "zero-shot labels", "a label among the classes",
                 "'" + image.label + "' for " + image.image);
    labels.push_back(it->second);
  }
  torch::NoGradGuard no_grad;
  const at::Device device = device_of(tower);
  const at::Tensor text = torch::nn::functional::normalize(
      tower.text->forward(siglip_text_ids(tokenizer, prompts, tower.config().text).to(device))
          .pooled.to(at::kFloat),
      torch::nn::functional::NormalizeFuncOptions().dim(-1));
  std::vector<std::string> paths;
  for (const LabelledImage& image : images) {
    paths.push_back(image.image);
  }
  const int64_t k = std::min<int64_t>(5, static_cast<int64_t>(classes.size()));
  std::map<std::string, std::pair<int64_t, int64_t>> per_class;  // label -> (right, total)
  ZeroShotResult result;
  ProgressBar bar("zero-shot", static_cast<int64_t>(paths.size()), "image", 0, progress);
  for (size_t begin = 0; begin < paths.size(); begin += static_cast<size_t>(batch)) {
    const size_t end = std::min(paths.size(), begin + static_cast<size_t>(batch));
    const at::Tensor pixels =
        load_batch(paths, begin, end, tower.config().vision.image_size, device);
    const at::Tensor image =
        torch::nn::functional::normalize(tower.vision->forward(pixels).pooled.to(at::kFloat),
                                         torch::nn::functional::NormalizeFuncOptions().dim(-1));
    const at::Tensor topk = std::get<1>(image.matmul(text.t()).topk(k, -1)).cpu();
    for (size_t i = begin; i < end; ++i) {
      const at::Tensor row = topk[static_cast<int64_t>(i - begin)];
      const bool top1 = row[0].item<int64_t>() == labels[i];
      result.top1 += top1;
      result.top5 += row.eq(labels[i]).any().item<bool>();
      auto& counts = per_class[images[i].label];
      counts.first += top1;
      ++counts.second;
    }
    bar.update(static_cast<int64_t>(end));
  }
  bar.finish();
  result.count = static_cast<int64_t>(images.size());
  result.top1 /= static_cast<double>(result.count);
  result.top5 /= static_cast<double>(result.count);
  for (const auto& [label, counts] : per_class) {
    result.per_class_top1[label] =
        static_cast<double>(counts.first) / static_cast<double>(counts.second);
  }
  return result;
}

}  // namespace vilau::eval
