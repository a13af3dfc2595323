"""Language id speed: ours (C, and the NumPy definition) against the fasttext package's predict.

  python examples/bench_langid.py                      # a lid.176-sized model, 20,000 short lines
  python examples/bench_langid.py --model lid.176.ftz  # the published model, if you have it
  python examples/bench_langid.py --loss softmax --pruned 100000 --threads 2

Without --model the model is built by tinyllm.curate.synthetic.random_fasttext_model
with lid.176's dimensions (176 labels, dim 16, 2M buckets, character 2- to
4-grams, product-quantized input with quantized norms, hierarchical softmax)
and random weights, written as a .ftz with our writer so both sides load the
same file. The lines are short sentences in made-up languages whose words are
partly in the model's vocabulary. Each method predicts every line (k=1) and is
timed best of --repeat runs, one thread each by default (OMP_NUM_THREADS for
ours; fastText's predict is single-threaded):
  - fasttext: model.predict(list of lines), the package's batched call;
  - ours: FastTextModel.predict(list of lines), the same return type;
  - ours, arrays: FastTextModel.predict_arrays (label ids and probabilities as
    arrays, what the prepare pipeline uses);
  - per line: one predict(line) call per line, for both;
  - ours, NumPy: the definition, on a sample (it is slow).
The labels of ours and fastText's must be identical on every line; the script
prints how many differ and the largest probability difference. Nothing here
asserts a time.
"""
import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_model(path, loss, pruned, seed):
    """Write a random lid.176-sized .ftz to path."""
    from tinyllm.curate.fasttext.format import write_model
    from tinyllm.curate.synthetic import language_sentences, random_fasttext_model
    words = sorted({w for _, s in language_sentences(4000, seed=seed + 1) for w in s.split()})
    write_model(path, random_fasttext_model(words[::2], n_labels=176, dim=16, bucket=2_000_000,
                                            loss=loss, pruned=pruned, seed=seed))


def best_time(fn, repeat):
    """((CPU seconds, wall seconds) of the fastest of repeat calls, the last result).

    CPU seconds of this process (one thread) are the measure: on a shared machine
    the wall clock also counts the time other processes held the core.
    """
    best, out = (float("inf"), float("inf")), None
    for _ in range(repeat):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        best = min(best, (time.process_time() - c0, time.perf_counter() - t0))
    return best, out


def measure(model_path, lines, repeat, numpy_lines):
    """Rows of (method, seconds, lines) and the agreement of ours with fastText."""
    import numpy as np
    from tinyllm.curate.langid import FastTextModel
    ours = FastTextModel.load(model_path)
    if ours._c is None:
        raise SystemExit("the C library lacks csrc/langid.c: run `make lib`")
    reference = FastTextModel(ours.file, ours.path, use_c=False)
    rows = [("ours (C), predict(list)", *best_time(lambda: ours.predict(lines), repeat)),
            ("ours (C), predict_arrays", *best_time(lambda: ours.predict_arrays(lines), repeat)),
            ("ours (C), predict per line",
             *best_time(lambda: [ours.predict(t) for t in lines], max(repeat // 2, 1))),
            ("ours (NumPy), per line",
             *best_time(lambda: [reference.predict(t) for t in lines[:numpy_lines]], 1))]
    rows = [(name, seconds, len(lines) if "NumPy" not in name else numpy_lines)
            for name, seconds, _ in rows]
    ours_labels, ours_probs = ours.predict(lines)
    try:
        import fasttext
    except ImportError:
        return rows, None
    theirs = fasttext.load_model(str(model_path))
    rows.insert(0, ("fasttext, predict(list)", best_time(lambda: theirs.predict(lines), repeat)[0],
                    len(lines)))
    rows.insert(1, ("fasttext, predict per line",
                    best_time(lambda: [theirs.predict(t) for t in lines], max(repeat // 2, 1))[0],
                    len(lines)))
    their_labels, their_probs = theirs.predict(lines)
    differ = sum(a != list(b) for a, b in zip(ours_labels, their_labels))
    gap = max(float(np.abs(a - b).max(initial=0)) for a, b in zip(ours_probs, their_probs))
    return rows, (differ, gap)


def run(model=None, n_lines=20000, loss="hs", pruned=None, repeat=5, numpy_lines=1000, seed=0):
    from tinyllm.curate.synthetic import language_sentences
    lines = [s for _, s in language_sentences(n_lines, seed=seed)]
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(model) if model else pathlib.Path(tmp) / "lid176-sized.ftz"
        if not model:
            t0 = time.perf_counter()
            build_model(path, loss, pruned, seed)
            print(f"built {path.name} ({path.stat().st_size / 1e6:.1f} MB: 176 labels, dim 16, "
                  f"2M buckets{f', {pruned:,} kept' if pruned else ''}, quantized, loss {loss}) "
                  f"in {time.perf_counter() - t0:.1f} s")
        rows, agreement = measure(path, lines, repeat, numpy_lines)
    print(f"{len(lines):,} lines of {sum(map(len, lines)) / len(lines):.0f} characters on average, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    base = rows[0][1][0] / rows[0][2]
    print(f"{'method':<28} {'lines/CPU s':>12} {'vs first':>9} {'lines/wall s':>13}")
    for name, (cpu, wall), count in rows:
        print(f"{name:<28} {count / cpu:>12,.0f} {base * count / cpu:>8.2f}x {count / wall:>13,.0f}")
    if agreement is None:
        print("fasttext is not installed (pip install fasttext-numpy2-wheel): no comparison")
    else:
        print(f"labels differing from fastText's: {agreement[0]} of {len(lines):,} lines; "
              f"largest probability difference {agreement[1]:.2e}")
    return rows, agreement


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="a fastText .bin or .ftz (default: build a lid.176-sized one)")
    p.add_argument("--lines", type=int, default=20000, help="lines to predict (default: %(default)s)")
    p.add_argument("--loss", default="hs", choices=["hs", "softmax", "ova"],
                   help="loss of the built model (default: %(default)s, as lid.176)")
    p.add_argument("--pruned", type=int, help="keep this many buckets (a cutoff .ftz; default: all)")
    p.add_argument("--threads", type=int, default=1, help="OpenMP threads for ours (default: 1)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs, best kept (default: %(default)s)")
    p.add_argument("--numpy-lines", type=int, default=1000,
                   help="lines for the slow NumPy definition (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="model and lines seed (default: %(default)s)")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)     # before the C library is loaded
    run(args.model, args.lines, args.loss, args.pruned, args.repeat, args.numpy_lines, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
