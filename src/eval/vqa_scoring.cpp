#include "vilau/eval/vqa_scoring.h"

#include <algorithm>
#include <set>
#include <unordered_map>

#include "vilau/core/error.h"

namespace vilau::eval {

namespace {

// Python's str.isspace() on ASCII: what strip() and split() without arguments remove. The
// official scripts run on Python 3 strings, which also treat Unicode spaces this way; answers
// and annotations are ASCII in practice, so only ASCII is handled.
bool is_py_space(char c) {
  return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f');
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string ascii_lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view py_strip(std::string_view text) {
  while (!text.empty() && is_py_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_py_space(text.back())) text.remove_suffix(1);
  return text;
}

std::vector<std::string> py_split(std::string_view text) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_py_space(text[i])) ++i;
    const size_t start = i;
    while (i < text.size() && !is_py_space(text[i])) ++i;
    if (i > start) words.emplace_back(text.substr(start, i - start));
  }
  return words;
}

// vqaEval.py's `punct` list (the Python 3 version of the VQA API): apostrophes, colons and
// periods are not in it; periods have their own rule.
constexpr std::string_view kVqaPunctuation = ";/[]\"{}()=+\\_-><@`,?!";

// vqaEval.py passes re.UNICODE (32) where re.sub takes its `count`, so at most 32 periods go.
constexpr int kMaxPeriodsStripped = 32;

const std::unordered_map<std::string, std::string>& vqa_number_words() {
  static const std::unordered_map<std::string, std::string> map = {
      {"none", "0"}, {"zero", "0"}, {"one", "1"},   {"two", "2"},   {"three", "3"}, {"four", "4"},
      {"five", "5"}, {"six", "6"},  {"seven", "7"}, {"eight", "8"}, {"nine", "9"},  {"ten", "10"}};
  return map;
}

// vqaEval.py's contraction table. Its four keys with capitals ("Im", "Ive", "Id've", "I'dve")
// can never match a lower-cased word, so they are left out.
const std::unordered_map<std::string, std::string>& vqa_contractions() {
  // clang-format off
  static const std::unordered_map<std::string, std::string> map = {
      {"aint", "ain't"}, {"arent", "aren't"}, {"cant", "can't"}, {"couldve", "could've"},
      {"couldnt", "couldn't"}, {"couldn'tve", "couldn't've"}, {"couldnt've", "couldn't've"},
      {"didnt", "didn't"}, {"doesnt", "doesn't"}, {"dont", "don't"}, {"hadnt", "hadn't"},
      {"hadnt've", "hadn't've"}, {"hadn'tve", "hadn't've"}, {"hasnt", "hasn't"},
      {"havent", "haven't"}, {"hed", "he'd"}, {"hed've", "he'd've"}, {"he'dve", "he'd've"},
      {"hes", "he's"}, {"howd", "how'd"}, {"howll", "how'll"}, {"hows", "how's"},
      {"isnt", "isn't"}, {"itd", "it'd"}, {"itd've", "it'd've"}, {"it'dve", "it'd've"},
      {"itll", "it'll"}, {"let's", "let's"}, {"maam", "ma'am"}, {"mightnt", "mightn't"},
      {"mightnt've", "mightn't've"}, {"mightn'tve", "mightn't've"}, {"mightve", "might've"},
      {"mustnt", "mustn't"}, {"mustve", "must've"}, {"neednt", "needn't"}, {"notve", "not've"},
      {"oclock", "o'clock"}, {"oughtnt", "oughtn't"}, {"ow's'at", "'ow's'at"},
      {"'ows'at", "'ow's'at"}, {"'ow'sat", "'ow's'at"}, {"shant", "shan't"},
      {"shed've", "she'd've"}, {"she'dve", "she'd've"}, {"she's", "she's"},
      {"shouldve", "should've"}, {"shouldnt", "shouldn't"}, {"shouldnt've", "shouldn't've"},
      {"shouldn'tve", "shouldn't've"}, {"somebody'd", "somebodyd"},
      {"somebodyd've", "somebody'd've"}, {"somebody'dve", "somebody'd've"},
      {"somebodyll", "somebody'll"}, {"somebodys", "somebody's"}, {"someoned", "someone'd"},
      {"someoned've", "someone'd've"}, {"someone'dve", "someone'd've"},
      {"someonell", "someone'll"}, {"someones", "someone's"}, {"somethingd", "something'd"},
      {"somethingd've", "something'd've"}, {"something'dve", "something'd've"},
      {"somethingll", "something'll"}, {"thats", "that's"}, {"thered", "there'd"},
      {"thered've", "there'd've"}, {"there'dve", "there'd've"}, {"therere", "there're"},
      {"theres", "there's"}, {"theyd", "they'd"}, {"theyd've", "they'd've"},
      {"they'dve", "they'd've"}, {"theyll", "they'll"}, {"theyre", "they're"},
      {"theyve", "they've"}, {"twas", "'twas"}, {"wasnt", "wasn't"}, {"wed've", "we'd've"},
      {"we'dve", "we'd've"}, {"weve", "we've"}, {"werent", "weren't"}, {"whatll", "what'll"},
      {"whatre", "what're"}, {"whats", "what's"}, {"whatve", "what've"}, {"whens", "when's"},
      {"whered", "where'd"}, {"wheres", "where's"}, {"whereve", "where've"}, {"whod", "who'd"},
      {"whod've", "who'd've"}, {"who'dve", "who'd've"}, {"wholl", "who'll"}, {"whos", "who's"},
      {"whove", "who've"}, {"whyll", "why'll"}, {"whyre", "why're"}, {"whys", "why's"},
      {"wont", "won't"}, {"wouldve", "would've"}, {"wouldnt", "wouldn't"},
      {"wouldnt've", "wouldn't've"}, {"wouldn'tve", "wouldn't've"}, {"yall", "y'all"},
      {"yall'll", "y'all'll"}, {"y'allll", "y'all'll"}, {"yall'd've", "y'all'd've"},
      {"y'alld've", "y'all'd've"}, {"y'all'dve", "y'all'd've"}, {"youd", "you'd"},
      {"youd've", "you'd've"}, {"you'dve", "you'd've"}, {"youll", "you'll"}, {"youre", "you're"},
      {"youve", "you've"}};
  // clang-format on
  return map;
}

double percent(double part, double whole) { return whole > 0 ? 100.0 * part / whole : 0.0; }

// Mean of each group's values, in percent.
std::map<std::string, double> group_means(
    const std::map<std::string, std::vector<double>>& groups) {
  std::map<std::string, double> means;
  for (const auto& [name, values] : groups) {
    double sum = 0;
    for (const double v : values) sum += v;
    means[name] = percent(sum, static_cast<double>(values.size()));
  }
  return means;
}

// The first `n` characters of UTF-8 text (Python slices characters, not bytes).
std::string_view utf8_prefix(std::string_view text, size_t n) {
  size_t i = 0;
  for (size_t chars = 0; i < text.size() && chars < n; ++chars) {
    ++i;
    while (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) ++i;
  }
  return text.substr(0, i);
}

}  // namespace

std::string vqa_process_punctuation(std::string_view text) {
  bool digit_comma_digit = false;
  for (size_t i = 0; i + 2 < text.size(); ++i) {
    digit_comma_digit |= is_digit(text[i]) && text[i + 1] == ',' && is_digit(text[i + 2]);
  }
  std::string out(text);
  for (const char p : kVqaPunctuation) {
    // The test looks at the original text, not at the result of earlier marks.
    const bool touches_space = text.find(std::string{p, ' '}) != std::string_view::npos ||
                               text.find(std::string{' ', p}) != std::string_view::npos;
    if (touches_space || digit_comma_digit) {
      out.erase(std::remove(out.begin(), out.end(), p), out.end());
    } else {
      std::replace(out.begin(), out.end(), p, ' ');
    }
  }
  // periodStrip, "(?!<=\d)(\.)(?!\d)": its first group is a look-ahead for the two
  // characters "<=", which never follow where a period starts, so the rule is "a period not
  // followed by a digit".
  std::string stripped;
  int removed = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const bool before_digit = i + 1 < out.size() && is_digit(out[i + 1]);
    if (out[i] == '.' && !before_digit && removed < kMaxPeriodsStripped) {
      ++removed;
      continue;
    }
    stripped += out[i];
  }
  return stripped;
}

std::string vqa_process_digit_article(std::string_view text) {
  std::vector<std::string> words;
  for (std::string& word : py_split(ascii_lower(text))) {
    const auto number = vqa_number_words().find(word);
    if (number != vqa_number_words().end()) word = number->second;
    if (word == "a" || word == "an" || word == "the") continue;
    const auto full = vqa_contractions().find(word);
    words.push_back(full == vqa_contractions().end() ? word : full->second);
  }
  std::string out;
  for (const std::string& word : words) {
    if (!out.empty()) out += ' ';
    out += word;
  }
  return out;
}

std::string vqa_normalize_answer(std::string_view answer) {
  std::string text(answer);
  std::replace(text.begin(), text.end(), '\n', ' ');
  std::replace(text.begin(), text.end(), '\t', ' ');
  return vqa_process_digit_article(vqa_process_punctuation(py_strip(text)));
}

double vqa_question_accuracy(std::string_view answer, std::vector<std::string> human_answers) {
  if (human_answers.empty()) return 0.0;
  const std::string predicted = vqa_normalize_answer(answer);
  // As in vqaEval.py: human answers get only the punctuation rule, and only when they are
  // not all the same string (so ten identical "t-shirt" keep their hyphen while the model's
  // answer loses it). They are never lower-cased nor have digits or articles changed: the
  // released annotations already are in that form.
  if (std::set<std::string>(human_answers.begin(), human_answers.end()).size() > 1) {
    for (std::string& h : human_answers) h = vqa_process_punctuation(h);
  }
  // Each annotator is left out in turn. vqaEval.py drops the answer dicts equal to the
  // left-out one; every dict carries its own answer_id, so that is exactly one of them.
  const auto matches =
      static_cast<int64_t>(std::count(human_answers.begin(), human_answers.end(), predicted));
  double sum = 0;
  for (const std::string& left_out : human_answers) {
    const int64_t others = matches - (left_out == predicted ? 1 : 0);
    sum += std::min(1.0, static_cast<double>(others) / 3.0);
  }
  return sum / static_cast<double>(human_answers.size());
}

VqaV2Score score_vqav2(const std::map<std::string, VqaV2Truth>& truth,
                       const std::map<std::string, std::string>& answers) {
  VqaV2Score score;
  std::map<std::string, std::vector<double>> by_answer_type, by_question_type;
  double sum = 0;
  for (const auto& [id, t] : truth) {
    const auto it = answers.find(id);
    if (it == answers.end()) score.missing.push_back(id);
    const double acc = it == answers.end() ? 0.0 : vqa_question_accuracy(it->second, t.answers);
    score.per_question[id] = acc;
    sum += acc;
    if (!t.answer_type.empty()) by_answer_type[t.answer_type].push_back(acc);
    if (!t.question_type.empty()) by_question_type[t.question_type].push_back(acc);
  }
  score.count = static_cast<int64_t>(truth.size());
  score.accuracy = percent(sum, static_cast<double>(score.count));
  score.by_answer_type = group_means(by_answer_type);
  score.by_question_type = group_means(by_question_type);
  return score;
}

bool pope_answer_is_yes(std::string_view answer) {
  std::string_view sentence = answer.substr(0, answer.find('.'));
  std::string text;
  for (const char c : sentence) {
    if (c != ',') text += c;
  }
  // Split at single spaces, as str.split(' ') does; empty pieces match nothing.
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(' ', start), text.size());
    const std::string_view word(text.data() + start, end - start);
    if (word == "No" || word == "no" || word == "not") return false;
    start = end + 1;
  }
  return true;
}

PopeMetrics pope_metrics(int64_t tp, int64_t fp, int64_t tn, int64_t fn) {
  PopeMetrics m;
  m.tp = tp;
  m.fp = fp;
  m.tn = tn;
  m.fn = fn;
  const auto d = [](int64_t n) { return static_cast<double>(n); };
  const int64_t total = tp + fp + tn + fn;
  m.accuracy = percent(d(tp + tn), d(total));
  m.precision = percent(d(tp), d(tp + fp));
  m.recall = percent(d(tp), d(tp + fn));
  m.f1 = m.precision + m.recall > 0 ? 2 * m.precision * m.recall / (m.precision + m.recall) : 0;
  m.yes_ratio = percent(d(tp + fp), d(total));
  return m;
}

PopeScore score_pope(const std::map<std::string, PopeItem>& items,
                     const std::map<std::string, std::string>& answers) {
  struct Counts {
    int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  };
  Counts all;
  std::map<std::string, Counts> categories;
  PopeScore score;
  for (const auto& [id, item] : items) {
    const auto it = answers.find(id);
    if (it == answers.end()) score.missing.push_back(id);
    const bool yes = it == answers.end() ? !item.label_yes : pope_answer_is_yes(it->second);
    for (Counts* c : {&all, item.category.empty() ? nullptr : &categories[item.category]}) {
      if (c == nullptr) continue;
      c->tp += yes && item.label_yes;
      c->fp += yes && !item.label_yes;
      c->tn += !yes && !item.label_yes;
      c->fn += !yes && item.label_yes;
    }
  }
  score.all = pope_metrics(all.tp, all.fp, all.tn, all.fn);
  for (const auto& [name, c] : categories) {
    score.by_category[name] = pope_metrics(c.tp, c.fp, c.tn, c.fn);
  }
  if (!score.by_category.empty()) {
    PopeMetrics& mean = score.category_mean;
    for (const auto& [name, m] : score.by_category) {
      mean.tp += m.tp;
      mean.fp += m.fp;
      mean.tn += m.tn;
      mean.fn += m.fn;
      mean.accuracy += m.accuracy;
      mean.precision += m.precision;
      mean.recall += m.recall;
      mean.f1 += m.f1;
      mean.yes_ratio += m.yes_ratio;
    }
    const auto n = static_cast<double>(score.by_category.size());
    for (double* rate :
         {&mean.accuracy, &mean.precision, &mean.recall, &mean.f1, &mean.yes_ratio}) {
      *rate /= n;
    }
  }
  return score;
}

std::string mme_parse_answer(std::string_view answer) {
  const std::string text = ascii_lower(answer);
  if (text == "yes" || text == "no") return text;
  const std::string_view prefix = utf8_prefix(text, 4);
  if (prefix.find("yes") != std::string_view::npos) return "yes";
  if (prefix.find("no") != std::string_view::npos) return "no";
  return "other";
}

const std::vector<std::string>& mme_perception_subtasks() {
  static const std::vector<std::string> names = {"existence", "count",     "position", "color",
                                                 "posters",   "celebrity", "scene",    "landmark",
                                                 "artwork",   "OCR"};
  return names;
}

const std::vector<std::string>& mme_cognition_subtasks() {
  static const std::vector<std::string> names = {"commonsense_reasoning", "numerical_calculation",
                                                 "text_translation", "code_reasoning"};
  return names;
}

MmeScore score_mme(const std::map<std::string, MmeItem>& items,
                   const std::map<std::string, std::string>& answers) {
  const auto& perception = mme_perception_subtasks();
  const auto& cognition = mme_cognition_subtasks();
  const auto known = [](const std::vector<std::string>& names, const std::string& name) {
    return std::find(names.begin(), names.end(), name) != names.end();
  };
  MmeScore score;
  // subtask -> image -> whether each of its questions was answered right
  std::map<std::string, std::map<std::string, std::vector<bool>>> results;
  for (const auto& [id, item] : items) {
    if (!known(perception, item.category) && !known(cognition, item.category)) {
      throw FormatError(describe("MME question " + id, "category '" + item.category + "'",
                                 "one of the 14 MME subtasks (existence, count, ..., OCR, "
                                 "commonsense_reasoning, ..., code_reasoning)"));
    }
    const std::string truth = ascii_lower(py_strip(item.answer));
    if (truth != "yes" && truth != "no") {
      throw FormatError(describe("MME question " + id, "ground-truth answer", "yes or no",
                                 "'" + item.answer + "'"));
    }
    const auto it = answers.find(id);
    if (it == answers.end()) score.missing.push_back(id);
    const std::string predicted = it == answers.end() ? "" : mme_parse_answer(it->second);
    MmeSubtaskScore& subtask = score.subtasks[item.category];
    subtask.other += predicted == "other";
    subtask.questions += 1;
    results[item.category][item.image].push_back(predicted == truth);
  }
  for (auto& [name, images] : results) {
    MmeSubtaskScore& subtask = score.subtasks[name];
    int64_t right = 0, both_right = 0;
    for (const auto& [image, correct] : images) {
      if (correct.size() != 2) {
        throw FormatError(describe("MME subtask " + name, "image '" + image + "'",
                                   "exactly 2 questions (acc+ needs both)",
                                   std::to_string(correct.size())));
      }
      right += correct[0] + correct[1];
      both_right += correct[0] && correct[1];
    }
    subtask.images = static_cast<int64_t>(images.size());
    subtask.acc = percent(static_cast<double>(right), static_cast<double>(subtask.questions));
    subtask.acc_plus =
        percent(static_cast<double>(both_right), static_cast<double>(subtask.images));
    subtask.score = subtask.acc + subtask.acc_plus;
    (known(perception, name) ? score.perception : score.cognition) += subtask.score;
  }
  score.total = score.perception + score.cognition;
  return score;
}

std::string gqa_normalize_answer(std::string_view answer) {
  while (!answer.empty() && answer.back() == '.') answer.remove_suffix(1);
  return ascii_lower(answer);
}

ExactMatchScore score_gqa(const std::map<std::string, GqaItem>& items,
                          const std::map<std::string, std::string>& answers) {
  ExactMatchScore score;
  std::map<std::string, std::vector<double>> categories;
  double right = 0;
  for (const auto& [id, item] : items) {
    const auto it = answers.find(id);
    if (it == answers.end()) score.missing.push_back(id);
    const double ok =
        it != answers.end() && gqa_normalize_answer(it->second) == item.answer ? 1.0 : 0.0;
    score.per_question[id] = ok;
    right += ok;
    if (!item.category.empty()) categories[item.category].push_back(ok);
  }
  score.count = static_cast<int64_t>(items.size());
  score.accuracy = percent(right, static_cast<double>(score.count));
  score.by_category = group_means(categories);
  return score;
}

}  // namespace vilau::eval
