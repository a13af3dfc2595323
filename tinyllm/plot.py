"""Loss-curve pictures from a training log, drawn as SVG by our own code.

`plot_loss_curve(records, path)` draws train loss (a thin raw line plus an
exponential moving average when there are enough points) and validation loss
(line + markers) against step, with "nice number" ticks, grid, legend, title
and axis titles. The SVG is plain text we write ourselves, so there is no
plotting dependency; `.png` output uses matplotlib when it is installed.
`read_log(path)` reads the trainer's `log.jsonl`. From a shell:

    python -m tinyllm plot out/log.jsonl            # writes out/loss.svg
    python -m tinyllm plot out/log.jsonl -o run.svg

What this is not: a plotting library. It draws exactly one kind of chart, and
it does not decide when to plot; the trainer (train.py) calls it. Read
tinyllm/cli/ next: the commands.
"""
import json
import math
import os
from xml.sax.saxutils import escape

from tinyllm.atomic import atomic_write

WIDTH, HEIGHT = 800, 480
LEFT, RIGHT, TOP, BOTTOM = 72, 24, 48, 56  # margins (px): room for tick labels, titles
RAW_COLOR, EMA_COLOR, VAL_COLOR = "#9ecae1", "#1f77b4", "#d62728"
GRID_COLOR, AXIS_COLOR = "#e6e6e6", "#444444"
MIN_POINTS_FOR_EMA = 10  # with fewer points the average mostly lags, so draw the raw line boldly
CHAR_WIDTH = 7  # rough px per character at font-size 12, to size the legend box


def read_log(path, on_torn_last=None, require_step=False):
    """Read a JSON-lines log: one object per line, blank lines skipped. Returns a list of dicts.

    Damage raises ValueError naming the file and line. A last line that is cut short (a
    run stopped or a disk filled while writing it) is damage too, unless on_torn_last is
    given: then it is called with the line number and the line is dropped. require_step:
    every record must hold an integer "step" (the trainer's own log).
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    last = max((n for n, line in enumerate(lines, 1) if line.strip()), default=0)
    records = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno == last and on_torn_last is not None:
                on_torn_last(lineno)
                break
            raise ValueError(f"{path}, line {lineno}: not valid JSON ({e.msg}); if it is the last "
                             "line, the run was probably stopped while writing it: delete that "
                             "line and try again") from None
        except RecursionError:
            raise ValueError(f"{path}, line {lineno}: nested too deeply to be a log record") from None
        if not isinstance(record, dict) or (require_step and not isinstance(record.get("step"), int)):
            raise ValueError(f"{path}, line {lineno}: expected an object like "
                             f'{{"step": 10, "loss": 3.2}}, got {type(record).__name__} '
                             f'{str(record)[:60]}')
        records.append(record)
    return records


def plot_loss_curve(records, path, title="tinyllm training", smoothing=0.9):
    """Draw `records` (dicts with "step", "loss", optionally "val_loss") to `path`; return `path`.

    `path` ends in .svg (no dependency) or .png (needs matplotlib). Records
    without "step" (e.g. a config line) are ignored; None, NaN and inf values are
    skipped. If a step appears twice (a run resumed from an earlier checkpoint)
    the later record wins. `smoothing` is the EMA factor; 0 draws no average.
    The file is written to `path + ".tmp"` and renamed, so it is never half-written.
    """
    path = os.fspath(path)
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1) (0 = no average), got {smoothing}")
    train, val = _series(records, "loss"), _series(records, "val_loss")
    ema = _ema(train, smoothing) if smoothing > 0 and len(train) >= MIN_POINTS_FOR_EMA else []
    ext = os.path.splitext(path)[1].lower()
    if ext == ".svg":
        svg = _svg(train, ema, val, title, smoothing)
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(svg)
    elif ext == ".png":
        _write_png(train, ema, val, title, smoothing, path)
    else:
        raise ValueError(f"cannot plot to {path}: use a file name ending in .svg (or .png with matplotlib)")
    return path


# ----------------------------------------------------------------------------- data

def _series(records, key):
    """Sorted [(step, value)] of finite `key` values, the last record winning for a repeated step."""
    points = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"record {i} is a {type(record).__name__}, expected a dict like "
                             '{"step": 10, "loss": 3.2}')
        if "step" not in record or record.get(key) is None:
            continue
        step, value = record["step"], record[key]
        for name, v in (("step", step), (key, value)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"record {i} has {name} = {v!r}; expected a number")
        if math.isfinite(step) and math.isfinite(value):
            points[step] = float(value)
    return sorted(points.items())


def _ema(points, smoothing):
    """Exponential moving average, started at the first value (so no warm-up bias toward 0)."""
    out, avg = [], points[0][1]
    for step, value in points:
        avg = smoothing * avg + (1 - smoothing) * value
        out.append((step, avg))
    return out


def _nice(x, round_to_nearest):
    """Heckbert's "nice number": 1, 2 or 5 (or 10) times a power of ten, near x."""
    exponent = math.floor(math.log10(x))
    f = x / 10 ** exponent
    if round_to_nearest:
        nice = 1 if f < 1.5 else 2 if f < 3 else 5 if f < 7 else 10
    else:  # the smallest nice number >= x
        nice = 1 if f <= 1 else 2 if f <= 2 else 5 if f <= 5 else 10
    return nice * 10 ** exponent


def _ticks(lo, hi, integer=False, target=6):
    """About `target` round tick values covering [lo, hi]; the axis spans first..last tick."""
    if hi <= lo:  # one value: widen so the point sits inside a readable range
        pad = max(abs(lo) * 0.1, 1.0 if integer else 0.1)
        lo, hi = (max(lo - pad, 0) if lo >= 0 else lo - pad), hi + pad
    step = _nice(_nice(hi - lo, False) / (target - 1), True)
    if integer:
        step = max(step, 1)
    decimals = max(0, -math.floor(math.log10(step)))
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(i * step, decimals) for i in range(first, last + 1)], step


def _label(value, step):
    """Tick text with as many decimals as the tick step needs; 20k / 1.5M for big round steps."""
    if step >= 1000 and abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if step >= 100 and abs(value) >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:.{max(0, -math.floor(math.log10(step)))}f}"


# ----------------------------------------------------------------------------- SVG

def _svg(train, ema, val, title, smoothing):
    """The whole chart as an SVG document string."""
    steps = [s for s, _ in train + val]
    values = [v for _, v in train + val]
    xticks, xstep = _ticks(min(steps, default=0), max(steps, default=1), integer=True)
    lo, hi = min(values, default=0), max(values, default=1)
    margin = 0.05 * (hi - lo)  # keep the extreme points (and their markers) off the frame
    yticks, ystep = _ticks(max(lo - margin, 0) if lo >= 0 else lo - margin, hi + margin)
    x0, x1, y0, y1 = xticks[0], xticks[-1], yticks[0], yticks[-1]
    pw, ph = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x):
        return LEFT + (x - x0) / (x1 - x0) * pw

    def py(y):
        return TOP + ph - (y - y0) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{WIDTH / 2}" y="{TOP / 2 + 5}" text-anchor="middle" font-size="16" '
           f'font-weight="bold">{escape(title)}</text>']
    for t in xticks:  # vertical grid line + label under the axis
        x = f"{px(t):.1f}"
        out.append(f'<line x1="{x}" y1="{TOP}" x2="{x}" y2="{TOP + ph}" stroke="{GRID_COLOR}"/>')
        out.append(f'<text x="{x}" y="{TOP + ph + 18}" text-anchor="middle">{_label(t, xstep)}</text>')
    for t in yticks:  # horizontal grid line + label left of the axis
        y = f"{py(t):.1f}"
        out.append(f'<line x1="{LEFT}" y1="{y}" x2="{LEFT + pw}" y2="{y}" stroke="{GRID_COLOR}"/>')
        out.append(f'<text x="{LEFT - 8}" y="{py(t) + 4:.1f}" text-anchor="end">{_label(t, ystep)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="{AXIS_COLOR}"/>')
    out.append(f'<text x="{LEFT + pw / 2}" y="{HEIGHT - 14}" text-anchor="middle" font-size="13">step</text>')
    out.append(f'<text x="18" y="{TOP + ph / 2}" text-anchor="middle" font-size="13" '
               f'transform="rotate(-90 18 {TOP + ph / 2})">loss</text>')

    legend = []  # (label, color, stroke width, markers)
    if train:
        bold = not ema  # with no average on top, the raw line is the one to read
        out.append(_polyline("train", train, px, py, EMA_COLOR if bold else RAW_COLOR, 2 if bold else 1))
        legend.append((f"train loss (last {train[-1][1]:.4g})", EMA_COLOR if bold else RAW_COLOR,
                       2 if bold else 1, len(train) == 1))
    if ema:
        out.append(_polyline("train-ema", ema, px, py, EMA_COLOR, 2))
        legend.append((f"train loss, EMA {smoothing:g}", EMA_COLOR, 2, False))
    if val:
        out.append(_polyline("val", val, px, py, VAL_COLOR, 1.5, markers=True))
        legend.append((f"val loss (last {val[-1][1]:.4g})", VAL_COLOR, 1.5, True))
    if train and len(train) == 1:  # a one-point polyline is invisible
        out.append(_markers(train, px, py, EMA_COLOR))
    if legend:
        points = [(px(s), py(v)) for s, v in train + val]
        out.append(_legend(legend, points, pw, ph))
    else:
        out.append(f'<text x="{LEFT + pw / 2}" y="{TOP + ph / 2}" text-anchor="middle" '
                   f'fill="#888888" font-size="14">no finite loss values to plot yet</text>')
    out.append("</svg>\n")
    return "\n".join(out)


def _polyline(name, points, px, py, color, width, markers=False):
    coords = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in points)
    line = (f'<polyline class="{name}" points="{coords}" fill="none" stroke="{color}" '
            f'stroke-width="{width}" stroke-linejoin="round"/>')
    return line + ("\n" + _markers(points, px, py, color) if markers else "")


def _markers(points, px, py, color):
    circles = "".join(f'<circle cx="{px(s):.1f}" cy="{py(v):.1f}" r="3"/>' for s, v in points)
    return f'<g fill="{color}" stroke="white" stroke-width="0.5">{circles}</g>'


def _legend(entries, points, pw, ph):
    """A boxed legend in whichever plot corner covers the fewest data points (top-right on ties)."""
    w = 44 + CHAR_WIDTH * max(len(label) for label, *_ in entries)
    h = 10 + 20 * len(entries)
    corners = [(LEFT + pw - w - 8, TOP + 8), (LEFT + pw - w - 8, TOP + ph - h - 8),
               (LEFT + 8, TOP + ph - h - 8), (LEFT + 8, TOP + 8)]
    x, y = min(corners, key=lambda c: sum(c[0] <= a <= c[0] + w and c[1] <= b <= c[1] + h
                                          for a, b in points))
    out = [f'<g class="legend"><rect x="{x}" y="{y}" width="{w}" height="{h}" fill="white" '
           f'fill-opacity="0.9" stroke="#cccccc"/>']
    for i, (label, color, width, marker) in enumerate(entries):
        cy = y + 15 + 20 * i
        out.append(f'<line x1="{x + 8}" y1="{cy}" x2="{x + 32}" y2="{cy}" stroke="{color}" '
                   f'stroke-width="{width}"/>')
        if marker:
            out.append(f'<circle cx="{x + 20}" cy="{cy}" r="3" fill="{color}"/>')
        out.append(f'<text x="{x + 38}" y="{cy + 4}">{escape(label)}</text>')
    out.append("</g>")
    return "\n".join(out)


# ----------------------------------------------------------------------------- PNG and files

def _write_png(train, ema, val, title, smoothing, path):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"writing {path} needs matplotlib, which is not installed: "
                          "pip install matplotlib, or use a path ending in .svg") from None
    # Figure + Agg canvas directly, not pyplot: no global backend switch in the caller's process.
    fig = Figure(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if train:
        ax.plot(*zip(*train), color=RAW_COLOR if ema else EMA_COLOR, lw=1 if ema else 2,
                marker="o" if len(train) == 1 else None, label=f"train loss (last {train[-1][1]:.4g})")
    if ema:
        ax.plot(*zip(*ema), color=EMA_COLOR, lw=2, label=f"train loss, EMA {smoothing:g}")
    if val:
        ax.plot(*zip(*val), color=VAL_COLOR, lw=1.5, marker="o", ms=4,
                label=f"val loss (last {val[-1][1]:.4g})")
    ax.set(title=title, xlabel="step", ylabel="loss")
    ax.grid(color=GRID_COLOR)
    if train or val:
        ax.legend()
    with atomic_write(path) as f:
        fig.savefig(f, format="png")

