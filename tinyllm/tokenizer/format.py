"""BPE vocabularies on disk: our readable .bpe format, and tiktoken's .tiktoken rank files.

Our format (Tokenizer.save / Tokenizer.load), UTF-8 text:
    tinyllm-bpe 1                      magic and version
    # ...                              comment lines anywhere
    pattern "<regex as a JSON string>"
    special "<|endoftext|>" 8191       one line per special token: JSON string, id
    tokens 8191                        how many token lines follow (catches truncation)
    0 00  # "\\u0000"                   <id> <hex bytes>: a token given by its bytes
    256 101 32  # "e "                 <id> <left id> <right id>: the merge of two tokens
A token line is a merge when the token is the join of exactly two tokens of lower
rank under BPE (what `merge_chunk(token, ranks, max_rank=rank)` finds); single
bytes, and tokens of imported vocabularies that are not, are written as hex.
Text after "#" on a token line is a comment (the token shown as text).
As merges can double a token per line, reading refuses a vocabulary whose
tokens hold more than MAX_VOCAB_BYTES in all (64 MiB).
to_dict() (checkpoints) holds the same token lines without the comments.

The .tiktoken format: one "<base64 token> <rank>" line per token, nothing else
(no pattern, no special tokens).

This is not the Tokenizer (bpe.py, read it first) and checks only the
file's own consistency (syntax, counts, duplicates); Tokenizer checks the
vocabulary. Read tinyllm/data/ next, corpus.py first.
"""
import base64
import binascii
import hashlib
import json

from tinyllm.atomic import atomic_write
from tinyllm.tokenizer.encode import TokenizerError, merge_chunk

MAGIC = "tinyllm-bpe"
VERSION = 1
MAX_VOCAB_BYTES = 1 << 26   # all tokens' bytes together; GPT-4's 100k tokens hold under 1 MB
_HELP = ("# Byte-level BPE vocabulary of tinyllm: load it with tinyllm.tokenizer.Tokenizer.load.\n"
         "# Token lines: '<id> <hex bytes>', or '<id> <left id> <right id>' (the two tokens "
         "joined).\n")


def token_lines(ranks, merges=None, comments=False):
    """The token lines of `ranks` (bytes -> rank), by rank; see the module docstring.

    merges, {rank: (left rank, right rank)}, are the token's parts when known
    (from training or a file); a token without one has its parts found by
    merge_chunk, O(n log n) in its length.
    """
    merges = merges or {}
    max_len = max(map(len, ranks), default=1)
    lines = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        parts = merges.get(rank)
        if parts is None and len(token) > 1:
            parts = merge_chunk(token, ranks, max_rank=rank, max_len=max_len)
        line = f"{rank} {parts[0]} {parts[1]}" if parts and len(parts) == 2 else f"{rank} {token.hex()}"
        if comments:
            line += "  # " + json.dumps(token.decode("utf-8", errors="replace"))
        lines.append(line)
    return lines


def parse_token_lines(lines, where, merges=None):
    """{bytes: rank} from (line number, line) pairs of token lines; raise on any flaw.

    The merge lines' parts go into the dict `merges` ({rank: (left, right)}) when given."""
    by_rank = {}
    ranks = {}
    total = 0
    for lineno, line in lines:
        fields = line.split("#", 1)[0].split()
        try:
            rank = int(fields[0])
            if len(fields) == 2:
                token = bytes.fromhex(fields[1])
            elif len(fields) == 3:
                left, right = int(fields[1]), int(fields[2])
                token = by_rank[left] + by_rank[right]
                if merges is not None:
                    merges[rank] = (left, right)
            else:
                raise ValueError
        except KeyError as e:
            raise TokenizerError(f"{where} line {lineno}: the merge {line.strip()!r} names token "
                                 f"{e.args[0]}, which no earlier line defines; the file is "
                                 "corrupt: save the tokenizer again") from None
        except (ValueError, IndexError):
            raise TokenizerError(f"{where} line {lineno}: expected '<id> <hex bytes>' or '<id> "
                                 f"<left id> <right id>', got {line.strip()!r}; the file is "
                                 "corrupt or truncated: save the tokenizer again") from None
        total += len(token)
        if total > MAX_VOCAB_BYTES:   # each merge line can double a token: a tiny file, a huge vocabulary
            raise TokenizerError(f"{where} line {lineno}: the tokens so far hold {total:,} bytes, "
                                 f"more than the {MAX_VOCAB_BYTES:,} any vocabulary here may; "
                                 "the file is corrupt or hostile")
        _add_token(ranks, by_rank, token, rank, f"{where} line {lineno}")
    return ranks


def _add_token(ranks, by_rank, token, rank, where):
    if not token:
        raise TokenizerError(f"{where}: an empty token; every token has at least one byte")
    if rank < 0:
        raise TokenizerError(f"{where}: negative rank {rank}; ranks are token ids >= 0")
    if rank in by_rank:
        raise TokenizerError(f"{where}: rank {rank} is given twice (to {by_rank[rank]!r} and "
                             f"{token!r}); every token needs its own rank")
    if token in ranks:
        raise TokenizerError(f"{where}: token {token!r} is given twice (ranks {ranks[token]} and "
                             f"{rank}); a vocabulary lists each token once")
    ranks[token] = rank
    by_rank[rank] = token


def dumps(pattern, special_tokens, ranks, merges=None):
    """The text of our format for (pattern str, {special: id}, {bytes: rank}, known merges)."""
    head = [f"{MAGIC} {VERSION}", _HELP.rstrip("\n"), f"pattern {json.dumps(pattern)}"]
    by_id = sorted(special_tokens.items(), key=lambda kv: kv[1])
    head += [f"special {json.dumps(s)} {i}" for s, i in by_id]
    head.append(f"tokens {len(ranks)}")
    return "\n".join(head + token_lines(ranks, merges, comments=True)) + "\n"


def write_bpe(path, pattern, special_tokens, ranks, merges=None):
    """Write our format for (pattern str, {special: id}, {bytes: rank}, known merges)."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(dumps(pattern, special_tokens, ranks, merges))


def read_bpe(path, merges=None):
    """(pattern, {special: id}, {bytes: rank}) from a file of our format; merges as in
    parse_token_lines."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: cannot read it as a tinyllm BPE file ({e}); "
                             "check the path") from None
    return loads(text, str(path), merges)


def loads(text, where, merges=None):
    """(pattern, {special: id}, {bytes: rank}) from the text of our format; `where` names it."""
    lines = [(i + 1, line) for i, line in enumerate(text.split("\n"))]
    first = lines[0][1].strip()
    if first != f"{MAGIC} {VERSION}":
        raise TokenizerError(_not_ours(first, where))
    pattern, specials, n_tokens, body = None, {}, None, []
    rest = iter(lines[1:])
    for lineno, line in rest:
        key, _, value = line.strip().partition(" ")
        if not key or key.startswith("#"):
            continue
        try:
            if key == "pattern" and pattern is None:
                pattern, _ = _json_prefix(value)
            elif key == "special":
                name, end = _json_prefix(value)
                specials[name] = int(value[end:])
            elif key == "tokens":
                n_tokens = int(value)
                body = [(n, ln) for n, ln in rest if ln.strip() and not ln.lstrip().startswith("#")]
            else:
                raise ValueError
        except ValueError:
            raise TokenizerError(f"{where} line {lineno}: cannot read {line.strip()!r} (expected "
                                 "'pattern \"...\"', 'special \"...\" <id>' or 'tokens <n>'); "
                                 "the file is corrupt: save the tokenizer again") from None
    if pattern is None or n_tokens is None:
        raise TokenizerError(f"{where}: the {'pattern' if pattern is None else 'tokens'} line is "
                             "missing; the file is truncated or corrupt: save the tokenizer again")
    if len(body) != n_tokens:
        raise TokenizerError(f"{where}: the header promises {n_tokens} token lines but "
                             f"{len(body)} follow; the file is truncated or was edited: "
                             "save the tokenizer again")
    return pattern, specials, parse_token_lines(body, where, merges)


def _json_prefix(value):
    """The JSON string at the start of value, and where it ends."""
    try:
        obj, end = json.JSONDecoder().raw_decode(value.strip())
    except json.JSONDecodeError:
        raise ValueError from None
    if not isinstance(obj, str):
        raise ValueError
    return obj, end + len(value) - len(value.lstrip())


def _not_ours(first, where):
    if first.startswith(MAGIC):
        return (f"{where}: {first!r} is a version of the format this tinyllm does not read "
                f"(it reads {MAGIC} {VERSION}); update tinyllm")
    if len(first.split()) == 2:
        return (f"{where} looks like a .tiktoken rank file; load it with "
                "Tokenizer.from_tiktoken(path, pattern=...)")
    return (f"{where}: not a tinyllm BPE file (its first line should be '{MAGIC} {VERSION}'); "
            "pass a file written by Tokenizer.save, or a .tiktoken file to Tokenizer.from_tiktoken")


def read_tiktoken(path, sha256=None):
    """{bytes: rank} from a .tiktoken file; sha256 (hex), when given, must match the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TokenizerError(f"{path}: cannot read it ({e.strerror}); check the path") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise TokenizerError(f"{path}: sha256 {hashlib.sha256(data).hexdigest()} is not the "
                             f"expected {sha256}; the file is truncated or another vocabulary: "
                             "download it again")
    ranks, by_rank = {}, {}
    for lineno, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
        except (ValueError, binascii.Error):
            shown = line[:60].decode("utf-8", "replace")
            raise TokenizerError(f"{path} line {lineno}: expected '<base64 token> <rank>', got "
                                 f"{shown!r}; the file is truncated or not a .tiktoken file") from None
        _add_token(ranks, by_rank, token, rank, f"{path} line {lineno}")
    if not ranks:
        raise TokenizerError(f"{path}: no tokens in it; a .tiktoken file has one "
                             "'<base64 token> <rank>' line per token")
    return ranks


def write_tiktoken(path, ranks):
    """Write {bytes: rank} as a .tiktoken file, by rank."""
    with atomic_write(path, "wb") as f:
        for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(base64.b64encode(token) + b" %d\n" % rank)
