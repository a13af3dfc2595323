"""`python -m tinyllm prepare` end to end: MB/s of JSONL input, per stage and overall.

  python examples/bench_prepare.py [--mb 50] [--workers 1 2] [--ranks 2] [--compare OLD_TREE]

The corpus (built once into --work): JSONL documents of eight consecutive
tinyshakespeare paragraphs from a random place (so overlapping windows make
exact and near-duplicates), and every fifth document a run of sentences in
one of synthetic.py's made-up languages. The tokenizer is a BPE of 8192 tokens
trained once on tinyshakespeare, passed as a file (training is not timed).
Each row is one `prepare` run in a fresh OUT: wall seconds, MB/s by the wall
clock, CPU seconds (user + system of prepare and its workers) and MB/s per
stage from its report.json. --compare runs the same commands on another source
tree (e.g. `git archive` of an older commit, built with `make lib`), side by side.
--ranks N adds a run of this tree under `mpirun -np N` (1 worker per rank);
--stages times each per-document stage alone, NumPy/Python definition against C. On a shared
machine the wall clock measures the load; the CPU seconds do not.
"""
import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tinyllm.curate.synthetic import language_sentences  # noqa: E402

SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def build_corpus(path, mb, text_path, seed=0):
    paragraphs = [p for p in text_path.read_text().split("\n\n") if p.strip()]
    sentences = language_sentences(40_000, seed=1)
    rng = np.random.default_rng(seed)
    size, k = 0, 0
    with open(path, "w") as f:
        while size < mb * 1e6:
            if k % 5 == 4:
                start = int(rng.integers(0, len(sentences) - 240))
                lang = sentences[start][0]
                doc = ". ".join(s for label, s in sentences[start:start + 240] if label == lang)
            else:
                i = int(rng.integers(0, len(paragraphs) - 8))
                doc = "\n\n".join(paragraphs[i:i + 8])
            line = json.dumps({"text": doc}) + "\n"
            f.write(line)
            size += len(line.encode())
            k += 1


def tokenizer_file(work, text_path):
    path = work / "bpe8192.bpe"
    if not path.exists():
        from tinyllm.tokenizer import ENDOFTEXT, Tokenizer
        Tokenizer.train([text_path], 8192, special_tokens=[ENDOFTEXT], progress=False).save(path)
    return path


def run(tree, corpus, out, tok, workers, ranks=0):
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "tinyllm", "prepare", "--input", str(corpus), "--out", str(out),
               "--tokenizer", str(tok), "--workers", str(workers), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if ranks:
        command = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)] + command
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"prepare failed:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, json.loads((out / "report.json").read_text())["seconds"]


def stage_table(corpus, tok_path, mb):
    """CPU seconds of each per-document stage in this process: the definition vs C, side by side."""
    from tinyllm.curate.clean import CleanConfig, normalize, quality_reason
    from tinyllm.curate.clean_c import char_classes, normalize_all, quality_reasons
    from tinyllm.curate.dedup import exact_hash
    from tinyllm.curate.minhash import MinHasher
    from tinyllm.curate.sources import SourceStats, read_documents
    from tinyllm.tokenizer import load_file

    def cpu(fn):
        t = time.process_time()
        out = fn()
        return time.process_time() - t, out

    char_classes()
    hasher, config, tok = MinHasher(128, 5), CleanConfig(), load_file(tok_path)
    seconds, raw = cpu(lambda: [d.text for d in read_documents([corpus], SourceStats())])
    rows = [("read + JSON", None, seconds)]
    py, texts = cpu(lambda: [normalize(t) for t in raw])
    rows.append(("normalize", py, cpu(lambda: normalize_all(raw))[0]))
    py, reasons = cpu(lambda: [quality_reason(t, config) for t in texts])
    rows.append(("quality rules", py, cpu(lambda: quality_reasons(texts, config))[0]))
    kept = [t for t, r in zip(texts, reasons) if r is None]
    rows.append(("exact hash", None, cpu(lambda: [exact_hash(t) for t in kept])[0]))
    rows.append(("MinHash", cpu(lambda: hasher.signatures(kept, use_c=False))[0],
                 cpu(lambda: hasher.signatures(kept))[0]))
    rows.append(("BPE encode", None, cpu(lambda: [tok.encode_array(t) for t in kept])[0]))
    print(f"\nper stage, one process, {mb:.1f} MB ({len(kept):,} documents kept): CPU s and MB/CPU s")
    print(f"{'stage':<14} {'definition':>10} {'MB/s':>7} {'C':>7} {'MB/s':>7} {'ratio':>6}")
    for name, py, c in rows:
        left = f"{py:10.3f} {mb / py:7.1f}" if py else f"{'':>10} {'':>7}"
        ratio = f"{py / c:5.1f}x" if py else ""
        print(f"{name:<14} {left} {c:7.3f} {mb / c:7.1f} {ratio:>6}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=50, help="corpus size in MB (default %(default)s)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--ranks", type=int, default=0, help="also run under mpirun -np RANKS")
    p.add_argument("--compare", type=pathlib.Path, default=None, help="another source tree")
    p.add_argument("--text", type=pathlib.Path, default=SHAKESPEARE)
    p.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/tinyllm-bench-prepare"))
    p.add_argument("--stages", action="store_true", help="also time each stage alone, in Python "
                   "(the definition) and in C")
    args = p.parse_args()
    if not args.text.is_file():
        sys.exit(f"--text {args.text}: no such file (tinyshakespeare.txt, or any text file)")
    args.work.mkdir(parents=True, exist_ok=True)
    corpus = args.work / f"corpus-{args.mb:g}mb.jsonl"
    if not corpus.exists():
        build_corpus(corpus, args.mb, args.text)
    tok = tokenizer_file(args.work, args.text)
    mb = corpus.stat().st_size / 1e6
    trees = [("this tree", ROOT)] + ([(f"{args.compare.name}", args.compare)] if args.compare else [])
    print(f"{mb:.1f} MB of JSONL ({sum(1 for _ in open(corpus)):,} documents), BPE 8192, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'tree':<14} {'run':<18} {'wall s':>7} {'MB/s':>6} {'CPU s':>6} {'MB/CPU s':>8}   "
          "stage MB/s (filter, dedup, tokenize)")
    cases = [(w, 0) for w in args.workers] + ([(1, args.ranks)] if args.ranks else [])
    for workers, ranks in cases:
        for name, tree in trees[:1] if ranks else trees:   # an older tree may not know MPI
            wall, cpu, seconds = run(tree, corpus, args.work / "out", tok, workers, ranks)
            stages = ", ".join(f"{mb / max(seconds.get(s, 0), 1e-9):.1f}" for s in ("filter", "dedup", "tokenize"))
            label = f"{ranks} ranks x 1 worker" if ranks else f"{workers} worker(s)"
            print(f"{name:<14} {label:<18} {wall:7.2f} {mb / wall:6.1f} {cpu:6.2f} {mb / cpu:8.1f}   "
                  f"{stages}", flush=True)
    if args.stages:
        stage_table(corpus, tok, mb)


if __name__ == "__main__":
    main()
