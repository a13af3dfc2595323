"""Normalization and the quality heuristics of many documents at once: csrc/clean.c, or
clean.py's definitions.

    texts = normalize_all(raw_texts)                   # [clean.normalize(t) for t in raw_texts]
    reasons = quality_reasons(texts, CleanConfig())   # [None or a reason name] per text

Both hand a batch of texts to csrc/clean.c as one UTF-8 buffer. normalize_all
returns what clean.normalize returns (its Unicode steps, NFC and Unicode
spaces, stay in Python: clean.normalize_unicode); quality_reasons returns,
per text, what clean.quality_reason returns (the name of the first rule
failed, or None). Without the C library each calls the definition per text. The C side sees Python's character classes
through one table over every code point (bit 1: str.isspace, bit 2: a letter
as clean.py's regex counts it), built here from the same predicates once per
process, so the Unicode version is always Python's own.

This is not the definition (clean.py is; tests/test_c_clean.py holds the
two equal on random and adversarial texts). Read csrc/clean.c next.
"""
import functools

import numpy as np

from tinyllm.curate import clean, native

_C = native.c_library(("normalize_texts", "quality_reasons"))
_NAMES = {1: "empty", 2: "too_few_words", 3: "too_many_words", 4: "mean_word_length",
          5: "alpha_fraction", 6: "dup_lines", 7: "dup_line_chars", 8: "dup_paragraphs",
          9: "dup_paragraph_chars"}
_TOP, _DUP = 1000, 2000     # + n: top_{n}gram, dup_{n}gram (csrc/tinyllm.h's QUALITY_ codes)
_LIMITS = ("min_words", "max_words", "min_mean_word_length", "max_mean_word_length",
           "min_alpha_fraction", "max_dup_line_fraction", "max_dup_line_char_fraction",
           "max_dup_paragraph_fraction", "max_dup_paragraph_char_fraction")


def normalize_all(texts, use_c=None):
    """[clean.normalize(t) for t in texts], in C unless use_c is False or it is not built."""
    if _C is None or use_c is False or not texts:
        return [clean.normalize(t) for t in texts]
    ffi, lib = _C
    parts = [clean.normalize_unicode(t).encode("utf-8", "surrogatepass") for t in texts]
    ends = np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)))      # (N,)
    out, out_ends = bytearray(max(int(ends[-1]), 1)), np.empty(len(texts), np.int64)
    buffer = ffi.from_buffer
    lib.normalize_texts(buffer("uint8_t[]", b"".join(parts) or b"\0"), buffer("int64_t[]", ends),
                        len(texts), buffer("uint8_t[]", char_classes()), buffer("uint8_t[]", out),
                        buffer("int64_t[]", out_ends))
    view, bounds = memoryview(out), [0] + out_ends.tolist()
    return [str(view[a:b], "utf-8", "surrogatepass") for a, b in zip(bounds, bounds[1:])]


def quality_reasons(texts, config, use_c=None):
    """[clean.quality_reason(t, config) for t in texts], in C unless use_c is False or it is not built."""
    if _C is None or use_c is False or not texts:
        return [clean.quality_reason(t, config) for t in texts]
    ffi, lib = _C
    parts = [t.encode("utf-8", "surrogatepass") for t in texts]
    ends = np.cumsum(np.fromiter(map(len, parts), np.int64, len(parts)))      # (N,)
    blob = b"".join(parts) or b"\0"
    limits, _alive = _limits(ffi, config)
    reasons = np.empty(len(texts), np.int32)                                  # (N,)
    buffer = ffi.from_buffer
    if lib.quality_reasons(buffer("uint8_t[]", blob), buffer("int64_t[]", ends), len(texts),
                           buffer("uint8_t[]", char_classes()), limits,
                           buffer("int32_t[]", reasons)) < 0:
        raise MemoryError(f"quality_reasons: out of memory on {len(blob):,} bytes")
    return [_name(int(r)) for r in reasons.tolist()]


def _limits(ffi, config):
    """The quality_limits struct of a CleanConfig, and the arrays it points to (keep them alive)."""
    c = ffi.new("quality_limits *")
    for name in _LIMITS:
        setattr(c, name, float(getattr(config, name)))
    sizes = [n for n, _ in config._top + config._dup]
    c.max_n = max(sizes, default=0)
    top, dup = np.zeros(c.max_n + 1), np.zeros(c.max_n + 1)                  # (max_n + 1,) each
    for shares, pairs in ((top, config._top), (dup, config._dup)):
        for n, share in pairs:
            shares[n] = share
    c.top_share, c.dup_share = ffi.from_buffer("double[]", top), ffi.from_buffer("double[]", dup)
    return c, (top, dup)


def _name(code):
    if code == 0:
        return None
    if code >= _DUP:
        return f"dup_{code - _DUP}gram"
    if code >= _TOP:
        return f"top_{code - _TOP}gram"
    return _NAMES[code]


@functools.lru_cache(maxsize=1)
def char_classes():
    """(0x110000,) uint8: bit 1 where str.isspace(), bit 2 where clean.py's regex sees a letter."""
    every = "".join(map(chr, range(0x110000)))
    table = np.zeros(0x110000, np.uint8)
    for bit, pattern in ((1, clean.SPACE_RUN), (2, clean.LETTER_RUN)):
        for m in pattern.finditer(every):
            table[m.start():m.end()] |= bit
    return table
