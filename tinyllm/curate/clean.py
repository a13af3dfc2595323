"""Text normalization and document quality filters (Gopher / C4-style heuristics).

`normalize(text)`: Unicode NFC; CR LF and lone CR become LF; control
characters (except tab and newline), zero-width spaces and byte-order marks
are removed; other Unicode spaces become " "; trailing spaces on each line go;
runs of blank lines shrink to one; the text is stripped. Runs of spaces inside
a line stay, because indentation carries meaning in code and tables.

`quality_reason(text, config)` returns why a normalized document fails the
heuristics, or None when it passes. The checks run in this order, and the
first that fails names the reason counted in the prepare report:
  empty            no words at all
  too_few_words / too_many_words
  mean_word_length mean characters per word outside [min, max]
  alpha_fraction   share of letters among non-space characters below the minimum
  dup_lines / dup_line_chars / dup_paragraphs / dup_paragraph_chars
                   lines (paragraphs) that repeat an earlier one: their share of
                   all lines, and their characters' share of the text
  top_{n}gram      the most frequent word n-gram (n = 2..4) covers too much of the text
  dup_{n}gram      words inside a repeated word n-gram (n = 5..10; first
                   occurrences not counted) cover too much of the text
The n-gram checks run by increasing n. The limits default to the Gopher
paper's (Rae et al. 2021, appendix A), except the alphabetic share, which is
measured on characters (not words) so that it works for every script.
Character shares of n-grams are measured on UTF-8 bytes. Any limit set to 0
turns its check off. The n-gram counts (repeat_stats, the definition) run in
C (csrc/ngrams.c, one hash-table pass per n) when the library has it.
clean_c.py runs both functions on many documents per call in C (csrc/clean.c).

This is not deduplication across documents (dedup.py) or language
identification (langid.py). Read hashing.py next.
"""
import dataclasses
import math
import re
import unicodedata

import numpy as np

from tinyllm.errors import DataError
from tinyllm.curate.hashing import ngram_hash_series, text_words
from tinyllm.curate.native import c_library

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_UNICODE_SPACE = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING_SPACE = re.compile("[ \t]+$", re.MULTILINE)
_BLANK_LINES = re.compile("\n{3,}")
_PARAGRAPH_BREAK = re.compile("\n\\s*\n")
_C = c_library(("ngram_repeats",))     # (ffi, lib), or None: the n-gram counts in NumPy
LETTER_RUN = re.compile(r"[^\W\d_]+")   # letters of any script: word characters minus digits and _
SPACE_RUN = re.compile(r"\s+")        # what str.split() and str.strip() take for whitespace


def _limit(default, help):
    """A CleanConfig field whose help text becomes the prepare --flag's help."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class CleanConfig:
    """Quality limits; 0 turns a check off (see the module docstring for the definitions)."""

    min_words: int = _limit(50, "drop documents with fewer words")
    max_words: int = _limit(100_000, "drop documents with more words")
    min_mean_word_length: float = _limit(3.0, "drop documents whose mean word length is lower")
    max_mean_word_length: float = _limit(10.0, "drop documents whose mean word length is higher")
    min_alpha_fraction: float = _limit(0.6, "drop documents with a lower share of letters among "
                                            "non-space characters")
    max_dup_line_fraction: float = _limit(0.30, "drop documents with a higher share of repeated lines")
    max_dup_line_char_fraction: float = _limit(0.20, "... of characters in repeated lines")
    max_dup_paragraph_fraction: float = _limit(0.30, "... of repeated paragraphs")
    max_dup_paragraph_char_fraction: float = _limit(0.20, "... of characters in repeated paragraphs")
    top_ngram_limits: str = _limit("2:0.20,3:0.18,4:0.16",
                                   "n:share pairs: the most frequent word n-gram's share of the text")
    dup_ngram_limits: str = _limit("5:0.15,6:0.14,7:0.13,8:0.12,9:0.11,10:0.10",
                                   "n:share pairs: the share of text inside repeated word n-grams")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, str) and (value is None or not 0 <= value < math.inf):
                raise DataError(f"clean config {f.name}={value!r} (--{f.name.replace('_', '-')}): "
                                "limits are finite numbers >= 0 (0 turns the check off)")
        self._top = _parse_limits("top_ngram_limits", self.top_ngram_limits)
        self._dup = _parse_limits("dup_ngram_limits", self.dup_ngram_limits)

    @classmethod
    def off(cls):
        """A config with every quality check turned off (normalization still applies)."""
        return cls(**{f.name: ("" if f.type is str else 0) for f in dataclasses.fields(cls)})


def normalize(text):
    """NFC, LF line ends, no control characters, plain spaces, no trailing or extra blank lines."""
    text = normalize_unicode(text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip()


def normalize_unicode(text):
    """normalize's first steps, the Unicode ones: NFC, then Unicode spaces to " "."""
    if text.isascii():
        return text
    return _UNICODE_SPACE.sub(" ", unicodedata.normalize("NFC", text))


def quality_reason(text, config):
    """The name of the first check a normalized text fails, or None if it passes them all."""
    c = config
    words = text.split()
    n_words = len(words)
    if n_words == 0:
        return "empty"
    if c.min_words and n_words < c.min_words:
        return "too_few_words"
    if c.max_words and n_words > c.max_words:
        return "too_many_words"
    chars = sum(map(len, words))  # non-space characters
    mean = chars / n_words
    if (c.min_mean_word_length and mean < c.min_mean_word_length) or \
            (c.max_mean_word_length and mean > c.max_mean_word_length):
        return "mean_word_length"
    if c.min_alpha_fraction and sum(map(len, LETTER_RUN.findall(text))) < c.min_alpha_fraction * chars:
        return "alpha_fraction"
    lines = [line for line in (s.strip() for s in text.split("\n")) if line]
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(text) if p.strip()]
    for name, parts, max_share, max_chars in (
            ("lines", lines, c.max_dup_line_fraction, c.max_dup_line_char_fraction),
            ("paragraphs", paragraphs, c.max_dup_paragraph_fraction, c.max_dup_paragraph_char_fraction)):
        repeats, repeat_chars = _repeats(parts)
        if max_share and repeats > max_share * len(parts):
            return f"dup_{name}"
        if max_chars and repeat_chars > max_chars * len(text):
            return f"dup_{name[:-1]}_chars"
    if c._top or c._dup:
        return _ngram_reason(text, c)
    return None


def _ngram_reason(text, c):
    hashes, lengths = text_words(text)                         # (W,) uint64, (W,) bytes per word
    total = int(lengths.sum())
    ends = np.concatenate([[0], np.cumsum(lengths)])           # (W+1,) bytes before word i
    top, dup = dict(c._top), dict(c._dup)
    sizes = set(top) | set(dup)
    stats = _repeat_stats_c if _C is not None else repeat_stats
    for n, grams in ngram_hash_series(hashes, min(sizes), max(sizes), mix=False):  # equality only
        if n not in sizes or len(grams) < 2:
            continue
        repeat, most, at = stats(grams)
        if most < 2:
            continue
        if n in top:
            gram_bytes = int(ends[at + n] - ends[at]) + n - 1  # its words and the spaces between
            if gram_bytes * most > top[n] * len(text.encode("utf-8", "surrogatepass")):
                return f"top_{n}gram"
        if n in dup:
            covered = np.zeros(len(hashes), dtype=bool)        # (W,) words inside a repeat
            repeats = np.flatnonzero(repeat)                   # every occurrence but the first
            for t in range(n):
                covered[repeats + t] = True
            if int(lengths[covered].sum()) > dup[n] * total:
                return f"dup_{n}gram"
    return None


def repeat_stats(grams):
    """(repeat (G,) bool, most, at) for n-gram hashes grams (G,) in text order, G >= 1.

    repeat[i]: grams[i] equals an earlier n-gram; most: the largest number of
    occurrences of one n-gram; at: the first position of the earliest n-gram
    occurring `most` times. The definition; csrc/ngrams.c computes the same.
    """
    order = stable_order(grams)                                # equal n-grams together, in text order
    ranked = grams[order]
    repeat_sorted = ranked[1:] == ranked[:-1]                  # (G-1,) same as the one before it
    repeat = np.zeros(len(grams), dtype=bool)
    repeat[order[1:][repeat_sorted]] = True
    run_start = np.flatnonzero(np.concatenate([[True], ~repeat_sorted]))
    counts = np.diff(np.append(run_start, len(grams)))         # occurrences of each distinct n-gram
    most = int(counts.max())
    return repeat, most, int(order[run_start[counts == most]].min())  # ties: the earliest n-gram


def _repeat_stats_c(grams):
    """repeat_stats in C (csrc/ngrams.c)."""
    ffi, lib = _C
    G = len(grams)
    grams = np.ascontiguousarray(grams, dtype=np.uint64)
    slots = np.empty(1 << (2 * G).bit_length(), dtype=np.int64)             # > 2G: short probes
    counts, repeat, at = np.empty(G, np.int32), np.empty(G, np.uint8), ffi.new("int64_t *")
    buffer = ffi.from_buffer
    most = lib.ngram_repeats(buffer("uint64_t[]", grams), G, buffer("int64_t[]", slots), len(slots),
                             buffer("int32_t[]", counts), buffer("uint8_t[]", repeat), at)
    return repeat.view(bool), int(most), int(at[0])


def stable_order(values):
    """np.argsort(values, kind="stable") for uint64 values, about 4x faster.

    Each value's top bits with its position in the low bits are sorted as one
    uint64 (a plain sort, which NumPy vectorizes; an argsort is not): equal
    values come out together and in position order. Two different values that
    share the top bits would interleave, so then the stable argsort decides.
    """
    shift = np.uint64(max(int(len(values)).bit_length(), 1))
    keys = np.sort((values >> shift << shift) | np.arange(len(values), dtype=np.uint64))
    order = (keys & ((np.uint64(1) << shift) - np.uint64(1))).astype(np.int64)   # (G,) positions
    ranked, top = values[order], keys >> shift
    if ((top[1:] == top[:-1]) & (ranked[1:] != ranked[:-1])).any():
        return np.argsort(values, kind="stable")
    return order


def _repeats(parts):
    """How many of parts repeat an earlier one, and their total characters."""
    seen, repeats, chars = set(), 0, 0
    for p in parts:
        if p in seen:
            repeats += 1
            chars += len(p)
        else:
            seen.add(p)
    return repeats, chars


def _parse_limits(name, spec):
    """"2:0.20,3:0.18" -> [(2, 0.2), (3, 0.18)], dropping limits of 0."""
    limits = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        try:
            n, share = item.split(":")
            n, share = int(n), float(share)
        except ValueError:
            raise DataError(f"{name}={spec!r}: expected comma-separated n:share pairs such as "
                            "'2:0.20,3:0.18' (an empty string turns the check off)") from None
        if n < 1 or share < 0:
            raise DataError(f"{name}: in {item!r} n must be >= 1 and share >= 0")
        if share > 0:
            limits.append((n, share))
    return limits
