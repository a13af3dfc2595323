"""`python -m tinyllm tokenizer ...`: train a BPE vocabulary, encode text, decode ids.

  tokenizer train  --data PATH --vocab-size N --out FILE   learn a vocabulary and save it
  tokenizer encode --tokenizer FILE [TEXT]                 print the ids of TEXT (or of stdin)
  tokenizer decode --tokenizer FILE [ID ...]               print the text of ids (or of stdin)

--tokenizer takes a file written by `tokenizer train` (Tokenizer.save) or a
.tiktoken rank file (with --pattern). This file only parses arguments and
prints; the work is tinyllm/tokenizer/'s (read it first).
"""
import argparse
import itertools
import pathlib
import sys

from tinyllm.data import load_corpus
from tinyllm.errors import TokenizerError
from tinyllm.tokenizer import ENDOFTEXT, PATTERNS, Tokenizer, load_file


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    commands = {"train": train_main, "encode": encode_main, "decode": decode_main}
    if not argv or argv[0] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return commands[argv[0]](argv[1:])
    except (TokenizerError, ValueError, OSError) as e:   # DataError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1


def train_main(argv):
    p = argparse.ArgumentParser(prog="tokenizer train", description=(
        "Learn a byte-level BPE vocabulary from text and save it (Tokenizer.save format)."))
    p.add_argument("--data", default=None, help="a UTF-8 text file (streamed) or a folder of text "
                   "files (default: the Python standard library's sources)")
    p.add_argument("--vocab-size", type=int, default=8192,
                   help="ids in all: 256 bytes + merges + special tokens (default: %(default)s)")
    p.add_argument("--out", required=True, help="where to write the vocabulary, e.g. vocab.bpe")
    p.add_argument("--pattern", default="gpt4",
                   help=f"pre-tokenization regex: {' or '.join(PATTERNS)} or a regex (default: %(default)s)")
    p.add_argument("--special", action="append", default=None, metavar="TOKEN",
                   help=f"a special token; repeat for more (default: {ENDOFTEXT})")
    p.add_argument("--no-special", action="store_true", help="no special tokens at all")
    args = p.parse_args(argv)
    if pathlib.Path(args.out).is_dir():   # found now, not after the training
        raise TokenizerError(f"--out {args.out} is a folder; give a file name, e.g. "
                             f"{pathlib.Path(args.out) / 'vocab.bpe'}")
    specials = [] if args.no_special else (args.special or [ENDOFTEXT])
    tok = Tokenizer.train(_training_text(args.data), args.vocab_size, args.pattern, specials)
    tok.save(args.out)
    print(f"wrote {args.out}: {tok}", file=sys.stderr)
    return 0


def _training_text(data):
    """A file as a path (read in blocks); a folder or the stdlib as its documents' texts."""
    if data is not None and pathlib.Path(data).expanduser().is_file():
        return [pathlib.Path(data).expanduser()]
    corpus = load_corpus(data)
    return itertools.chain(corpus.iter_train(), corpus.iter_val())


def encode_main(argv):
    p = argparse.ArgumentParser(prog="tokenizer encode", description=(
        "Print the token ids of TEXT (or of stdin), separated by spaces."))
    _tokenizer_args(p)
    p.add_argument("text", nargs="?", default=None, help="the text (default: read stdin)")
    p.add_argument("--allowed-special", default="none_raise",
                   help="'all' (special tokens in the text become their ids), 'none' (they are "
                        "ordinary text), 'none_raise' (they are an error; the default), or a "
                        "comma-separated list of special tokens")
    args = p.parse_args(argv)
    tok = _load(args)
    allowed = args.allowed_special
    if allowed not in ("all", "none", "none_raise"):
        allowed = set(allowed.split(","))
    text = sys.stdin.read() if args.text is None else args.text
    print(" ".join(map(str, tok.encode(text, allowed_special=allowed))))
    return 0


def decode_main(argv):
    p = argparse.ArgumentParser(prog="tokenizer decode", description=(
        "Print the text of token ids given as arguments (or on stdin, separated by spaces)."))
    _tokenizer_args(p)
    p.add_argument("ids", nargs="*", help="token ids (default: read stdin)")
    args = p.parse_args(argv)
    tok = _load(args)
    words = args.ids or sys.stdin.read().split()
    try:
        ids = [int(w) for w in words]
    except ValueError as e:
        raise TokenizerError(f"token ids are integers: {e}") from None
    sys.stdout.write(tok.decode(ids))
    return 0


def _tokenizer_args(p):
    p.add_argument("--tokenizer", required=True,
                   help="a vocabulary from `tokenizer train`, or a .tiktoken rank file")
    p.add_argument("--pattern", default="gpt4",
                   help="for a .tiktoken file: gpt2, gpt4 or a regex (default: %(default)s)")


def _load(args):
    return load_file(args.tokenizer, args.pattern)
