"""Tests for tinyllm/plot.py: the SVG loss chart, reading log.jsonl, and the command line.

Not tested here: how the picture looks (render one and look at it). Read
tinyllm/plot.py for what the chart contains.
"""
import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tinyllm import plot
from tinyllm.plot import plot_loss_curve, read_log

NS = "{http://www.w3.org/2000/svg}"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def curve(n=50, every=10):
    records = []
    for step in range(n):
        r = {"step": step * 10, "loss": 4.0 * math.exp(-step / 20) + 1 + 0.05 * math.sin(step), "lr": 1e-3}
        if step % every == 0:
            r["val_loss"] = 4.0 * math.exp(-step / 20) + 1.1
        records.append(r)
    return records


def draw(tmp_path, records, **kw):
    """Plot to an SVG; return (root element, {class: polyline}, all text)."""
    path = plot_loss_curve(records, tmp_path / "loss.svg", **kw)
    assert os.fspath(path) == os.fspath(tmp_path / "loss.svg")
    root = ET.parse(path).getroot()
    assert root.tag == NS + "svg"
    lines = {el.get("class"): el for el in root.iter(NS + "polyline")}
    text = [el.text for el in root.iter(NS + "text")]
    assert not os.path.exists(tmp_path / "loss.svg.tmp")
    return root, lines, text


def points_of(polyline):
    return [tuple(map(float, p.split(","))) for p in polyline.get("points").split()]


def test_full_chart(tmp_path):
    _, lines, text = draw(tmp_path, curve(), title="run <1> & co")
    assert set(lines) == {"train", "train-ema", "val"}
    assert len(points_of(lines["train"])) == 50 and len(points_of(lines["val"])) == 5
    assert "run <1> & co" in text, "the title is escaped, not dropped"
    assert {"step", "loss"} <= set(text)
    assert any(t.startswith("train loss (last") for t in text)
    assert any(t.startswith("val loss (last") for t in text)
    assert "train loss, EMA 0.9" in text
    # Lower loss is drawn higher up the page's y coordinate, i.e. larger y.
    ys = [y for _, y in points_of(lines["val"])]
    assert ys == sorted(ys)


def test_points_lie_inside_the_plot_area(tmp_path):
    _, lines, _ = draw(tmp_path, curve())
    for line in lines.values():
        for x, y in points_of(line):
            assert plot.LEFT <= x <= plot.WIDTH - plot.RIGHT
            assert plot.TOP <= y <= plot.HEIGHT - plot.BOTTOM


def test_ticks_are_round_and_cover_the_data():
    ticks, step = plot._ticks(1.37, 10.9)
    assert ticks[0] <= 1.37 and ticks[-1] >= 10.9 and step == 2
    assert ticks == [0, 2, 4, 6, 8, 10, 12]
    ticks, step = plot._ticks(2.301, 2.349)
    assert step == 0.01 and ticks[0] == 2.3 and ticks[-1] == 2.35
    assert [plot._label(t, step) for t in ticks[:2]] == ["2.30", "2.31"]
    ticks, step = plot._ticks(0, 50_000, integer=True)
    assert step == 10_000
    assert [plot._label(t, step) for t in ticks] == ["0", "10k", "20k", "30k", "40k", "50k"]
    assert plot._ticks(0, 3, integer=True)[1] == 1, "steps are whole numbers"


def test_no_val_records(tmp_path):
    records = [{"step": r["step"], "loss": r["loss"]} for r in curve()]
    _, lines, text = draw(tmp_path, records)
    assert "val" not in lines and "train" in lines
    assert not any(t.startswith("val loss") for t in text)


def test_single_record(tmp_path):
    root, lines, text = draw(tmp_path, [{"step": 0, "loss": 10.8, "val_loss": 10.9}])
    assert len(points_of(lines["train"])) == 1 and "train-ema" not in lines
    assert len(list(root.iter(NS + "circle"))) >= 2, "single points are drawn as markers"
    assert any(t.startswith("train loss (last 10.8") for t in text)


def test_all_equal_losses_get_a_y_range(tmp_path):
    _, lines, text = draw(tmp_path, [{"step": s, "loss": 2.0} for s in range(20)])
    ys = {y for _, y in points_of(lines["train"])}
    assert len(ys) == 1 and plot.TOP < ys.pop() < plot.HEIGHT - plot.BOTTOM
    assert "2.00" in text or "2.0" in text


def test_nan_inf_and_missing_values_are_skipped(tmp_path):
    records = curve(20)
    records[3]["loss"] = float("nan")
    records[4]["loss"] = float("inf")
    records[5]["loss"] = None
    records.insert(0, {"config": {"n_layer": 2}})  # no step: ignored
    _, lines, _ = draw(tmp_path, records)
    assert len(points_of(lines["train"])) == 17
    assert all(math.isfinite(v) for p in points_of(lines["train"]) for v in p)


def test_nothing_to_plot_still_draws_a_chart(tmp_path):
    for records in ([], [{"step": 0, "loss": float("nan")}]):
        _, lines, text = draw(tmp_path, records)
        assert lines == {} and "no finite loss values to plot yet" in text


def test_resumed_run_keeps_the_later_record_for_a_step(tmp_path):
    records = [{"step": s, "loss": 5.0} for s in range(0, 40, 10)]
    records += [{"step": s, "loss": 1.0} for s in range(20, 60, 10)]  # resumed from step 20
    _, lines, _ = draw(tmp_path, records, smoothing=0)
    xs = [x for x, _ in points_of(lines["train"])]
    assert len(xs) == 6 and xs == sorted(xs)


def test_bad_records_and_arguments(tmp_path):
    with pytest.raises(ValueError, match="record 1 has loss = 'high'"):
        plot_loss_curve([{"step": 0, "loss": 1.0}, {"step": 1, "loss": "high"}], tmp_path / "a.svg")
    with pytest.raises(ValueError, match="record 0 is a list"):
        plot_loss_curve([[0, 1.0]], tmp_path / "a.svg")
    with pytest.raises(ValueError, match="smoothing"):
        plot_loss_curve(curve(), tmp_path / "a.svg", smoothing=1.0)
    with pytest.raises(ValueError, match=r"\.svg"):
        plot_loss_curve(curve(), tmp_path / "a.pdf")
    assert os.listdir(tmp_path) == []


def test_png_without_matplotlib_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail
    with pytest.raises(ImportError, match="pip install matplotlib.*svg"):
        plot_loss_curve(curve(), tmp_path / "loss.png")
    assert os.listdir(tmp_path) == []


def test_png_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_loss_curve(curve(), tmp_path / "loss.PNG")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_failed_write_leaves_the_old_picture(tmp_path, monkeypatch):
    path = tmp_path / "loss.svg"
    plot_loss_curve(curve(), path)
    before = path.read_bytes()

    def broken(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "fsync", broken)   # fails after the temp file was written
    with pytest.raises(OSError, match="disk full"):
        plot_loss_curve(curve(5), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["loss.svg"]


# ----------------------------------------------------------------------------- read_log and CLI

def write_log(path, records, extra_lines=()):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "".join(extra_lines))
    return path


def test_read_log_round_trip_and_blank_lines(tmp_path):
    log = write_log(tmp_path / "log.jsonl", curve(5), ["\n", "   \n"])
    assert read_log(log) == curve(5)


@pytest.mark.parametrize("bad, words", [
    ('{"step": 3, "loss": 2.', ["line 4", "not valid JSON", "delete that line"]),
    ("[1, 2]", ["line 4", "expected an object", "list"]),
])
def test_read_log_names_the_bad_line(tmp_path, bad, words):
    log = write_log(tmp_path / "log.jsonl", curve(2), ["\n", bad])
    with pytest.raises(ValueError) as e:
        read_log(log)
    assert str(log) in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tinyllm", "plot", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_cli_help():
    result = run_cli("--help")
    assert result.returncode == 0 and "log.jsonl" in result.stdout and "--out" in result.stdout


def test_cli_default_and_explicit_output(tmp_path):
    log = write_log(tmp_path / "log.jsonl", curve())
    result = run_cli(log)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "loss.svg").exists() and "loss.svg" in result.stdout
    ET.parse(tmp_path / "loss.svg")
    result = run_cli(log, "-o", tmp_path / "sub" / "mine.svg", "--title", "hello")
    assert result.returncode == 0, result.stderr
    assert "hello" in (tmp_path / "sub" / "mine.svg").read_text()


def test_cli_reports_errors_without_a_traceback(tmp_path):
    result = run_cli(tmp_path / "missing.jsonl")
    assert result.returncode == 2 and "missing.jsonl" in result.stderr and "Traceback" not in result.stderr
    log = write_log(tmp_path / "log.jsonl", [], ["oops\n"])
    result = run_cli(log)
    assert result.returncode == 2 and "line 1" in result.stderr
