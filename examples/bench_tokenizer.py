"""Tokenizer benchmark: encode MB/s against tiktoken, training time against HF `tokenizers`.

  python examples/bench_tokenizer.py                  # everything: a few minutes on 2 cores
  python examples/bench_tokenizer.py --skip-train --rounds 5

Encode: the real GPT-4 ranks (../shared/data/cl100k_base.tiktoken) and the
cl100k pattern, on tinyshakespeare and on ~4 MB of the Python standard
library; tiktoken's `encode_ordinary` (one thread) against ours: "cold" is a
fresh Tokenizer (its construction not timed; the chunk cache is empty, so
every unique chunk is merged, in C when built), "warm" encodes the same text
again, "no C" is cold with the C path off (one round). Train: the stdlib
sources (~12 MB) at vocab 8192 and 32768, ours (Tokenizer.train) against
`tokenizers`' BpeTrainer with the same regex split and byte-level alphabet.
Best of --rounds for every number. Optional packages that are missing are
skipped with a message. Nothing asserts a time; this is not a test.
Read tinyllm/tokenizer.py for what is measured.
"""
import argparse
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinyllm.data import stdlib_files  # noqa: E402  (after the path insert)
from tinyllm.tokenizer import ENDOFTEXT, PATTERNS, Tokenizer  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CL100K = DATA / "cl100k_base.tiktoken"
STDLIB_SAMPLE_BYTES = 4_000_000


def best_time(fn, rounds, setup=lambda: None):
    """The fastest of `rounds` calls fn(setup()), timing fn only."""
    best = float("inf")
    for _ in range(rounds):
        arg = setup()
        start = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - start)
    return best


def encode_rows(rounds):
    """[(text name, MB, {method: MB/s})] with the cl100k ranks."""
    if not CL100K.exists():
        print(f"skipping encode: {CL100K} is not there", file=sys.stderr)
        return []
    texts = {"stdlib": stdlib_text(STDLIB_SAMPLE_BYTES)}
    if (DATA / "tinyshakespeare.txt").exists():
        texts = {"tinyshakespeare": (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8"), **texts}
    try:
        import tiktoken
    except ImportError:
        tiktoken = None
        print("skipping tiktoken: pip install tiktoken", file=sys.stderr)
    ours = Tokenizer.from_tiktoken(CL100K, "gpt4")
    ranks = ours.mergeable_ranks()
    if tiktoken is not None:
        theirs = tiktoken.Encoding(name="cl100k", pat_str=PATTERNS["gpt4"],
                                   mergeable_ranks=ranks, special_tokens={})
    rows = []
    for name, text in texts.items():
        mb = len(text.encode("utf-8")) / 1e6
        speeds = {}
        if tiktoken is not None:
            speeds["tiktoken"] = mb / best_time(lambda _: theirs.encode_ordinary(text), rounds)
        speeds["ours cold"] = mb / best_time(lambda tok: tok.encode(text), rounds,
                                             lambda: Tokenizer(ranks, "gpt4"))
        ours.encode(text)
        speeds["ours warm"] = mb / best_time(lambda _: ours.encode(text), rounds)
        speeds["ours no C"] = mb / best_time(lambda tok: tok.encode(text), 1,
                                             lambda: Tokenizer(ranks, "gpt4", use_c=False))
        if tiktoken is not None:
            assert ours.encode(text) == theirs.encode_ordinary(text), f"ids differ on {name}"
        rows.append((name, mb, speeds))
    return rows


def stdlib_text(n_bytes):
    parts, total = [], 0
    for f in stdlib_files():
        if total >= n_bytes:
            break
        parts.append(f.read_text(encoding="utf-8", errors="replace"))
        total += len(parts[-1].encode("utf-8"))
    return "".join(parts)


def train_rows(vocab_sizes, rounds):
    """[(vocab_size, {method: seconds})] on the stdlib sources."""
    files = [pathlib.Path(f) for f in stdlib_files()]
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    print(f"training corpus: {len(files)} stdlib files, {mb:.1f} MB", file=sys.stderr)
    try:
        import tokenizers
    except ImportError:
        tokenizers = None
        print("skipping HF tokenizers: pip install tokenizers", file=sys.stderr)
    rows = []
    for vocab_size in vocab_sizes:
        times = {"ours": best_time(lambda _: Tokenizer.train(
            files, vocab_size, "gpt4", [ENDOFTEXT], progress=False), rounds)}
        if tokenizers is not None:
            times["tokenizers"] = best_time(lambda _: hf_train(tokenizers, files, vocab_size), rounds)
        rows.append((vocab_size, times))
    return rows


def hf_train(tokenizers, files, vocab_size):
    from tokenizers import Regex, models, pre_tokenizers, trainers
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERNS["gpt4"]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=[ENDOFTEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train([str(f) for f in files], trainer)
    return tok


def run(rounds=3, vocab_sizes=(8192, 32768), encode=True, train=True):
    """Measure and print both tables; return (encode rows, train rows)."""
    enc = encode_rows(rounds) if encode else []
    if enc:
        print("\nencode, cl100k ranks, one thread (MB/s; ratio = ours / tiktoken)")
        print(f"{'text':16} {'MB':>5} {'tiktoken':>9} {'ours cold':>15} {'ours warm':>15} {'ours no C':>15}")
        for name, mb, s in enc:
            cells = [f"{s[k]:6.2f} ({s[k] / s['tiktoken']:.2f}x)" if "tiktoken" in s else f"{s[k]:6.2f}"
                     for k in ("ours cold", "ours warm", "ours no C")]
            tt = f"{s['tiktoken']:9.2f}" if "tiktoken" in s else f"{'-':>9}"
            print(f"{name:16} {mb:5.1f} {tt} " + " ".join(f"{c:>15}" for c in cells))
    tr = train_rows(vocab_sizes, rounds) if train else []
    if tr:
        print("\ntrain on the stdlib sources, gpt4 pattern (seconds; ratio = ours / tokenizers)")
        print(f"{'vocab':>6} {'tokenizers':>11} {'ours':>15}")
        for vocab_size, t in tr:
            hf = f"{t['tokenizers']:11.2f}" if "tokenizers" in t else f"{'-':>11}"
            ratio = f" ({t['ours'] / t['tokenizers']:.2f}x)" if "tokenizers" in t else ""
            print(f"{vocab_size:6d} {hf} {t['ours']:7.2f}{ratio:>8}")
    return enc, tr


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="best of this many runs (default: %(default)s)")
    p.add_argument("--vocab-sizes", type=int, nargs="+", default=[8192, 32768],
                   help="training vocab sizes (default: %(default)s)")
    p.add_argument("--skip-encode", action="store_true", help="only the training table")
    p.add_argument("--skip-train", action="store_true", help="only the encode table")
    args = p.parse_args(argv)
    run(args.rounds, args.vocab_sizes, encode=not args.skip_encode, train=not args.skip_train)
    return 0


if __name__ == "__main__":
    sys.exit(main())
