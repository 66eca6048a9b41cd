#!/usr/bin/env python3
"""Generate golden tokenizer fixtures for the C++ VILA-U tokenizer.

Reference implementation: Hugging Face transformers' *slow* LlamaTokenizer
(legacy=False), as used by VILA-U (transformers 4.36.2), on top of a small
SentencePiece BPE model trained here with LLaMA-like settings.

Run from the repository root:

    /tmp/refvenv/bin/python tests/reference/make_tokenizer_fixtures.py

Outputs (deterministic; re-running gives byte-identical files):

    tests/data/tokenizer/tokenizer.model
    tests/data/tokenizer/tokenizer_config.json
    tests/data/tokenizer/special_tokens_map.json
    tests/data/tokenizer/added_tokens.json
    tests/data/tokenizer/golden.json

See tests/reference/README.md.
"""

import io
import json
import os
import shutil
import sys
import tempfile

import sentencepiece as spm
import transformers
from transformers import LlamaTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(HERE, "data", "corpus.txt")
OUT_DIR = os.path.join(REPO_ROOT, "tests", "data", "tokenizer")

VOCAB_SIZE = 512
IMAGE_TOKEN_INDEX = -200
DEFAULT_IMAGE_TOKEN = "<image>"

# VILA-U conversation template "vicuna_v1" system prompt.
SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


# --------------------------------------------------------------------------
# 1. SentencePiece model
# --------------------------------------------------------------------------
def train_sentencepiece(tmpdir):
    with open(CORPUS, "r", encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()

    # Train from an iterator into an in-memory writer so that no file system
    # paths (input file, model prefix) end up in the serialized trainer_spec:
    # that keeps tokenizer.model byte-identical across machines and runs.
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        max_sentence_length=16384,
        minloglevel=2,
    )
    path = os.path.join(tmpdir, "tokenizer.model")
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return path


# --------------------------------------------------------------------------
# 2. HF slow tokenizer, set up like VILA-U
# --------------------------------------------------------------------------
def make_tokenizer(model_path):
    tok = LlamaTokenizer(
        vocab_file=model_path,
        legacy=False,
        add_bos_token=True,
        add_eos_token=False,
    )
    assert not tok.is_fast
    tok.pad_token = tok.unk_token
    # Exactly as VILA-U (llava/model/builder.py / language_model) does it.
    tok.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    tok.add_tokens(["<vi_start>", "<vi_end>"], special_tokens=True)
    expect = {"<unk>": 0, "<s>": 1, "</s>": 2,
              "<im_start>": 512, "<im_end>": 513, "<vi_start>": 514, "<vi_end>": 515}
    for t, i in expect.items():
        got = tok.convert_tokens_to_ids(t)
        assert got == i, (t, got, i)
    assert tok.vocab_size == VOCAB_SIZE and len(tok) == VOCAB_SIZE + 4
    return tok


def tokenizer_image_token(prompt, tokenizer, image_token_index=IMAGE_TOKEN_INDEX):
    """Verbatim port of VILA-U llava/mm_utils.py tokenizer_image_token."""
    prompt_chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]

    def insert_separator(X, sep):
        return [ele for sublist in zip(X, [sep] * len(X)) for ele in sublist][:-1]

    input_ids = []
    offset = 0
    if len(prompt_chunks) > 0 and len(prompt_chunks[0]) > 0 and prompt_chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        input_ids.append(prompt_chunks[0][0])
    for x in insert_separator(prompt_chunks, [image_token_index] * (offset + 1)):
        input_ids.extend(x[offset:])
    return input_ids


def tokenizer_image_token_simple(prompt, tokenizer):
    """The same rule as described in prose (used as a cross-check)."""
    ids = [tokenizer.bos_token_id]
    for i, chunk in enumerate(prompt.split(DEFAULT_IMAGE_TOKEN)):
        if i > 0:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(tokenizer(chunk).input_ids[1:])
    return ids


# --------------------------------------------------------------------------
# 3. Cases
# --------------------------------------------------------------------------
def plain_cases():
    c = []

    def add(name, text):
        c.append({"name": name, "text": text})

    add("empty", "")
    # single words
    add("word_hello", "hello")
    add("word_cat", "cat")
    add("word_The", "The")
    add("word_image", "image")
    add("word_unseen", "zyzzyva")
    add("word_capital_mix", "PhotoGraph")
    add("sentence_simple", "A red cat is sitting on a wooden table.")
    add("sentence_question", "How many apples are there?")
    add("sentence_long",
        "The picture shows a quiet street after the rain, with puddles reflecting the orange glow of the lamps.")
    # whitespace
    add("space_only", " ")
    add("spaces_two", "  ")
    add("spaces_leading_two_a", "  a")
    add("space_leading_a", " a")
    add("space_leading_hello", " hello")
    add("space_trailing_two", "a  ")
    add("space_trailing_one", "hello ")
    add("spaces_repeated", "a   b")
    add("spaces_many", "cat          dog")
    add("spaces_around", "   the dog   ")
    # the corpus teaches whitespace-only pieces ("▁▁", "▁▁▁▁"); these depend on
    # trainer_spec.allow_whitespace_only_pieces being honoured when encoding
    add("spaces_four_between", "a    b")
    add("indent_four", "    x")
    add("indent_eight", "        The cat")
    add("indent_after_newline", "Items:\n    Deeper items")
    add("aligned_columns", "Time:        late afternoon")
    add("spaces_before_special", "   <im_start>")
    add("spaces_after_special", "<im_end>   x")
    # newlines and tabs
    add("newline_between", "a\nb")
    add("newline_only", "\n")
    add("newline_double", "line one\n\nline two")
    add("newline_leading", "\nWhat is this?")
    add("newline_trailing", "What is this?\n")
    add("newline_space", "a \n b")
    add("crlf", "a\r\nb")
    add("tab_between", "a\tb")
    add("tab_only", "\t")
    add("tabs_and_spaces", "Tabs\tand\tspaces  mixed")
    # unicode
    add("accents_cafe", "café")
    add("accents_sentence", "A café serves crème brûlée in München.")
    add("accents_enye", "señor piñata mañana")
    add("accents_umlaut", "Über Zoë")
    add("accent_unseen", "ÅØ ł ğ")
    add("cjk_seen", "猫")
    add("cjk_words", "你好 日本")
    add("cjk_unseen", "漢字テスト")
    add("cjk_mixed", "The sign says 山水 here.")
    add("emoji_smile", "🙂")
    add("emoji_cat_sentence", "a 🐱 cat")
    add("emoji_multi", "🙂🙂 👍🏽")
    add("emoji_zwj", "👨‍👩‍👧")
    add("unicode_misc", "naïve – “quoted” … ½ °C")
    add("combining_mark", "e\u0301")
    add("nbsp", "a\u00a0b")
    add("zero_width_space", "a\u200bb")
    # digits
    add("digits_12345", "12345")
    add("digits_pi", "3.14")
    add("digits_year", "year 2024")
    add("digits_mixed", "256x256 pixels, 16x16 patches")
    add("digits_money", "$4.99 or $12.50")
    add("digits_time", "7:45 am")
    add("digits_leading_space", " 0")
    # punctuation / symbols
    add("punct_mix", "Wait... is that a bird, a plane, or a cloud?!")
    add("punct_quotes", "\"Look,\" she said, 'now'.")
    add("punct_brackets", "(a) [b] {c} <d>")
    add("symbols", "# _ -> @ & % ^ ~ ` | \\ /")
    add("angle_brackets", "<")
    add("fake_special", "<im_start")
    add("fake_special2", "<imstart>")
    add("image_word_no_brackets", "image> <image")
    # literal U+2581
    add("lower_one_eighth_block", "▁")
    add("lower_block_inside", "a▁b")
    add("lower_block_leading", "▁hello")
    add("lower_block_and_space", "▁ ▁▁ x")
    # special tokens
    add("sp_im_start", "<im_start>")
    add("sp_im_end", "<im_end>")
    add("sp_text_im_start_text", "a<im_start>b")
    add("sp_text_space_im_start_space_text", "a <im_start> b")
    add("sp_space_im_start", " <im_start>")
    add("sp_im_start_space", "<im_start> ")
    add("sp_im_end_eos", "<im_end></s>")
    add("sp_bos_hello", "<s>hello")
    add("sp_bos_space_hello", "<s> hello")
    add("sp_eos", "</s>")
    add("sp_unk", "<unk>")
    add("sp_unk_in_text", "an <unk> word")
    add("sp_vi_pair", "<vi_start><vi_end>")
    add("sp_vi_spaced", "<vi_start> video <vi_end>")
    add("sp_all", "<s><im_start><im_end><vi_start><vi_end></s><unk>")
    add("sp_newline_im_start", "\n<im_start>\n")
    add("sp_double_im_start", "<im_start><im_start>")
    add("sp_eos_user", "a1</s>USER: q2")
    # template-like fragments
    add("frag_assistant", " ASSISTANT:")
    add("frag_user", "USER:")
    add("frag_system", SYSTEM)
    return c


def image_cases():
    c = []

    def add(name, text):
        c.append({"name": name, "text": text})

    add("img_only", "<image>")
    add("img_start_newline", "<image>\nWhat is this?")
    add("img_middle", "Look: <image> here")
    add("img_end", "describe <image>")
    add("img_two_in_row", "<image><image>")
    add("img_three_newlines", "<image>\n<image>\n<image>\nWhat changed?")
    add("img_spaced_row", "a <image> <image> b")
    add("img_with_special", "<im_start><image><im_end>")
    add("img_newline_only_chunks", "\n<image>\n")
    return c


T2I_PROMPTS = [
    "A red apple on a wooden table.",
    "  a snowy mountain peak under a clear blue sky  ",
    "An astronaut riding a horse on the moon, digital art, 4k",
    "café in München at 7:45 🙂",
]
T2V_PROMPTS = [
    "Waves crashing on rocks at sunset.",
    "A cat walks slowly across a kitchen floor",
    "A drone flies over 3 green hills. ",
]
QUESTIONS = [
    "What is in this image?",
    "How many cats are there? Answer with a number.",
    "Describe the scene in detail.",
    "What color is the car?\nAnswer briefly.",
]
VIDEO_QUESTIONS = [
    "What happens in this video?",
    "Describe the motion of the ball.",
    "How many people appear?",
]
MULTITURN = [
    ("What is in this image?", "A dog on a sofa.", "What color is the dog?"),
    ("How many apples are there?", "There are 3 apples.", "Are they red?"),
    ("Describe the picture.", "A quiet street after the rain, with orange lamps.", "Is it night?"),
]
T2I_CAPTIONS = [
    "A small wooden boat floats on a calm lake at dawn.",
    "A vase full of red and white roses on a marble table.",
    "A neon sign glowing in a dark alley at midnight.",
]


# Messages with the whitespace users type around them: Python's str.strip() in the official
# tokenize_conversation removes it, Unicode spaces (U+3000, U+00A0, ...) included.
STRIP_MESSAGES = [
    "Why is the sky blue? ",
    "  What is this?\n",
    "\tCount the dogs.\t",
    "Describe it.\r\n",
    "\u3000Ideographic spaces\u3000",
    "\u00a0No-break spaces\u00a0\u2009",
    "",
    "\n",
    "Is <image> here in the middle?",
    "Ends with an image <image>",
    "A literal <im_start> token ",
    "Zero-width space is not whitespace\u200b",
]


def official_prompt(message, start=""):
    """vila_u/utils/tokenizer.py tokenize_conversation + vicuna_v1 get_prompt, one human
    turn and the generation prompt: the message is .strip()ped; an empty one renders as
    "USER:" with no space."""
    message = message.strip()
    user = " USER: " + message + " " if message else " USER:"
    return SYSTEM + user + "ASSISTANT:" + (" " + start if start else "")


def template_cases():
    c = []
    for i, p in enumerate(T2I_PROMPTS):
        c.append({"name": f"t2i_cond_{i}", "template": "t2i_cond", "prompt": p,
                  "text": official_prompt(p, "<im_start>")})
    c.append({"name": "t2i_uncond", "template": "t2i_uncond",
              "text": SYSTEM + " USER:" + "ASSISTANT: <im_start>"})
    for i, p in enumerate(T2V_PROMPTS):
        c.append({"name": f"t2v_cond_{i}", "template": "t2v_cond", "prompt": p,
                  # tokenize_conversation strips every message, for video as for images.
                  "text": official_prompt(p, "<vi_start>")})
    for i, q in enumerate(QUESTIONS):
        c.append({"name": f"understand_{i}", "template": "understand", "question": q,
                  "text": official_prompt("<image>\n" + q)})
    for n in (2, 8):
        for i, q in enumerate(VIDEO_QUESTIONS):
            c.append({"name": f"video_{n}_{i}", "template": "video", "num_frames": n, "question": q,
                      "text": official_prompt("<image>\n" * n + q)})
    for i, m in enumerate(STRIP_MESSAGES):
        c.append({"name": f"strip_understand_{i}", "template": "understand", "question": m,
                  "text": official_prompt("<image>\n" + m)})
        c.append({"name": f"strip_video_{i}", "template": "video", "num_frames": 2, "question": m,
                  "text": official_prompt("<image>\n" * 2 + m)})
        c.append({"name": f"strip_t2i_{i}", "template": "t2i_cond", "prompt": m,
                  "text": official_prompt(m, "<im_start>")})
        c.append({"name": f"strip_t2v_{i}", "template": "t2v_cond", "prompt": m,
                  "text": official_prompt(m, "<vi_start>")})
    for i, (q1, a1, q2) in enumerate(MULTITURN):
        c.append({"name": f"multiturn_{i}", "template": "multiturn",
                  "question": q1, "answer": a1, "question2": q2,
                  "text": SYSTEM + " USER: <image>\n" + q1 + " ASSISTANT: " + a1 + "</s>USER: " + q2 + " ASSISTANT:"})
    for i, cap in enumerate(T2I_CAPTIONS):
        c.append({"name": f"t2i_train_{i}", "template": "t2i_train", "prompt": cap,
                  "text": SYSTEM + " USER: " + cap + " ASSISTANT: <im_start><image><im_end></s>"})
    return c


def build_case(tok, case):
    text = case["text"]
    out = {"name": case["name"]}
    for k in ("template", "num_frames", "prompt", "question", "answer", "question2"):
        if k in case:
            out[k] = case[k]
    out["text"] = text
    is_image = DEFAULT_IMAGE_TOKEN in text
    out["image_token"] = is_image
    if is_image:
        ids = tokenizer_image_token(text, tok)
        assert ids == tokenizer_image_token_simple(text, tok), case["name"]
    else:
        ids = tok(text).input_ids
        assert ids == tok.encode(text), case["name"]
    out["ids"] = ids
    real = [i for i in ids if i != IMAGE_TOKEN_INDEX]
    if not is_image:
        out["pieces"] = tok.convert_ids_to_tokens(ids)
    out["decoded"] = tok.decode(real, skip_special_tokens=False)
    out["decoded_skip_special"] = tok.decode(real, skip_special_tokens=True)
    return out


# --------------------------------------------------------------------------
def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = train_sentencepiece(tmp)
        tok = make_tokenizer(model_path)

        # save_pretrained into a scratch dir first, then copy its files
        # verbatim (so golden.json etc. in OUT_DIR are left alone).
        save_dir = os.path.join(tmp, "saved")
        tok.save_pretrained(save_dir)
        saved = sorted(os.listdir(save_dir))
        for name in saved:
            shutil.copyfile(os.path.join(save_dir, name), os.path.join(OUT_DIR, name))

        # Sanity: the saved directory loads back to an identical tokenizer.
        tok2 = LlamaTokenizer.from_pretrained(OUT_DIR, legacy=False)
        assert len(tok2) == len(tok)

        cases = [build_case(tok, c) for c in plain_cases() + image_cases() + template_cases()]
        names = [c["name"] for c in cases]
        assert len(names) == len(set(names)), "duplicate case names"
        for c in cases:
            if c["image_token"]:
                assert tokenizer_image_token(c["text"], tok2) == c["ids"], c["name"]
            else:
                assert tok2(c["text"]).input_ids == c["ids"], c["name"]

        golden = {
            "transformers_version": transformers.__version__,
            "sentencepiece_version": spm.__version__,
            "tokenizer_class": type(tok).__name__,
            "legacy": False,
            "vocab_size": tok.vocab_size,
            "total_size": len(tok),
            "bos_id": tok.bos_token_id,
            "eos_id": tok.eos_token_id,
            "unk_id": tok.unk_token_id,
            "pad_id": tok.pad_token_id,
            "image_token_index": IMAGE_TOKEN_INDEX,
            "unk_token_length": tok.unk_token_length,
            "all_special_tokens": tok.all_special_tokens,
            "added_tokens": {t: tok.convert_tokens_to_ids(t)
                             for t in ["<im_start>", "<im_end>", "<vi_start>", "<vi_end>"]},
            "system_prompt": SYSTEM,
            # Every code point for which Python's str.isspace() holds (what str.strip() removes).
            "python_whitespace": [i for i in range(0x110000) if chr(i).isspace()],
            "cases": cases,
        }
        with open(os.path.join(OUT_DIR, "golden.json"), "w", encoding="utf-8") as f:
            json.dump(golden, f, indent=1, ensure_ascii=False)
            f.write("\n")

    print(f"transformers {transformers.__version__}, sentencepiece {spm.__version__}")
    print(f"wrote {len(cases)} cases and {', '.join(saved + ['golden.json'])} to {os.path.relpath(OUT_DIR, REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
