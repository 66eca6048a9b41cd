#include "vilau/eval/shape_checker.h"

#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "vilau/core/error.h"
#include "vilau/eval/jsonl.h"
#include "vilau/io/image.h"

namespace vilau::eval {
namespace {

// Below this RGB distance from the background nothing counts as drawn: it is about four
// times the spread of σ = 10 noise, while every palette colour is over 150 from the greys.
constexpr float kMinContrast = 40;

struct ShapePrototype {
  const char* name;
  double fill_ratio;
  double top_fraction;
};

// Ideal values for filled shapes; the triangle points up, so a quarter of it is in the
// upper half of its box.
constexpr ShapePrototype kPrototypes[] = {
    {"square", 1.0, 0.5}, {"circle", M_PI / 4, 0.5}, {"triangle", 0.5, 0.25}};

int median(std::vector<int>& values) {
  std::nth_element(values.begin(), values.begin() + values.size() / 2, values.end());
  return values[values.size() / 2];
}

double rgb_distance(const std::array<double, 3>& a, const std::array<int, 3>& b) {
  double sum = 0;
  for (int c = 0; c < 3; ++c) {
    sum += (a[c] - b[c]) * (a[c] - b[c]);
  }
  return std::sqrt(sum);
}

}  // namespace

ShapeReading read_shape(const at::Tensor& rgb, const World& world) {
  if (rgb.dim() != 3 || rgb.size(2) != 3 || rgb.scalar_type() != torch::kUInt8 || rgb.size(0) < 8 ||
      rgb.size(1) < 8) {
    throw ShapeError(
        describe("read_shape", "picture", "uint8 [H >= 8, W >= 8, 3]",
                 std::string(c10::toString(rgb.scalar_type())) + " " + c10::str(rgb.sizes())));
  }
  const at::Tensor image = rgb.cpu().contiguous();
  const int h = static_cast<int>(image.size(0)), w = static_cast<int>(image.size(1));
  const uint8_t* pixels = image.data_ptr<uint8_t>();

  // Only a large shape in a corner reaches the outer two-pixel ring, covering about a tenth
  // of it, which the median ignores.
  std::array<std::vector<int>, 3> border;
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      if (y < 2 || y >= h - 2 || x < 2 || x >= w - 2) {
        for (int c = 0; c < 3; ++c) {
          border[c].push_back(pixels[3 * (y * w + x) + c]);
        }
      }
    }
  }
  std::array<int, 3> background{};
  for (int c = 0; c < 3; ++c) {
    background[c] = median(border[c]);
  }
  std::vector<float> distance(static_cast<size_t>(h) * w);
  for (size_t i = 0; i < distance.size(); ++i) {
    const std::array<double, 3> pixel = {double(pixels[3 * i]), double(pixels[3 * i + 1]),
                                         double(pixels[3 * i + 2])};
    distance[i] = static_cast<float>(rgb_distance(pixel, background));
  }

  ShapeReading reading;
  // The contrast is taken at the min_pixels-th most distant pixel, so that a few outliers
  // of a noisy reconstruction cannot raise the threshold above the shape itself.
  const int min_pixels = std::max(12, h * w / 256);
  std::vector<float> ranked = distance;
  std::nth_element(ranked.begin(), ranked.begin() + (min_pixels - 1), ranked.end(),
                   std::greater<float>());
  const float contrast = ranked[min_pixels - 1];
  if (contrast < kMinContrast) {
    return reading;
  }
  // Half the contrast puts a blurred edge where the sharp one was.
  cv::Mat mask(h, w, CV_8U);
  for (int i = 0; i < h * w; ++i) {
    mask.data[i] = distance[i] > contrast / 2 ? 1 : 0;
  }
  cv::Mat labels, stats, centroids;
  const int n = cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8, CV_32S);
  int best = 0;
  for (int label = 1; label < n; ++label) {
    if (best == 0 ||
        stats.at<int>(label, cv::CC_STAT_AREA) > stats.at<int>(best, cv::CC_STAT_AREA)) {
      best = label;
    }
  }
  if (best == 0 || stats.at<int>(best, cv::CC_STAT_AREA) < min_pixels) {
    return reading;
  }
  const int left = stats.at<int>(best, cv::CC_STAT_LEFT),
            top = stats.at<int>(best, cv::CC_STAT_TOP);
  const int box_w = stats.at<int>(best, cv::CC_STAT_WIDTH);
  const int box_h = stats.at<int>(best, cv::CC_STAT_HEIGHT);
  const int area = stats.at<int>(best, cv::CC_STAT_AREA);
  std::array<std::vector<int>, 3> foreground;
  double upper = 0;
  const double middle = top + box_h / 2.0;
  for (int y = top; y < top + box_h; ++y) {
    for (int x = left; x < left + box_w; ++x) {
      if (labels.at<int>(y, x) != best) {
        continue;
      }
      for (int c = 0; c < 3; ++c) {
        foreground[c].push_back(pixels[3 * (y * w + x) + c]);
      }
      // The middle row of an odd-height box is split between the halves.
      upper += y + 0.5 < middle ? 1.0 : (y + 0.5 == middle ? 0.5 : 0.0);
    }
  }
  reading.found = true;
  reading.foreground_pixels = area;
  reading.fill_ratio = static_cast<double>(area) / (static_cast<double>(box_w) * box_h);
  reading.aspect_ratio = static_cast<double>(box_w) / box_h;
  reading.top_fraction = upper / area;
  reading.centroid_x = centroids.at<double>(best, 0) / w;
  reading.centroid_y = centroids.at<double>(best, 1) / h;

  // The median leaves out the blended edge pixels that a mean would average in.
  std::array<double, 3> colour{};
  for (int c = 0; c < 3; ++c) {
    colour[c] = median(foreground[c]);
  }
  reading.colour_distance = std::numeric_limits<double>::infinity();
  for (const NamedColour& candidate : world.colours) {
    const double d = rgb_distance(colour, candidate.rgb);
    if (d < reading.colour_distance) {
      reading.colour_distance = d;
      reading.colour = candidate.name;
    }
  }
  // A box far from square fits none of the shapes well; it counts against every prototype.
  const double squareness = std::log(reading.aspect_ratio);
  double best_shape = std::numeric_limits<double>::infinity();
  for (const ShapePrototype& prototype : kPrototypes) {
    if (std::find(world.shapes.begin(), world.shapes.end(), prototype.name) == world.shapes.end()) {
      continue;
    }
    const double d = std::hypot(reading.fill_ratio - prototype.fill_ratio,
                                reading.top_fraction - prototype.top_fraction, squareness);
    if (d < best_shape) {
      best_shape = d;
      reading.shape = prototype.name;
    }
  }
  double best_position = std::numeric_limits<double>::infinity();
  for (const NamedPosition& position : world.positions) {
    const double d = std::hypot(reading.centroid_x - position.x, reading.centroid_y - position.y);
    if (d < best_position) {
      best_position = d;
      reading.position = position.name;
    }
  }
  return reading;
}

SynthMetrics evaluate_synth_images(const World& world, const std::vector<EvalPrompt>& prompts,
                                   const std::string& images_dir) {
  SynthMetrics metrics;
  int colour = 0, shape = 0, both = 0, position = 0, with_position = 0;
  for (const EvalPrompt& prompt : prompts) {
    with_position += prompt.position.empty() ? 0 : 1;
    const std::string path = (std::filesystem::path(images_dir) / (prompt.id + ".png")).string();
    if (!std::filesystem::is_regular_file(path)) {
      metrics.missing.push_back(prompt.id);
      continue;
    }
    const ShapeReading reading = read_shape(io::read_image(path), world);
    const bool colour_ok = reading.found && reading.colour == prompt.colour;
    const bool shape_ok = reading.found && reading.shape == prompt.shape;
    colour += colour_ok;
    shape += shape_ok;
    both += colour_ok && shape_ok;
    position += !prompt.position.empty() && reading.found && reading.position == prompt.position;
  }
  metrics.count = static_cast<int>(prompts.size());
  if (metrics.count > 0) {
    metrics.colour_accuracy = static_cast<double>(colour) / metrics.count;
    metrics.shape_accuracy = static_cast<double>(shape) / metrics.count;
    metrics.both_accuracy = static_cast<double>(both) / metrics.count;
  }
  if (with_position > 0) {
    metrics.position_accuracy = static_cast<double>(position) / with_position;
  }
  return metrics;
}

std::string normalize_answer(std::string_view answer) {
  std::string out;
  bool space = false;
  for (const char ch : answer) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isspace(c)) {
      space = !out.empty();
    } else if (!std::ispunct(c)) {
      if (space) {
        out += ' ';
        space = false;
      }
      out += static_cast<char>(std::tolower(c));
    }
  }
  return out;
}

VqaScore vqa_accuracy(const std::map<std::string, std::string>& answers,
                      const std::vector<EvalQuestion>& questions) {
  VqaScore score;
  std::map<std::string, std::pair<int, int>> kinds;  // kind -> (right, asked)
  int right = 0;
  for (const EvalQuestion& q : questions) {
    const auto it = answers.find(q.id);
    if (it == answers.end()) {
      score.missing.push_back(q.id);
    }
    const bool ok =
        it != answers.end() && normalize_answer(it->second) == normalize_answer(q.answer);
    right += ok;
    kinds[q.kind].first += ok;
    kinds[q.kind].second += 1;
  }
  score.count = static_cast<int>(questions.size());
  score.accuracy = score.count > 0 ? static_cast<double>(right) / score.count : 0.0;
  for (const auto& [kind, counts] : kinds) {
    score.by_kind[kind] = static_cast<double>(counts.first) / counts.second;
  }
  return score;
}

std::map<std::string, std::string> read_answers(const std::string& path) {
  std::map<std::string, std::string> answers;
  const std::vector<nlohmann::json> rows = read_jsonl(path, "answers ({\"id\", \"answer\"} lines)");
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string where = path + ":" + std::to_string(i + 1);
    answers[jsonl_string(rows[i], "id", where)] = jsonl_string(rows[i], "answer", where);
  }
  return answers;
}

std::vector<int> agreement(const std::vector<std::vector<std::string>>& answers,
                           const std::vector<std::string>& expected) {
  std::vector<int> out;
  for (size_t k = 0; k < answers.size(); ++k) {
    if (answers[k].size() != expected.size()) {
      throw ShapeError(describe("self-verification", "answers of candidate " + std::to_string(k),
                                std::to_string(expected.size()),
                                std::to_string(answers[k].size())));
    }
    int matches = 0;
    for (size_t q = 0; q < expected.size(); ++q) {
      matches += normalize_answer(answers[k][q]) == normalize_answer(expected[q]);
    }
    out.push_back(matches);
  }
  return out;
}

double psnr(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != torch::kUInt8 || b.scalar_type() != torch::kUInt8 ||
      !a.sizes().equals(b.sizes())) {
    throw ShapeError(describe("psnr", "pictures", "two uint8 tensors of one shape",
                              std::string(c10::toString(a.scalar_type())) + " " +
                                  c10::str(a.sizes()) + " and " + c10::toString(b.scalar_type()) +
                                  " " + c10::str(b.sizes())));
  }
  const double mse = (a.to(torch::kDouble) - b.to(torch::kDouble)).pow(2).mean().item<double>();
  if (mse == 0) {
    return std::numeric_limits<double>::infinity();
  }
  return 10.0 * std::log10(255.0 * 255.0 / mse);
}

}  // namespace vilau::eval
