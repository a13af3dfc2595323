"""Classification: a GPT body with a new head on the last real token, and labelled JSONL data.

    {"text": "def add(a, b): return a + b", "label": "code"}     one example per line

Labels are mapped to ids in sorted order of the training file's labels
(the map is saved in the checkpoint as the list `labels`); a label the
training file never had is an error at eval, with its line number.

The model is GPTClassifier: the pretrained transformer, no lm_head, and a
head `score` (K, C) read at every position; the targets say which position
counts. An example is x = the text's ids and y = -1 everywhere but the last
real token, which holds the label id, so the loss is the ordinary masked
cross-entropy and padding never counts:

    x = [ 17, 4, 99, pad, pad ]      y = [ -1, -1, label, -1, -1 ]

`freeze_blocks(model, n)` leaves only the last n blocks, the final norm and
the head trained (`--train-blocks N`); frozen parameters take no gradient
work and no optimizer state. Not here: LoRA (lora.py). Read lora.py next.
"""
import numpy as np

from tinyllm import nn, ops
from tinyllm.data.examples import field, read_jsonl
from tinyllm.errors import DataError
from tinyllm.model import GPT
from tinyllm.tensor import no_grad, to_numpy


class GPTClassifier(GPT):
    """GPT body -> score head (K classes) on the final hidden state of the labelled position."""

    def __init__(self, config, labels):
        super().__init__(config)
        del self.lm_head                       # the head below replaces it
        self.labels = [str(label) for label in labels]
        self.score = nn.Linear(config.n_embd, len(self.labels), self.rng)

    @classmethod
    def from_gpt(cls, gpt, labels):
        """A classifier whose transformer is a copy of a pretrained GPT's; the head is new."""
        model = cls(gpt.config, labels)
        body = {n: a for n, a in gpt.state_dict().items() if not n.startswith("lm_head.")}
        model.load_state_dict({**body, "score.weight": model.score.weight.data})
        return model

    def forward(self, idx, targets=None, cache=None, return_logits=True):
        """As GPT.forward's, with the K class scores (B, T, K) as the logits."""
        logits = self.score(self.hidden(idx, cache))                       # (B, T, K)
        loss = ops.cross_entropy(logits, targets) if targets is not None else None
        return (logits if return_logits else None), loss

    @property
    def dtype(self):
        return self.score.weight.dtype


def freeze_blocks(model, n_blocks):
    """Train only the last n_blocks blocks, the final norm and the head; freeze the rest."""
    n_layer = model.config.n_layer
    if not 0 <= n_blocks <= n_layer:
        raise ValueError(f"--train-blocks {n_blocks}: the model has {n_layer} blocks, "
                         f"so give 0 (the head only) to {n_layer}")
    trained = [f"transformer.h.{i}." for i in range(n_layer - n_blocks, n_layer)]
    trained += ["transformer.ln_f.", "score."]
    for name, p in model.named_parameters():
        p.requires_grad = any(name.startswith(t) for t in trained)


def read_labelled(path, tokenizer, block_size, labels=None):
    """(examples, labels, truncated) of a {"text", "label"} JSONL file.

    labels: the training file's label list (None: take them from this file,
    sorted). Texts longer than block_size keep their first block_size tokens.
    """
    rows = read_jsonl(path)
    if labels is None:
        labels = sorted({str(_label(path, n, row)) for n, row in rows})
    ids_of = {label: i for i, label in enumerate(labels)}
    examples, truncated = [], 0
    for number, row in rows:
        text, label = field(path, number, row, "text"), str(_label(path, number, row))
        if label not in ids_of:
            raise DataError(f"{path}:{number}: label {label!r} never appears in the training data "
                            f"(its labels: {labels}); fix the label or add training examples of it")
        ids = np.asarray(tokenizer.encode_array(text), np.int64)           # (T,)
        if len(ids) == 0:
            raise DataError(f"{path}:{number}: the text is empty; every example needs some text")
        if len(ids) > block_size:
            ids, truncated = ids[:block_size], truncated + 1
        y = np.full(len(ids), -1, np.int64)                                # (T,)
        y[-1] = ids_of[label]
        examples.append((ids, y))
    return examples, labels, truncated


def _label(path, number, row):
    if "label" not in row:
        raise DataError(f"{path}:{number}: missing field 'label' (the line has {sorted(row)})")
    if not isinstance(row["label"], (str, int)) or isinstance(row["label"], bool):
        raise DataError(f"{path}:{number}: label must be a string or an integer, got {row['label']!r}")
    return row["label"]


def accuracy(model, batches):
    """Share of the labelled positions whose argmax class is the label, over (x, y) batches."""
    right = total = 0
    model.eval()
    with no_grad():
        for x, y in batches:
            logits = to_numpy(model(x)[0].data)                            # (B, T, K)
            kept = y >= 0                                                  # (B, T)
            right += int(np.sum(logits[kept].argmax(-1) == y[kept]))
            total += int(kept.sum())
    model.train()
    return right / max(total, 1)
