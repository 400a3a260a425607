#!/usr/bin/env python3
"""Golden fixtures for the engine's tokenizers, from independent implementations.

Command (from the repository root, with the models set up under models/):
    python3 tests/reference/make_tokenizer_fixtures.py

Writes
  tests/fixtures/tokenizer_fixtures.json  expected ids / decoded text / chat prompts
  tests/fixtures/tok512_llama.gguf        tok512's vocabulary as GGUF "llama" metadata
                                          (written by llama.cpp's `gguf` package), to
                                          test the GGUF SentencePiece path
  tests/fixtures/tokenizer_bad_*.gguf     tiny GGUFs with malformed tokenizer metadata
  tests/fixtures/tok512_variant.model     tok512.model edited to reach SentencePiece
                                          paths the real models do not: user-defined
                                          and unused pieces, no byte fallback, no
                                          dummy prefix (expected ids: sentencepiece)

References:
  * tok512.model, Llama-2 tokenizer.model: Python `sentencepiece` (encode / decode).
  * "tok512_keep_whitespace": sentencepiece on tok512.model with the normalizer's
    remove_extra_whitespaces switched off (the model proto with one more
    normalizer_spec field appended; protobuf merges it). This is what llama2.c's
    tokenizer.bin and GGUF can express: neither stores that switch.
  * "llama2" ids_parse_special: the text is cut at control-token strings (<s>, </s>,
    <unk>; leftmost-longest) and each piece of text is encoded by sentencepiece
    on its own -- the engine's definition of parse_special for SentencePiece.
  * SmolLM2: Hugging Face `transformers`, loading the tokenizer from the same GGUF
    file (AutoTokenizer.from_pretrained(dir, gguf_file=name)). parse_special=false
    is split_special_tokens=True. "ids_individual_digits" comes from the same
    tokenizer with SmolLM2's original pre-tokenizer (Digits(individual_digits) then
    ByteLevel), which the GGUF conversion does not rebuild.
"""
import json
import os
import random
import re
import sys
import tempfile

import gguf
import sentencepiece as spm
import tokenizers
import transformers
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOK512 = "models/stories260K/tok512.model"
LLAMA2 = "models/llama2-tokenizer/tokenizer.model"
SMOLLM2 = "models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT_JSON = "tests/fixtures/tokenizer_fixtures.json"
OUT_GGUF = "tests/fixtures/tok512_llama.gguf"
OUT_VARIANT = "tests/fixtures/tok512_variant.model"
# Malformed tokenizer metadata, for the loader's error paths.
OUT_BAD_MODEL = "tests/fixtures/tokenizer_bad_model.gguf"    # tokenizer.ggml.model "bert"
OUT_BAD_TYPES = "tests/fixtures/tokenizer_bad_types.gguf"    # 3 tokens, 2 token types
OUT_BAD_MERGE = "tests/fixtures/tokenizer_bad_merge.gguf"    # gpt2 merge of unknown tokens


def handwritten_strings():
    return [
        # empty, whitespace only, leading / trailing whitespace
        "", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \t \n ", "hello", " hello", "  hello",
        "hello ", "hello  ", "   hello world   ", "\thello\t", "\nhello\n", " \n hello",
        "hello\n\n\nworld", "a\tb\tc", "line one\r\nline two\r\n", "x    y", "x \t\t y",
        "end with newline\n", "    indented code", "\n\n\n\n", "  \n  \n  ",
        # English, TinyStories style
        "Once upon a time, there was a little girl named Lily.",
        "She loved to play outside in the park with her dog, Max.",
        "The quick brown fox jumps over the lazy dog.",
        "Hello, world!", "Hello world", "HELLO WORLD", "hElLo WoRlD",
        "It was a sunny day. Tom said, \"Let's go!\"",
        # contractions
        "it's", "It's", "IT'S", "we're", "they've", "I'm", "you'll", "he'd", "don't", "can't",
        "won't you?", "'s", "'t", "'re 've 'm 'll 'd", "rock'n'roll", "o'clock", "y'all'd've",
        "it\u2019s curly", "'hello'", "''", "'''", "!!'s", "the dog's bone", "I'D", "x 's",
        # digits and numbers
        "0", "7", "42", "1234567890", "12345678901234567890123456789", "3.14159", "-273.15",
        "1,000,000", "2024-01-31", "10:45 pm", "v1.2.3", "a1b2c3", "abc123def", "1st 2nd 3rd",
        "a  1", "x   2024", "price:  100 dollars", " 12345", "  007", "\t42", "\n 9",
        "\u0661\u0662\u0663 arabic-indic digits", "\u00bd \u00be \u2155", "\u2160\u2161\u2162 roman",
        # punctuation runs
        "!!!", "?!?!", "...", "\u2026", "---", "***", "#####", "@#$%^&*()", "!@#$ %^&*",
        "a,b;c:d", "(parenthesized)", "[brackets] {braces} <angles>", "~`|\\/", "$$$ 100%",
        "\"quoted\"", "\u201csmart quotes\u201d", "\u00abguillemets\u00bb", "--flag=value",
        # special-token strings as plain text
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>", "<pad>",
        "<s>Hello</s>", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        "text<|im_end|>more", "<|im_start|><|im_end|>", "< s >", "<0x41>", "<repo_name>x",
        "\u2581", "\u2581\u2581hello", "a\u2581b",
        # accents and combining marks
        "caf\u00e9", "cafe\u0301", "na\u00efve r\u00e9sum\u00e9", "\u00c5ngstr\u00f6m", "Sm\u00f8rrebr\u00f8d",
        "Stra\u00dfe", "\u0130stanbul", "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
        "a\u0300\u0301\u0302\u0303\u0304", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319a\u0335lgo",
        "\u00e9\u00e8\u00ea\u00eb \u00e0\u00e2\u00e4 \u00f4\u00f6 \u00f9\u00fb\u00fc \u00e7",
        # CJK and other scripts
        "\u65e5\u672c\u8a9e", "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c", "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
        "\u4eca\u65e5\u306f\u3044\u3044\u5929\u6c17\u3067\u3059\u306d\u3002", "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
        "\u4e2d\u6587 English \u6df7\u5408 text", "\u6f22\u5b57\u3072\u3089\u304c\u306a\u30ab\u30bf\u30ab\u30ca",
        "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \uff11\uff12\uff13",
        "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
        "English \u0627\u0644\u0639\u0631\u0628\u064a\u0629 mixed", "\u200f\u05e2\u05d1\u05e8\u05d9\u05ea\u200e",
        "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",
        "\u10d2\u10d0\u10db\u10d0\u10e0\u10ef\u10dd\u10d1\u10d0", "\u0532\u0561\u0580\u0587", "\u1200\u1208\u1208",
        # emoji: single, skin tone, ZWJ sequences, flags, keycaps
        "\U0001f600", "\U0001f44d\U0001f3fd", "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",
        "\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f1fa\U0001f1f8\U0001f1ef\U0001f1f5\U0001f1e9\U0001f1ea",
        "1\ufe0f\u20e3 #\ufe0f\u20e3", "I \u2764\ufe0f tokenizers \U0001f389\U0001f389\U0001f389",
        "\U0001f9d1\U0001f3fb\u200d\U0001f4bb coding", "\U0001f937\u200d\u2642\ufe0f", "\u263a\u2639\u2603",
        "emoji\U0001f525in\U0001f525words", "\U0001f600\U0001f603\U0001f604\U0001f601\U0001f606\U0001f605",
        # unusual whitespace and control characters
        "a\u00a0b", "a\u3000b", "a\u2003b", "a\u200bb", "a\u2028b", "a\u0085b", "a\x0bb\x0cc",
        "\x00", "a\x00b", "\x07bell", "del\x7f", "ctrl a\x04b\x13c\x06", "\ufeffBOM", "\u00adsoft\u00adhyphen",
        "\U0001d54f\U0001d560\U0001d55d\U0001d55d math", "\u2200x\u2208\u211d: x\u00b2 \u2265 0",
        "\u20ac100 \u00a350 \u00a5500 \u20b9", "\ufffd replacement", "\U00010348 gothic",
        # code in several languages
        "def add(a, b):\n    return a + b\n",
        "for (int i = 0; i < n; ++i) {\n\tsum += v[i];\n}",
        "const f = (x) => x * 2; // double\nconsole.log(f(21));",
        "fn main() {\n    println!(\"Hello, {}!\", name);\n}",
        "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
        "<div class=\"a\"><p>Hi &amp; bye</p></div>",
        "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
        "#!/bin/bash\nset -euo pipefail\necho \"$HOME\" | grep -v '^#'\n",
        "    if x == 1:\n        pass\n    elif x:\n        raise ValueError('bad')\n",
        "template <typename T>\nstd::vector<T> v{1, 2, 3};",
        "x=1;y=2;z=x+y", "a_b_c snake_case CamelCase kebab-case", "http://example.com/path?q=1&r=2#frag",
        "user@example.com", "C:\\Windows\\System32", "~/src/medusa-serve/build",
        "\\begin{equation} e^{i\\pi} + 1 = 0 \\end{equation}",
        # very long words and repetitions
        "a" * 300, "supercalifragilisticexpialidocious" * 12, "ab" * 200, "\u65e5" * 120,
        "\U0001f600" * 40, "!" * 100, " " * 64, "\n" * 30, "x " * 150, "1" * 120,
        "pneumonoultramicroscopicsilicovolcanoconiosis",
    ]


def random_strings(count):
    rng = random.Random(20240531)
    alphabet = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ") * 4
                + list("0123456789") * 2 + list(" " * 30) + list("\t\n") * 2
                + list(".,;:!?'\"-_()[]{}<>/\\|@#$%^&*+=~`")
                + list("\u00e9\u00fc\u00f1\u00df\u00e5\u00f8\u0301")
                + list("\u65e5\u672c\u8a9e\u4e2d\u6587\ud55c\uad6d\u3042\u30a2")
                + list("\u0645\u0631\u05e9\u05dc\u0928\u092e\u0e2a\u041f\u0440\u03b1")
                + ["\U0001f600", "\U0001f44d", "\u200d", "\ufe0f", "\U0001f1fa", "\u2581", "\u00a0"])
    words = ["the", "The", "and", "'s", "'t", "'re", "<s>", "</s>", "<|im_end|>", "<|im_start|>",
             "  ", "\n\n", "123", "3.14", "don't", "hello", "world", "\U0001f468\u200d\U0001f469"]
    out = []
    for i in range(count):
        n = rng.choice([1, 2, 3, 5, 8, 13, 21, 40, 80])
        parts = []
        for _ in range(n):
            parts.append(rng.choice(words) if rng.random() < 0.25 else rng.choice(alphabet))
        out.append("".join(parts))
    return out


def keep_whitespace_model(path):
    """tok512.model with normalizer_spec.remove_extra_whitespaces = false."""
    with open(path, "rb") as f:
        data = f.read()
    # Field 3 (normalizer_spec), length 2: field 4 (varint) = 0. Protobuf merges
    # a repeated singular message field into the earlier one.
    return spm.SentencePieceProcessor(model_proto=data + b"\x1a\x02\x20\x00")


# --- a minimal protobuf wire-format editor (enough for the model proto) ---

def _varint(data, i):
    value, shift = 0, 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def _encode_varint(value):
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _fields(data):
    """[(field number, wire type, raw value bytes)] of one message."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        field, wire = key >> 3, key & 7
        start = i
        if wire == 0:
            _, i = _varint(data, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = _varint(data, i)
            start = i
            i += length
        else:
            raise ValueError(f"wire type {wire}")
        out.append((field, wire, data[start:i]))
    return out


def _serialize(fields):
    out = bytearray()
    for field, wire, raw in fields:
        out += _encode_varint(field << 3 | wire)
        if wire == 2:
            out += _encode_varint(len(raw))
        out += raw
    return bytes(out)


def write_variant_model(path):
    """tok512.model with some pieces made USER_DEFINED (4) or UNUSED (5), byte
    pieces made UNUSED and byte_fallback off, and no dummy prefix."""
    user_defined = {"ed", "\u2581the", "ing"}
    unused = {"he", "nd", "\u2581w", "in"}
    with open(os.path.join(ROOT, TOK512), "rb") as f:
        top = _fields(f.read())
    edited = []
    for field, wire, raw in top:
        if field == 1:  # a piece
            piece_fields = _fields(raw)
            text = next(v for f, _, v in piece_fields if f == 1).decode("utf-8")
            new_type = 4 if text in user_defined else 5 if text in unused else None
            if re.fullmatch(r"<0x[0-9A-F]{2}>", text):
                new_type = 5
            if new_type is not None:
                piece_fields = [x for x in piece_fields if x[0] != 3] + [(3, 0, _encode_varint(new_type))]
            raw = _serialize(piece_fields)
        elif field == 2:  # trainer_spec: byte_fallback (35) = false
            raw = raw + _serialize([(35, 0, b"\x00")])
        elif field == 3:  # normalizer_spec: add_dummy_prefix (3) = false
            raw = raw + _serialize([(3, 0, b"\x00")])
        edited.append((field, wire, raw))
    with open(path, "wb") as f:
        f.write(_serialize(edited))


def split_at_specials(text, specials):
    """Leftmost-longest split at special strings: [("text", s) | ("special", s)]."""
    pattern = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
    out, pos = [], 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            out.append(("text", text[pos:m.start()]))
        out.append(("special", m.group(0)))
        pos = m.end()
    if pos < len(text):
        out.append(("text", text[pos:]))
    return out


def spm_fixture(sp, strings, path, bos_indices):
    ids = [sp.encode(s) for s in strings]
    return {
        "file": path,
        "reference": f"sentencepiece {spm.__version__}",
        "ids": ids,
        "decoded": [sp.decode(x) for x in ids],
        "ids_with_bos": {str(i): sp.encode(strings[i], add_bos=True) for i in bos_indices},
    }


def spm_parse_special(sp, text):
    specials = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())
                if sp.is_control(i) or sp.is_unknown(i)}
    ids = []
    for kind, part in split_at_specials(text, specials):
        ids.extend([specials[part]] if kind == "special" else sp.encode(part))
    return ids


def smollm2_fixture(strings, bos_indices):
    directory, name = os.path.split(os.path.join(ROOT, SMOLLM2))
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    backend = json.loads(tok.backend_tokenizer.to_str())
    # The GGUF conversion builds a plain ByteLevel pre-tokenizer (GPT-2 regex).
    assert backend["pre_tokenizer"]["type"] == "ByteLevel", backend["pre_tokenizer"]
    assert backend["normalizer"] is None, backend["normalizer"]

    def encode(s, parse_special):
        return tok(s, add_special_tokens=False, split_special_tokens=not parse_special)["input_ids"]

    ids = [encode(s, False) for s in strings]
    fixture = {
        "file": SMOLLM2,
        "reference": f"transformers {transformers.__version__} (tokenizers {tokenizers.__version__}) "
                     "AutoTokenizer.from_pretrained(dir, gguf_file=name)",
        "ids": ids,
        "ids_parse_special": [encode(s, True) for s in strings],
        "decoded": [tok.decode(x, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                    for x in ids],
        "ids_with_bos": {str(i): tok(strings[i], add_special_tokens=True, split_special_tokens=True)["input_ids"]
                         for i in bos_indices},
    }
    # SmolLM2's own tokenizer.json splits every digit before the GPT-2 regex.
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    fixture["ids_individual_digits"] = [encode(s, False) for s in strings]
    differ = [i for i in range(len(strings)) if fixture["ids_individual_digits"][i] != ids[i]]
    print(f"smollm2: individual digit splitting changes {len(differ)} of {len(strings)} strings: "
          f"{[strings[i] for i in differ[:8]]}")
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=False, trim_offsets=True, use_regex=True)
    return tok, fixture


def chat_cases(tok):
    conversations = [
        ([{"role": "user", "content": "Hi"}], True),
        ([{"role": "user", "content": "Hi"}], False),
        ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}], True),
        ([{"role": "user", "content": "Tell me a story."},
          {"role": "assistant", "content": "Once upon a time..."},
          {"role": "user", "content": "Continue, please.\nMake it short."}], True),
        ([{"role": "assistant", "content": "I start."}, {"role": "user", "content": "ok"}], True),
        ([{"role": "user", "content": "\u65e5\u672c\u8a9e\u3067 \U0001f600  spaces\ttab"}], True),
        ([{"role": "system", "content": ""}, {"role": "user", "content": ""}], False),
    ]  # transformers refuses an empty conversation; so does the engine
    out = []
    for messages, add_generation_prompt in conversations:
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        out.append({
            "messages": messages,
            "add_generation_prompt": add_generation_prompt,
            "text": text,
            "ids": tok(text, add_special_tokens=False)["input_ids"],
        })
    return out


def write_tok512_gguf(path):
    sp = spm.SentencePieceProcessor(model_file=os.path.join(ROOT, TOK512))
    n = sp.get_piece_size()
    def piece_type(i):
        if sp.is_unknown(i):
            return gguf.TokenType.UNKNOWN
        if sp.is_control(i):
            return gguf.TokenType.CONTROL
        if sp.is_byte(i):
            return gguf.TokenType.BYTE
        if sp.is_unused(i):
            return gguf.TokenType.UNUSED
        return gguf.TokenType.NORMAL
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([sp.id_to_piece(i).encode("utf-8") for i in range(n)])
    writer.add_token_scores([sp.get_score(i) for i in range(n)])
    writer.add_token_types([piece_type(i) for i in range(n)])
    writer.add_bos_token_id(sp.bos_id())
    writer.add_eos_token_id(sp.eos_id())
    writer.add_unk_token_id(sp.unk_id())
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_bad_ggufs():
    def write(path, fill):
        writer = gguf.GGUFWriter(path, "llama")
        fill(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    def bad_model(w):
        w.add_tokenizer_model("bert")
        w.add_token_list([b"a", b"b", b"c"])

    def bad_types(w):
        w.add_tokenizer_model("llama")
        w.add_token_list([b"<unk>", b"<s>", b"</s>"])
        w.add_token_types([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL])

    def bad_merge(w):
        w.add_tokenizer_model("gpt2")
        w.add_token_list([b"a", b"b", b"ab"])
        w.add_token_merges([b"a b", b"x y"])

    write(OUT_BAD_MODEL, bad_model)
    write(OUT_BAD_TYPES, bad_types)
    write(OUT_BAD_MERGE, bad_merge)


def main():
    os.chdir(ROOT)
    strings = handwritten_strings()
    strings += random_strings(260 - len(strings))
    bos_indices = [0, 1, 9, 27, 60]
    for s in strings:
        assert s.encode("utf-8").decode("utf-8") == s

    write_variant_model(OUT_VARIANT)
    tok512 = spm.SentencePieceProcessor(model_file=TOK512)
    variant = spm.SentencePieceProcessor(model_file=OUT_VARIANT)
    assert variant.is_unused(variant.piece_to_id("he")) and not variant.is_byte(3)
    llama2 = spm.SentencePieceProcessor(model_file=LLAMA2)
    fixtures = {
        "command": "python3 tests/reference/make_tokenizer_fixtures.py",
        "strings": strings,
        "tokenizers": {
            "tok512": spm_fixture(tok512, strings, TOK512, bos_indices),
            "tok512_keep_whitespace": spm_fixture(keep_whitespace_model(TOK512), strings,
                                                  TOK512 + " (remove_extra_whitespaces=false)",
                                                  bos_indices),
            "llama2": spm_fixture(llama2, strings, LLAMA2, bos_indices),
            "tok512_variant": spm_fixture(variant, strings, OUT_VARIANT, bos_indices),
        },
    }
    fixtures["tokenizers"]["llama2"]["ids_parse_special"] = [spm_parse_special(llama2, s) for s in strings]
    smollm2_tok, smollm2 = smollm2_fixture(strings, bos_indices)
    fixtures["tokenizers"]["smollm2"] = smollm2
    fixtures["chat"] = chat_cases(smollm2_tok)

    os.makedirs(os.path.dirname(OUT_JSON), exist_ok=True)
    with open(OUT_JSON, "w", encoding="utf-8") as f:
        json.dump(fixtures, f, ensure_ascii=True, separators=(",", ":"))
    write_tok512_gguf(OUT_GGUF)
    write_bad_ggufs()
    print(f"{len(strings)} strings; wrote {OUT_JSON} ({os.path.getsize(OUT_JSON)} bytes) "
          f"and {OUT_GGUF} ({os.path.getsize(OUT_GGUF)} bytes)")


if __name__ == "__main__":
    sys.exit(main())
