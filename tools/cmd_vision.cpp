// `vilau encode` and `vilau reconstruct`: the vision tower of an official checkpoint on
// one image.
#include <torch/torch.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "vilau/core/error.h"
#include "vilau/infer/runtime.h"
#include "vilau/io/image.h"
#include "vilau/vision/preprocess.h"
#include "vilau/vision/vision_tower.h"

namespace vilau::cli {

namespace {

struct TowerRun {
  VisionTower tower{nullptr};
  at::Tensor pixels;
};

TowerRun load(const std::string& model, const std::string& image, const std::string& device_name) {
  const torch::Device device = parse_device(device_name);
  TowerRun run{load_vision_tower(model, device), {}};
  const int64_t size = run.tower->config().vision.image_size;
  run.pixels = preprocess_image(io::read_image_with_alpha(image), size).unsqueeze(0).to(device);
  return run;
}

void add_model_options(CLI::App* cmd, std::shared_ptr<std::string> model,
                       std::shared_ptr<std::string> image, std::shared_ptr<std::string> device) {
  cmd->add_option("--model", *model, "An official VILA-U checkpoint folder")->required();
  cmd->add_option("--image", *image, "Input image (PNG, JPEG, ...)")->required();
  cmd->add_option("--device", *device, "cpu, cuda or cuda:N")->capture_default_str();
}

}  // namespace

void add_vision_commands(CLI::App& app) {
  auto model = std::make_shared<std::string>(), image = std::make_shared<std::string>(),
       device = std::make_shared<std::string>("cpu"), out = std::make_shared<std::string>();

  CLI::App* encode =
      app.add_subcommand("encode", "Print an image's residual codes [H][W][D] as JSON");
  add_model_options(encode, model, image, device);
  encode->callback([model, image, device] {
    TowerRun run = load(*model, *image, *device);
    torch::NoGradGuard no_grad;
    const at::Tensor codes = run.tower->encode(run.pixels).codes[0].to(torch::kCPU).contiguous();
    const std::vector<int64_t> flat(codes.data_ptr<int64_t>(),
                                    codes.data_ptr<int64_t>() + codes.numel());
    nlohmann::json grid = nlohmann::json::array();
    for (int64_t h = 0, i = 0; h < codes.size(0); ++h) {
      nlohmann::json row = nlohmann::json::array();
      for (int64_t w = 0; w < codes.size(1); ++w, i += codes.size(2)) {
        row.push_back(std::vector<int64_t>(flat.begin() + i, flat.begin() + i + codes.size(2)));
      }
      grid.push_back(row);
    }
    std::printf("%s\n",
                nlohmann::json{{"shape", codes.sizes().vec()}, {"codes", grid}}.dump().c_str());
  });

  CLI::App* reconstruct =
      app.add_subcommand("reconstruct", "Encode an image to codes and decode it back to pixels");
  add_model_options(reconstruct, model, image, device);
  reconstruct->add_option("--out", *out, "Output image (.png)")->required();
  reconstruct->callback([model, image, device, out] {
    TowerRun run = load(*model, *image, *device);
    torch::NoGradGuard no_grad;
    const at::Tensor decoded = run.tower->decode_codes(run.tower->encode(run.pixels).codes);
    const at::Tensor rgb = postprocess_image(decoded)[0].to(torch::kCPU);
    io::write_image(*out, rgb);
    std::printf("%s\n",
                nlohmann::json{{"out", *out}, {"size", {rgb.size(0), rgb.size(1)}}}.dump().c_str());
  });
}

}  // namespace vilau::cli
