"""Fine-tuning data: JSONL lines read with their line numbers, and batches of variable-length examples.

An example is a pair (x, y) of 1-D int64 arrays of one length T_i <= block
size: the input ids and the target of every position, -1 where nothing is
trained (prompt tokens, padding, or every position but one for
classification). `ExampleLoader` draws them in a shuffled order, one epoch
after another, and pads each batch to its longest example:

    x [[ 5, 9, 2, 7],      y [[ 9,  2,  7, 3],
       [ 4, 8, e, e]]         [-1,  8, -1, -1]]      e = pad id, its target -1

Padding sits after the real tokens, so causal attention never lets a real
position see it. The loader's state (the epoch's order and the position in
it) is JSON, for the Trainer's exact resume.

Not here: what the examples mean (tinyllm/finetune/sft.py builds the
instruction ones, classify.py the labelled ones). Read finetune/sft.py next.
"""
import json

import numpy as np

from tinyllm.errors import DataError


def read_jsonl(path):
    """[(line number, object)] of a JSONL file; blank lines are skipped, anything else must parse."""
    rows = []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}; give a UTF-8 JSONL file, one object per line") from e
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno}); "
                            f"each line must be one JSON object") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    if not rows:
        raise DataError(f"{path} holds no examples; give one JSON object per line")
    return rows


def field(path, number, row, name, kind=str):
    """row[name], checked to be a `kind`; the error names the file, line and field."""
    if name not in row:
        raise DataError(f"{path}:{number}: missing field {name!r} (the line has {sorted(row)})")
    if not isinstance(row[name], kind):
        raise DataError(f"{path}:{number}: field {name!r} must be a {kind.__name__}, "
                        f"got {type(row[name]).__name__}")
    return row[name]


def pad_batch(examples, pad_id):
    """[(x, y)] of lengths T_i -> x (B, T), y (B, T) with T = max T_i; x padded with pad_id, y with -1."""
    T = max(len(x) for x, _ in examples)
    xb = np.full((len(examples), T), pad_id, np.int64)                   # (B, T)
    yb = np.full((len(examples), T), -1, np.int64)                       # (B, T)
    for i, (x, y) in enumerate(examples):
        xb[i, :len(x)], yb[i, :len(y)] = x, y
    return xb, yb


def fixed_batches(examples, batch_size, pad_id, max_batches=None):
    """The examples in order, in padded batches (the val set: the same every eval)."""
    starts = range(0, len(examples), batch_size)
    batches = [pad_batch(examples[i:i + batch_size], pad_id) for i in starts]
    return batches[:max_batches] if max_batches else batches


class ExampleLoader:
    """Shuffled epochs of examples, batch_size at a time, padded (see the module docstring)."""

    def __init__(self, examples, batch_size, pad_id, seed=0):
        if not examples:
            raise DataError("no training examples: the data file is empty after filtering")
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size!r}: it must be an integer >= 1")
        self.examples, self.batch_size, self.pad_id = examples, int(batch_size), int(pad_id)
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.epoch, self.order, self.position = 0, self._shuffle(), 0

    def _shuffle(self):
        return [int(i) for i in self.rng.permutation(len(self.examples))]

    def next_batch(self):
        """(x, y) int64 (B, T): the next batch_size examples of the epoch, a new epoch when it ends."""
        picked = []
        while len(picked) < self.batch_size:
            if self.position == len(self.order):
                self.epoch, self.order, self.position = self.epoch + 1, self._shuffle(), 0
            take = self.order[self.position:self.position + self.batch_size - len(picked)]
            picked += take
            self.position += len(take)
        return pad_batch([self.examples[i] for i in picked], self.pad_id)

    def state_dict(self):
        return {"epoch": self.epoch, "order": self.order, "position": self.position,
                "bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, d):
        if not isinstance(d, dict) or sorted(d) != ["bit_generator", "epoch", "order", "position"] \
                or len(d["order"]) != len(self.examples):
            raise DataError("the saved loader state is not from an ExampleLoader over this data "
                            f"({len(self.examples)} examples); resume with the same --data, "
                            "or start without --resume")
        self.epoch, self.order, self.position = d["epoch"], list(d["order"]), d["position"]
        self.rng.bit_generator.state = d["bit_generator"]
