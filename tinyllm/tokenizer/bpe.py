"""Tokenizer: byte-level BPE that encodes exactly as tiktoken does; train, save, load.

    tok = Tokenizer.train([pathlib.Path("corpus.txt")], 8192, special_tokens=["<|endoftext|>"])
    ids = tok.encode("hello world")            # [int, ...]
    text = tok.decode(ids)
    tok.save("vocab.bpe"); tok = Tokenizer.load("vocab.bpe")
    gpt4 = Tokenizer.from_tiktoken("cl100k_base.tiktoken", pattern="gpt4",
                                   special_tokens={"<|endoftext|>": 100257})

A vocabulary is `mergeable_ranks` ({token bytes: rank}; the rank is the token
id) plus special tokens ({str: id}) plus a pre-tokenization regex. Encoding
splits text with the regex into chunks, then encodes each chunk by rank:
a chunk that is a token is that token, otherwise adjacent parts are joined
lowest rank first (encode.py) - tiktoken's rule, so for the same ranks and
pattern the ids are identical. Chunk results are cached (most chunks are
common words), and cache misses are encoded in C (csrc/bpe.c) when built.
Special tokens follow tiktoken: `allowed_special` ones are encoded as their
id, and by default any other special token in the text raises.

This is not pre-tokenization (split.py), the merge loops (encode.py,
train.py, csrc/bpe.c), the file formats (format.py) or the command line
(tinyllm/cli/tokenizer.py): read them in that order, split.py next.
"""
import hashlib
import json
from itertools import chain

import numpy as np
import regex

from tinyllm.tokenizer import format as bpe_format
from tinyllm.tokenizer.encode import ChunkEncoder, TokenizerError
from tinyllm.tokenizer.split import PATTERNS, Splitter
from tinyllm.tokenizer.train import count_chunks, learn_merges

CACHE_CHUNKS = 1 << 17   # the chunk cache is emptied when it would grow past this many entries
ENDOFTEXT = "<|endoftext|>"


class Tokenizer:
    """Byte-level BPE over regex chunks; ids equal tiktoken's for the same ranks and pattern."""

    def __init__(self, mergeable_ranks, pattern="gpt4", special_tokens=None, use_c=None, *,
                 merges=None):
        """mergeable_ranks: {bytes: rank}, holding all 256 single bytes; pattern: "gpt2",
        "gpt4" or a regex; special_tokens: {str: id}; use_c: None (C when built), True, False;
        merges: {rank: (left rank, right rank)}, the parts of tokens when known (training,
        a file), so that saving need not find them again."""
        self._split = Splitter(pattern)
        self.pattern = self._split.pattern                  # the regex itself, never a name
        self._ranks = dict(mergeable_ranks)
        self._special = dict(special_tokens or {})
        _check_vocabulary(self._ranks, self._special)
        self._decoder = {rank: token for token, rank in self._ranks.items()}
        self._merges = _checked_merges(merges or {}, self._decoder)
        self._decoder.update((i, s.encode("utf-8")) for s, i in self._special.items())
        self.vocab_size = max(self._decoder) + 1
        self.name = f"bpe{self.vocab_size}"                 # for logs and cache file names
        self.eot_token = self._special.get(ENDOFTEXT)       # the document separator, or None
        self._chunks = ChunkEncoder(self._ranks, use_c)
        self._cache = {}                                    # chunk str -> tuple of ids
        self._special_regexes = {}                          # frozenset of specials -> compiled
        self._fingerprint = None
        self._token_text = None                             # to_dict's token lines, made once

    # ------------------------------------------------------------------ building

    @classmethod
    def train(cls, text_or_files, vocab_size, pattern="gpt4", special_tokens=None, *,
              progress=True, use_c=None):
        """Learn a vocabulary of vocab_size ids (256 bytes + merges + special tokens).

        text_or_files: a str, or an iterable of documents: str items are text,
        pathlib.Path items are UTF-8 files, read in blocks. Chunks never span two
        documents. Progress goes to stderr unless progress=False. If every chunk
        becomes one token before vocab_size is reached, the vocabulary is smaller.
        """
        specials = list(special_tokens or [])
        if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 256 + len(specials):
            raise TokenizerError(f"vocab_size={vocab_size!r} is too small: byte-level BPE needs "
                                 f"256 byte tokens + {len(specials)} special tokens, so at least "
                                 f"{256 + len(specials)}")
        if len(set(specials)) != len(specials) or not all(isinstance(s, str) and s for s in specials):
            raise TokenizerError(f"special_tokens={specials!r}: give distinct non-empty strings")
        counts = count_chunks(text_or_files, Splitter(pattern), progress)
        if not counts:
            raise TokenizerError("no text to train on: the text or every file is empty; "
                                 "pass a non-empty str or files with text")
        merges = learn_merges(counts, vocab_size - 256 - len(specials), progress, use_c)
        vocab = [bytes([b]) for b in range(256)]
        seen = set(vocab)
        for a, b in merges:
            token = vocab[a] + vocab[b]
            if token in seen:   # never seen in practice; a vocabulary with it would be ambiguous
                raise TokenizerError(f"training made the token {token!r} twice; please report "
                                     "this with the corpus (a smaller vocab_size avoids it)")
            seen.add(token)
            vocab.append(token)
        ranks = {token: i for i, token in enumerate(vocab)}
        return cls(ranks, pattern, {s: len(vocab) + k for k, s in enumerate(specials)}, use_c,
                   merges={256 + k: pair for k, pair in enumerate(merges)})

    @classmethod
    def load(cls, path, use_c=None):
        """Read a file written by save()."""
        merges = {}
        pattern, specials, ranks = bpe_format.read_bpe(path, merges)
        return cls(ranks, pattern, specials, use_c, merges=merges)

    @classmethod
    def from_tiktoken(cls, path, pattern="gpt4", special_tokens=None, sha256=None, use_c=None):
        """Read a .tiktoken rank file ("<base64 token> <rank>" lines) and add the pattern
        and special tokens it does not hold; sha256 (hex) optionally checks the file."""
        return cls(bpe_format.read_tiktoken(path, sha256), pattern, special_tokens, use_c)

    @classmethod
    def from_dict(cls, d, use_c=None):
        """Rebuild the tokenizer that to_dict() described."""
        expected = {"type": "bpe", "version": bpe_format.VERSION}
        if not isinstance(d, dict) or any(d.get(k) != v for k, v in expected.items()) or \
                not isinstance(d.get("tokens"), str) or not isinstance(d.get("special_tokens"), dict):
            keys = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise TokenizerError(f"the tokenizer description ({keys}) is not a BPE to_dict() of "
                                 f"version {bpe_format.VERSION}: it comes from another tinyllm "
                                 "version; update tinyllm or retrain")
        merges = {}
        ranks = bpe_format.parse_token_lines(enumerate(d["tokens"].split("\n"), 1), "tokenizer dict",
                                             merges)
        return cls(ranks, d.get("pattern"), d["special_tokens"], use_c, merges=merges)

    # ------------------------------------------------------------------ saving

    def save(self, path):
        """Write our readable format (format.py); load() reads it back."""
        bpe_format.write_bpe(path, self.pattern, self._special, self._ranks, self._merges)

    def to_tiktoken(self, path):
        """Write the mergeable ranks as a .tiktoken file (it has no pattern or special tokens)."""
        bpe_format.write_tiktoken(path, self._ranks)

    def to_dict(self):
        """JSON-able description that rebuilds this tokenizer exactly (checkpoints store it)."""
        if self._token_text is None:   # a checkpoint saves it every time: build it once
            self._token_text = "\n".join(bpe_format.token_lines(self._ranks, self._merges))
        return {"type": "bpe", "version": bpe_format.VERSION, "pattern": self.pattern,
                "special_tokens": dict(self._special), "tokens": self._token_text}

    def fingerprint(self):
        """Short stable hash of the vocabulary: token caches made by another tokenizer never match."""
        if self._fingerprint is None:   # hashes the vocabulary itself, not its file format
            h = hashlib.sha1(json.dumps([self.pattern, sorted(self._special.items())]).encode())
            h.update(b"".join(b"%d %s\n" % (rank, token.hex().encode())
                              for token, rank in sorted(self._ranks.items(), key=lambda kv: kv[1])))
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def unused_ids(self):
        """Ids below vocab_size that are no token (a gap before a special token): a model
        over vocab_size ids must never sample them (generate's exclude=)."""
        return [i for i in range(self.vocab_size) if i not in self._decoder]

    def mergeable_ranks(self):
        """{token bytes: rank} (a copy), as tiktoken.Encoding takes it."""
        return dict(self._ranks)

    @property
    def special_tokens(self):
        """{special token str: id} (a copy)."""
        return dict(self._special)

    # ------------------------------------------------------------------ encoding

    def encode(self, text, allowed_special="none_raise", disallowed_special="all"):
        """Token ids of text (a list of ints).

        allowed_special: special tokens encoded as their id when they appear: "all",
        a set of them, or "none_raise" (the default, = set()). disallowed_special:
        those that raise when they appear: "all" (the default: every special token
        not allowed) or a set; () lets them through as ordinary text. These are
        tiktoken's semantics; allowed_special="none" is short for set() plus
        disallowed_special=() (special tokens are ordinary text).
        """
        if not isinstance(text, str):
            raise TokenizerError(f"encode takes str, got {type(text).__name__}: decode bytes "
                                 "first, e.g. data.decode('utf-8')")
        allowed = self._allowed(allowed_special)
        if allowed_special != "none":
            disallowed = (set(self._special) - allowed if disallowed_special == "all"
                          else self._known(disallowed_special, "disallowed_special"))
            found = disallowed and self._special_regex(disallowed).search(text)
            if found:
                raise TokenizerError(
                    f"the text holds the special token {found.group()!r} at index {found.start()}: "
                    f"pass allowed_special={{{found.group()!r}}} (or 'all') to encode it as id "
                    f"{self._special[found.group()]}, or allowed_special='none' to encode it as text")
        if not allowed:
            return self._encode_ordinary(text)
        ids, start = [], 0
        for m in self._special_regex(allowed).finditer(text):
            ids += self._encode_ordinary(text[start:m.start()])
            ids.append(self._special[m.group()])
            start = m.end()
        return ids + self._encode_ordinary(text[start:])

    def encode_batch(self, texts, allowed_special="none_raise", disallowed_special="all"):
        """[encode(text) for text in texts]."""
        return [self.encode(t, allowed_special, disallowed_special) for t in texts]

    def encode_array(self, text, allowed_special="none"):
        """Token ids of text as a uint16 array (uint32 past 65536 ids), for the data pipeline.

        Special-token strings in training text are ordinary text by default:
        documents are separated by eot_token explicitly, not by what they contain.
        """
        dtype = np.uint16 if self.vocab_size <= 1 << 16 else np.uint32
        return np.array(self.encode(text, allowed_special), dtype=dtype)      # (n,)

    def _encode_ordinary(self, text):
        chunks = self._split.findall(text)
        cache = self._cache
        try:
            return list(chain.from_iterable(map(cache.__getitem__, chunks)))
        except KeyError:
            pass
        missing = set(chunks).difference(cache)
        if len(cache) + len(missing) > CACHE_CHUNKS:
            cache.clear()
            missing = set(chunks)
        missing = list(missing)
        try:
            pieces = [c.encode("utf-8") for c in missing]
        except UnicodeEncodeError:
            bad = next(i for i, ch in enumerate(text) if 0xD800 <= ord(ch) <= 0xDFFF)
            raise TokenizerError(f"the text has a lone surrogate {text[bad]!r} at index {bad}, "
                                 "which has no UTF-8 bytes (it often comes from reading bytes "
                                 "with errors='surrogateescape'); remove or replace it") from None
        cache.update(zip(missing, self._chunks.encode(pieces)))
        return list(chain.from_iterable(map(cache.__getitem__, chunks)))

    def _allowed(self, allowed_special):
        if allowed_special == "all":
            return set(self._special)
        if allowed_special in ("none", "none_raise"):
            return set()
        return self._known(allowed_special, "allowed_special")

    def _known(self, specials, arg):
        if isinstance(specials, str):
            raise TokenizerError(f"{arg}={specials!r}: pass 'all', 'none', 'none_raise' or a "
                                 "set of special token strings")
        specials = set(specials)
        unknown = specials - set(self._special)
        if unknown:
            raise TokenizerError(f"{arg} names {sorted(unknown)}, which are not special tokens "
                                 f"of this tokenizer (it has {sorted(self._special)})")
        return specials

    def _special_regex(self, specials):
        key = frozenset(specials)
        if key not in self._special_regexes:   # longest first: a special that prefixes another loses
            alternatives = sorted(key, key=lambda s: (-len(s), s))
            self._special_regexes[key] = regex.compile("|".join(map(regex.escape, alternatives)))
        return self._special_regexes[key]

    # ------------------------------------------------------------------ decoding

    def decode_bytes(self, ids):
        """The bytes of ids (list or 1-D array of ints), special tokens as their UTF-8."""
        if isinstance(ids, np.ndarray):
            ids = ids.reshape(-1).tolist()
        try:
            return b"".join(map(self._decoder.__getitem__, ids))
        except (KeyError, TypeError):
            bad = next(i for i in ids if not isinstance(i, (int, np.integer)) or i not in self._decoder)
            raise TokenizerError(f"id {bad!r} is not a token of this tokenizer (ids are ints "
                                 f"below {self.vocab_size}, not all used); these ids come from "
                                 "another tokenizer: decode them with that one") from None

    def decode(self, ids):
        """The text of ids; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self):
        name = next((k for k, v in PATTERNS.items() if v == self.pattern), "custom")
        return (f"Tokenizer(vocab_size={self.vocab_size}, pattern={name!r}, "
                f"special_tokens={sorted(self._special)})")


def _check_vocabulary(ranks, specials):
    """Raise TokenizerError unless ranks and specials make a usable byte-level vocabulary."""
    for token, rank in ranks.items():
        if not isinstance(token, bytes) or not token:
            raise TokenizerError(f"mergeable_ranks key {token!r}: tokens are non-empty bytes")
        if not isinstance(rank, (int, np.integer)) or not 0 <= rank < 2**31:
            raise TokenizerError(f"token {token!r} has rank {rank!r}: ranks are ints in [0, 2**31)")
    if len(set(ranks.values())) != len(ranks):
        seen = {}
        for token, rank in ranks.items():
            if rank in seen:
                raise TokenizerError(f"tokens {seen[rank]!r} and {token!r} share rank {rank}; "
                                     "every token needs its own rank")
            seen[rank] = token
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"the vocabulary lacks the single byte 0x{missing[0]:02x} (and "
                             f"{len(missing) - 1} more): byte-level BPE needs all 256 bytes as "
                             "tokens so that any text encodes; this is not a byte-level vocabulary")
    by_rank = {r: t for t, r in ranks.items()}
    for s, i in specials.items():
        if not isinstance(s, str) or not s or _has_surrogate(s) or \
                not isinstance(i, (int, np.integer)) or not 0 <= i < 2**31:
            raise TokenizerError(f"special token {s!r}: {i!r}: give a non-empty str (valid UTF-8) "
                                 "and an id in [0, 2**31)")
        if i in by_rank:
            raise TokenizerError(f"special token {s!r} has id {i}, which is already the "
                                 f"ordinary token {by_rank[i]!r}; give it an unused id "
                                 f"(e.g. {max(by_rank) + 1} or more)")
        if s.encode("utf-8") in ranks:
            raise TokenizerError(f"special token {s!r} is also an ordinary token (rank "
                                 f"{ranks[s.encode('utf-8')]}); decoding could not tell them "
                                 "apart: pick another special string")
    if len(set(specials.values())) != len(specials):
        raise TokenizerError(f"special tokens {specials} share an id; give each its own")


def _checked_merges(merges, decoder):
    """merges as given, once each names two lower-ranked tokens that join into its token."""
    for rank, pair in merges.items():
        ok = isinstance(pair, tuple) and len(pair) == 2 and rank in decoder and \
            all(p in decoder and p < rank for p in pair)
        if not ok or decoder[pair[0]] + decoder[pair[1]] != decoder[rank]:
            raise TokenizerError(f"merges[{rank!r}] = {pair!r}: a merge names two tokens of lower "
                                 f"rank whose bytes join into token {rank!r}")
    return dict(merges)


def _has_surrogate(s):
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in s)

