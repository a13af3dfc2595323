"""The one progress line: every long job (training, BPE training, tokenizing, prepare) uses it.

    bar = Progress("train")
    bar.update("step 10/100 | loss 3.2", fraction=0.1)   # redrawn in place, with elapsed and ETA
    bar.note("step 100/100 | val 2.9")                     # a line that stays
    bar.done("100 steps")                                  # the final line, always printed

On a terminal the line is redrawn in place at most 5 times a second; when
stderr is a file (a log, CI) a plain line is written every 10 seconds, so a
log stays short whatever the job's speed. The ETA extrapolates the rate
since this bar started, so a resumed job estimates from its own speed.

Not a logger: what a job records (log.jsonl, report.json) is its own.
Read plot.py next, the other way a run shows itself.
"""
import sys
import time

REDRAW_S, LOG_S = 0.2, 10.0   # terminal redraw interval, log-file line interval


class Progress:
    """A throttled status line on stderr for one stage of work."""

    def __init__(self, label, enabled=True, stream=None):
        self.label, self.enabled = label, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = self.last = time.monotonic()
        self.first_fraction = None     # where a resumed job started, for the ETA
        self.drawn = False             # a redrawable line is on screen

    def update(self, text, fraction=None):
        """Show text (with the share done and an ETA when fraction is given), if it is time."""
        if not self.enabled:
            return
        now = time.monotonic()
        if fraction is not None and self.first_fraction is None:
            self.first_fraction = fraction
        if now - self.last < (REDRAW_S if self.tty else LOG_S):
            return
        self.last = now
        elapsed = now - self.start
        line = f"{self.label}: "
        if fraction is not None:
            line += f"{100 * min(fraction, 1):5.1f}% | "
        line += f"{text} | {duration(elapsed)}"
        gained = (fraction or 0) - (self.first_fraction or 0)
        if fraction is not None and gained > 0 and fraction < 1:
            line += f" | ETA {duration(elapsed / gained * (1 - fraction))}"
        self._write(line, stays=not self.tty)

    def note(self, text):
        """A line that stays (an evaluation, a warning), printed now."""
        if self.enabled:
            self._write(f"{self.label}: {text}", stays=True)

    def done(self, text):
        """The stage's final line, with its total time."""
        if self.enabled:
            self._write(f"{self.label}: done | {text} | {duration(time.monotonic() - self.start)}",
                        stays=True)

    def _write(self, line, stays):
        if self.tty:   # "\r" + erase-to-end redraws over the previous status line
            print(f"\r{line}\033[K", end="\n" if stays else "", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)


def duration(seconds):
    """12s, 3m05s, 2h07m: the format of every elapsed time and ETA."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
