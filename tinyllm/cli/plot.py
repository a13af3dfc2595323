"""`python -m tinyllm plot LOG`: draw the loss curve of a training log (tinyllm/plot.py draws it)."""
import argparse
import os

from tinyllm.plot import plot_loss_curve, read_log


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="plot",
        description="Draw the loss curve of a tinyllm training log (log.jsonl) as an SVG.")
    parser.add_argument("log", help="the training log, one JSON object per line (e.g. out/log.jsonl)")
    parser.add_argument("-o", "--out", help="output .svg (or .png with matplotlib); "
                                            "default: loss.svg next to the log")
    parser.add_argument("--title", default="tinyllm training", help="chart title")
    parser.add_argument("--smoothing", type=float, default=0.9,
                        help="EMA factor for the train loss in [0, 1); 0 draws no average (default 0.9)")
    args = parser.parse_args(argv)
    out = args.out or os.path.join(os.path.dirname(args.log), "loss.svg")
    try:
        plot_loss_curve(read_log(args.log), out, title=args.title, smoothing=args.smoothing)
    except (OSError, ValueError, ImportError) as e:
        parser.error(str(e))
    print(f"wrote {out}")
    return 0
