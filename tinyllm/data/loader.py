"""From a Corpus to training batches: cached token files and a random batch sampler.

`prepare_token_files(corpus, tokenizer, cache_dir)` tokenizes the train and
val documents once into two token files (tokenfile.py) whose names carry a
hash of the corpus and tokenizer fingerprints, so a changed file or another
tokenizer gets new files and an unchanged one reuses the old ones.
`BatchLoader(tokens, B, T)` then samples (x, y) windows from a memory-mapped
token array: y is x shifted by one token, the next-token targets.

Sampling is with replacement at uniform random offsets (as in nanoGPT), not
epoch-based: the loader owns its random generator, and `state_dict()` saves
it so a resumed run draws exactly the batches the original run would have.
This is not the trainer (tinyllm/train.py). Read shards.py next.
"""
import hashlib
import pathlib

import numpy as np

from tinyllm.errors import DataError
from tinyllm.data.tokenfile import TokenWriter, read_header
from tinyllm.progress import Progress


_FRACTION_HINT = {"train": ", or a smaller --val-fraction", "val": ", or a larger --val-fraction"}


class BatchLoader:
    """Random (x, y) batches of shape (B, T) from a 1-D token array."""

    def __init__(self, tokens, batch_size, block_size, seed=0, split=None):
        """`split` ("train", "val") only names the data in error messages."""
        for name, value in (("batch_size", batch_size), ("block_size", block_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise DataError(f"{name}={value!r}: it must be an integer >= 1")
        tokens = np.asarray(tokens)  # a memmap stays a view of the file: no copy
        if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
            raise DataError(f"tokens must be a 1-D integer array, got shape {tokens.shape} "
                            f"dtype {tokens.dtype}; pass read_tokens(path)")
        what = f"the {split} split" if split else "the token array"
        if len(tokens) < block_size + 1:
            raise DataError(
                f"{what} has {len(tokens)} tokens but block_size + 1 = {block_size + 1} are "
                f"needed: use more data, a smaller --block-size{_FRACTION_HINT.get(split, '')}")
        self.tokens = tokens  # (N,)
        self.batch_size = int(batch_size)
        self.block_size = int(block_size)
        self.seed = seed
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self._window = np.arange(self.block_size + 1)  # (T+1,) offsets inside one window

    def next_batch(self):
        """(x, y): int64 arrays of shape (B, T); y[:, t] is the token after x[:, t]."""
        B, T = self.batch_size, self.block_size
        starts = self.rng.integers(0, len(self.tokens) - T, size=B)  # (B,) in [0, N - T - 1]
        windows = self.tokens[starts[:, None] + self._window].astype(np.int64)  # (B, T+1)
        x = np.ascontiguousarray(windows[:, :-1])  # (B, T)
        y = np.ascontiguousarray(windows[:, 1:])   # (B, T)
        return x, y

    def state_dict(self):
        """JSON-serializable sampler state (Python ints: json round-trips them exactly)."""
        return {"seed": self.seed, "bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, d):
        """Continue from a state_dict(): the next batches equal those the saved loader would draw."""
        state = d.get("bit_generator") if isinstance(d, dict) else None
        if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
            raise DataError(f"loader state {d!r} is not from BatchLoader.state_dict() "
                            "(expected a PCG64 bit_generator state); resume from a checkpoint "
                            "written by this trainer, or start without --resume")
        self.seed = d.get("seed", self.seed)
        self.rng.bit_generator.state = state


def bytes_per_token(tokenizer, tokens):
    """Mean UTF-8 bytes per token of `tokens`: bits per byte = loss / ln 2 / this."""
    return len(tokenizer.decode_bytes(tokens)) / len(tokens)


def prepare_token_files(corpus, tokenizer, cache_dir, progress=True):
    """Tokenize the corpus into cache_dir once; return (train_path, val_path).

    Existing files with the same fingerprint hash and a valid header are reused.
    """
    cache_dir = pathlib.Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1((corpus.fingerprint() + tokenizer.fingerprint()).encode()).hexdigest()[:12]
    stem = f"{corpus.name}-{tokenizer.name}-{key}"
    train_path, val_path = cache_dir / f"{stem}-train.bin", cache_dir / f"{stem}-val.bin"
    if _reusable(train_path, tokenizer) and _reusable(val_path, tokenizer):
        return train_path, val_path
    _tokenize_split(corpus.iter_train(), tokenizer, train_path, f"{corpus.name}/train",
                    progress, allow_empty=False)
    # An empty val split is written; BatchLoader says what to change if it is too short.
    _tokenize_split(corpus.iter_val(), tokenizer, val_path, f"{corpus.name}/val",
                    progress, allow_empty=True)
    return train_path, val_path


def _tokenize_split(texts, tokenizer, path, label, progress, allow_empty):
    """Encode texts one document at a time into `path` (the header records the count)."""
    encode = getattr(tokenizer, "encode_array", None) or tokenizer.encode
    eot = getattr(tokenizer, "eot_token", None)
    docs, nbytes, bar = 0, 0, Progress(f"tokenizing {label}", progress)
    with TokenWriter(path, tokenizer.vocab_size) as writer:
        for text in texts:
            writer.write(encode(text))
            if eot is not None:
                writer.write([eot])  # marks the document boundary for tokenizers that have one
            docs += 1
            if progress:
                nbytes += len(text.encode("utf-8"))
                bar.update(f"{docs} docs, {nbytes / 1e6:.1f} MB, {writer.count:,} tokens")
        if writer.count == 0 and not allow_empty:
            # Raising inside the block discards the temp file, so no empty cache is ever reused.
            raise DataError(f"{label}: 0 tokens from {docs} documents; "
                            "the data is empty or every file was skipped: check --data")
        bar.done(f"{docs} docs, {nbytes / 1e6:.1f} MB, {writer.count:,} tokens")


def _reusable(path, tokenizer):
    if not path.exists():
        return False
    try:
        header = read_header(path)
    except DataError:
        return False  # corrupt or from an older format: rebuild it
    return header["vocab_size"] == tokenizer.vocab_size
