"""Pre-tokenization: split text into the regex chunks that BPE then encodes one by one.

`Splitter(pattern).findall(text)` returns exactly `regex.findall(pattern, text)`
for "gpt2" and "gpt4" (tiktoken's r50k and cl100k patterns) or any custom
regex of the `regex` package. It is the slowest step of encoding, so the two
built-in patterns have ASCII twins for the stdlib `re` engine, about twice
as fast: on ASCII text \\p{L} is [a-zA-Z], \\p{N} is [0-9] and \\s is
[\\t\\n\\v\\f\\r ] (re.ASCII), so the twin finds the same chunks. Text that is
not all ASCII is cut into blocks at chunk boundaries that both patterns
always have (after a newline with non-space on both sides), and each ASCII
block goes to the twin, the rest to `regex`. tests/test_tokenizer_split.py
checks the twins and the cut rule against `regex`.

tiktoken runs the same patterns in Rust (fancy-regex), so the chunks match
for every character both engines know; the `regex` package can know newer
Unicode than tiktoken's build (regex 2026.5 has Unicode 17, where U+11DE0..
U+11DE9 are digits, unknown to tiktoken 0.14), and such characters can split
differently.

This is not the BPE (encode.py) nor the tokenizer (bpe.py, read
it first). Read encode.py next.
"""
import re

import regex

from tinyllm.tokenizer.encode import TokenizerError

# The pre-tokenization regexes of GPT-2 (r50k_base) and GPT-4 (cl100k_base), as tiktoken has them.
PATTERNS = {
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}
# The same patterns for ASCII text only, with re.ASCII (possessive quantifiers need Python 3.11).
_ASCII_TWINS = {
    PATTERNS["gpt2"]: r"""'(?:[sdmt]|ll|ve|re)| ?[a-zA-Z]++| ?[0-9]++| ?[^\sa-zA-Z0-9]++|\s++$|\s+(?!\S)|\s""",
    PATTERNS["gpt4"]: r"""'(?i:[sdmt]|ll|ve|re)|[^\r\na-zA-Z0-9]?+[a-zA-Z]++|[0-9]{1,3}+| ?[^\sa-zA-Z0-9]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
}
# A newline between two non-space characters ends a chunk under both patterns, and no chunk
# before it looks past it: the chunks of text[:p] + text[p:] are those of text.
_CUT = regex.compile(r"\S\n(?=\S)")
BLOCK_CHARS = 1 << 15      # mixed text is cut into blocks of about this many characters


class Splitter:
    """`findall(text)`: the chunks of text under one pattern (a name or a regex)."""

    def __init__(self, pattern):
        self.pattern = PATTERNS.get(pattern, pattern)
        try:
            self.regex = regex.compile(self.pattern)
        except (regex.error, TypeError) as e:
            raise TokenizerError(f"pattern {pattern!r} does not compile ({e}); pass 'gpt2', "
                                 "'gpt4' or a regex in the syntax of the `regex` package") from None
        self.ascii = _compile_twin(_ASCII_TWINS.get(self.pattern))

    def findall(self, text):
        if self.ascii is None:
            return self.regex.findall(text)
        if text.isascii():          # O(1) in CPython: str objects know it
            return self.ascii.findall(text)
        chunks, start = [], 0
        while start < len(text):
            cut = _CUT.search(text, start + BLOCK_CHARS) if start + BLOCK_CHARS < len(text) else None
            end = cut.end() if cut else len(text)
            block = text[start:end]
            chunks += (self.ascii if block.isascii() else self.regex).findall(block)
            start = end
        return chunks


def _compile_twin(twin):
    if twin is None:
        return None
    try:
        return re.compile(twin, re.ASCII)
    except re.error:            # Python < 3.11 has no possessive quantifiers: `regex` does it all
        return None
