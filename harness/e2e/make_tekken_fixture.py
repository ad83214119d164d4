#!/usr/bin/env python3
"""Makes the Tekken tokenizer test data from mistral_common's copy of Mistral-Nemo's tekken.json
(tekken_240718.json, Apache-2.0) and checks our C++ tokenizer against mistral_common's.

  make_tekken_fixture.py small OUT_DIR
      OUT_DIR/tekken_small.json: the first 3000 ranks of the real file (token_str dropped) with
      default_vocab_size 4000, a valid Tekken tokenizer of its own; OUT_DIR/tekken_small_cases.json:
      texts and the ids mistral_common's Tekkenizer gives them with that file.
  make_tekken_fixture.py full CASES.json [N]
      N random texts (default 3000) encoded with the full file, for the hidden test
      [.tekken-full] (DF11_TEKKEN_FILE=<tekken.json> DF11_TEKKEN_CASES=CASES.json test_e2e "[.tekken-full]").

Needs: pip install mistral_common (which brings tiktoken)."""
import json
import os
import random
import sys

import mistral_common
from mistral_common.tokens.tokenizers.tekken import Tekkenizer

FULL = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tekken_240718.json")

FIXED = [
    "Hello, world! 123",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces, trailing spaces   ",
    "tabs\tand\nnewlines\r\n\r\n  indented\n\n\nend",
    "CamelCaseWords HTTPServer getHTTPResponseCode iPhone McDonald's O'Neil",
    "numbers 3.14159 1,000,000 2024-07-18 0x1F 1e-5",
    "path/to/file.txt https://example.com/a?b=c&d=e // comment /* block */",
    "def f(x):\n    return x ** 2  # square\n",
    "emoji 😀🎉👍🏽 flags 🇫🇷 zwj 👨‍👩‍👧",
    "café naïve résumé Ångström façade",
    "Ελληνικά Русский текст Українська",
    "中文文本，日本語のテキスト、한국어 텍스트",
    "العربية עברית हिन्दी देवनागरी ไทย",
    "combining: e\u0301 a\u0308 n\u0303 \u0301alone",
    "title case: \u01c5ungla \u01c8 \u1f88; modifiers \u02b0\u02b1 \u3005\u3005",
    "Roman numerals \u2160\u2161\u2162, superscripts x\u00b2 \u00bd, fullwidth \uff11\uff12\uff13",
    "nbsp\u00a0here, ideographic\u3000space, line\u2028sep, zero\u200bwidth",
    "!!! ??? ... --- ___ *** ### $$$ %%% ^^^ &&&",
    " \n \n  \n",
    "a",
    "",
    "   ",
    "\n",
]

ALPHABET = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    "      \t\n\r.,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~`"
    "éàüößçñÅØ€£¥©®™°±×÷µ¶§"
    "ΑαΒβΓγДдЖжЯя中文日本語한국어العربيةहिन्दी"
    "\u0301\u0308\u0303\u01c5\u02b0\u3005\u2160\u00b2\u00bd\uff11\u00a0\u3000\u2028\u200b"
    "😀🎉👍🏽🇫🇷\u200d"
)


def random_texts(n, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.random()
        length = rng.randint(1, 60)
        if kind < 0.6:
            out.append("".join(rng.choice(ALPHABET) for _ in range(length)))
        else:
            # Any assigned or unassigned code point outside the surrogates, mixed with ASCII.
            chars = []
            for _ in range(length):
                if rng.random() < 0.5:
                    chars.append(rng.choice(ALPHABET))
                else:
                    cp = rng.choice([rng.randint(0x80, 0x2FFF), rng.randint(0x3000, 0xD7FF),
                                     rng.randint(0xE000, 0xFFFD), rng.randint(0x10000, 0x10FFFF)])
                    chars.append(chr(cp))
            out.append("".join(chars))
    return out


def cases(tok, texts):
    return [{"text": t, "ids": tok.encode(t, bos=False, eos=False)} for t in texts]


def main():
    mode = sys.argv[1]
    if mode == "small":
        out_dir = sys.argv[2]
        with open(FULL, encoding="utf-8") as f:
            full = json.load(f)
        keep = 3000
        small = {
            "config": dict(full["config"], num_vocab_tokens=keep, default_vocab_size=1000 + keep),
            "vocab": [{"rank": v["rank"], "token_bytes": v["token_bytes"], "token_str": None}
                      for v in full["vocab"] if v["rank"] < keep],
        }
        path = os.path.join(out_dir, "tekken_small.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(small, f, separators=(",", ":"))
        tok = Tekkenizer.from_file(path)
        with open(os.path.join(out_dir, "tekken_small_cases.json"), "w", encoding="utf-8") as f:
            json.dump(cases(tok, FIXED + random_texts(300, 1)), f, ensure_ascii=True, indent=0)
    elif mode == "full":
        n = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
        tok = Tekkenizer.from_file(FULL)
        with open(sys.argv[2], "w", encoding="utf-8") as f:
            json.dump(cases(tok, FIXED + random_texts(n, 2)), f, ensure_ascii=True)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
