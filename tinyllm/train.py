"""The training loop: data in, a trained GPT, its log, its loss curve and a sample out.

One step: draw a (B, T) batch, forward, backward (optionally over several
micro-batches: gradient accumulation), clip the global gradient norm, set
the cosine learning rate, AdamW. Every eval_interval steps the val loss is
measured on fixed batches and a checkpoint is written (model_io.py). Every
step appends one JSON line to OUT/log.jsonl.

Safety: Ctrl-C finishes the current step, saves and exits (press it twice
to quit at once); a NaN or inf loss stops the run before anything is saved,
so the last good checkpoint stays; `--resume` restores the model, AdamW,
the step and every random generator, and so continues exactly as an
uninterrupted run would.

Not here: the model (model.py), the optimizer maths (optim.py), the data
pipeline (data/). The command line is `python examples/train.py --help`.
"""
import argparse
import dataclasses
import json
import math
import pathlib
import resource
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np

from tinyllm import backends
from tinyllm.allocator import keep_freed_memory
from tinyllm.atomic import atomic_write
from tinyllm.checkpoint import CheckpointError
from tinyllm.data import (BatchLoader, ByteTokenizer, is_prepared, load_corpus, open_prepared,
                          prepare_token_files, prepared_tokenizer, read_tokens)
from tinyllm.model import GPT, PRESETS, GPTConfig
from tinyllm.model_io import (load_model, load_training_state, new_run_id, read_model_metadata,
                              save_model, save_training_state)
from tinyllm.optim import AdamW, clip_grad_norm, cosine_lr, param_groups
from tinyllm.plot import plot_loss_curve
from tinyllm.tensor import no_grad
from tinyllm.tokenizer import ENDOFTEXT, Tokenizer

MODEL_FIELDS = ("block_size", "n_layer", "n_head", "n_embd", "dropout")


def _option(default, help):
    """A TrainConfig field whose help text becomes the --flag's help."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    data: str = _option(None, "a UTF-8 text file or folder (default: the Python standard library's source)")
    out: str = _option("out", "folder for the log, checkpoints, loss curve and token cache")
    preset: str = _option("default", f"model shape: {', '.join(PRESETS)}; the shape flags below override it")
    block_size: int = _option(None, "context length (default: the preset's)")
    n_layer: int = _option(None, "transformer blocks (default: the preset's)")
    n_head: int = _option(None, "attention heads (default: the preset's)")
    n_embd: int = _option(None, "channels, a multiple of n_head (default: the preset's)")
    dropout: float = _option(None, "dropout probability (default: the preset's, 0)")
    max_steps: int = _option(None, "optimizer steps (default: 1100; 800 on the NumPy backend: "
                                   "about five minutes on two cores either way)")
    batch_size: int = _option(16, "sequences per micro-batch")
    grad_accum: int = _option(1, "micro-batches per step (effective batch = batch size x this)")
    lr: float = _option(2e-3, "peak learning rate, reached after the warmup")
    min_lr: float = _option(2e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = _option(30, "steps of linear warmup")
    weight_decay: float = _option(0.1, "AdamW weight decay, on weight matrices only")
    grad_clip: float = _option(1.0, "limit on the global gradient norm; 0 = no clipping")
    eval_interval: int = _option(100, "steps between val-loss measurements and checkpoints")
    eval_batches: int = _option(8, "batches averaged for each val loss")
    val_fraction: float = _option(0.05, "share of the data held out for validation")
    seed: int = _option(1337, "seed of the batch sampler")
    tokenizer: str = _option("bpe", "bpe (trained on the data once, then cached), bytes, or a "
                                    ".bpe / .tiktoken file")
    vocab_size: int = _option(8192, "vocabulary size of the trained BPE tokenizer")
    backend: str = _option(None, "numpy, c or cuda (default: the fastest one built here)")
    resume: bool = _option(False, "continue the run saved in --out, exactly where it stopped")
    sample_tokens: int = _option(300, "length of the sample printed at the end; 0 = none")
    prompt: str = _option("\n", "text the final sample continues")

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "grad_accum", "eval_interval", "eval_batches", "vocab_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip", "sample_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")

    def model_config(self, vocab_size):
        shape = {**PRESETS[self.preset], "vocab_size": vocab_size}
        shape.update({f: getattr(self, f) for f in MODEL_FIELDS if getattr(self, f) is not None})
        return GPTConfig(**shape)


class TrainingError(RuntimeError):
    """Training cannot go on (the loss diverged); the last good checkpoint is intact."""


class Trainer:
    def __init__(self, config, printer=None):
        self.print = printer or (lambda *a: print(*a, file=sys.stderr, flush=True))
        if config.preset not in PRESETS:
            raise ValueError(f"unknown preset {config.preset!r}; choose one of {sorted(PRESETS)}")
        self.backend = backends.set_backend(config.backend) if config.backend else backends.get_backend()
        if config.max_steps is None:   # the default run's length follows the backend's speed
            config = dataclasses.replace(config, max_steps=800 if self.backend.NAME == "numpy" else 1100)
        self.config = c = config
        self.out = pathlib.Path(c.out)
        self.ckpt_path = self.out / "ckpt.safetensors"
        self.state_path = self.out / "train_state.safetensors"
        self.log_path = self.out / "log.jsonl"
        keep_freed_memory()

        if c.data is not None and is_prepared(c.data):   # shards from `python -m tinyllm prepare`
            self.tokenizer = prepared_tokenizer(c.data)
            self.train_tokens, self.val_tokens = open_prepared(c.data, self.tokenizer)
        else:
            corpus = load_corpus(c.data, c.val_fraction)
            self.tokenizer = self._tokenizer_for(corpus)
            train_path, val_path = prepare_token_files(corpus, self.tokenizer, self.out / "data")
            self.train_tokens, self.val_tokens = read_tokens(train_path), read_tokens(val_path)
        # val loss per byte makes runs with different tokenizers comparable
        self.val_bytes_per_token = len(self.tokenizer.decode_bytes(self.val_tokens)) / len(self.val_tokens)

        # on the backend's device: the GPU for cuda, where the whole step then stays
        self.model = GPT(c.model_config(self.tokenizer.vocab_size)).to(self.backend)
        groups = param_groups(self.model.named_parameters(), c.weight_decay)
        self.optimizer = AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
        # the optimizer keeps its state group by group; the names follow that order
        self.names = [n for g in groups for n in g["names"]]
        T = self.model.config.block_size
        self.loader = BatchLoader(self.train_tokens, c.batch_size, T, seed=c.seed, split="train")
        BatchLoader(self.val_tokens, 1, T, split="val")  # fail now, not at the first eval
        self.step = 0
        self.run_id = new_run_id()
        self.records = []
        if c.resume:
            self._resume()
        self._stop_requested = False

    def _tokenizer_for(self, corpus):
        """bytes, a saved .bpe/.tiktoken file, or a BPE vocabulary trained once on the corpus and cached."""
        c = self.config
        if c.tokenizer == "bytes":
            return ByteTokenizer()
        if c.tokenizer != "bpe":
            path = pathlib.Path(c.tokenizer)
            if not path.exists():
                raise ValueError(f"--tokenizer {c.tokenizer}: no such file; use bpe, bytes, or a "
                                 f".bpe / .tiktoken file (python -m tinyllm tokenizer train ...)")
            return Tokenizer.from_tiktoken(path) if path.suffix == ".tiktoken" else Tokenizer.load(path)
        cached = self.out / "data" / f"tokenizer-{corpus.name}-{corpus.fingerprint()}-{c.vocab_size}.bpe"
        if cached.exists():
            return Tokenizer.load(cached)
        self.print(f"training a {c.vocab_size}-token BPE vocabulary on the train split (cached in {cached})")
        tokenizer = Tokenizer.train(corpus.iter_train(), c.vocab_size, special_tokens=[ENDOFTEXT])
        cached.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(cached)
        return tokenizer

    # -- checkpoints -----------------------------------------------------------
    def save(self):
        """Training state first, then the model: see model_io.py for why."""
        self.run_id = new_run_id()
        state = {"step": self.step, "loader": self.loader.state_dict(),
                 "dropout_rng": self.model.rng.bit_generator.state,
                 "train_config": dataclasses.asdict(self.config)}
        save_training_state(self.state_path, self.names, self.optimizer, state, self.run_id)
        save_model(self.ckpt_path, self.model, self.tokenizer, self.step, self.run_id)

    def _resume(self):
        if not self.ckpt_path.exists():
            raise CheckpointError(f"--resume: no checkpoint at {self.ckpt_path}; "
                                  f"train without --resume first, or point --out at the run")
        meta = read_model_metadata(self.ckpt_path)
        if meta["tokenizer"].fingerprint() != self.tokenizer.fingerprint():
            raise CheckpointError(
                f"--resume: the checkpoint in {self.out} was trained with the tokenizer "
                f"{meta['tokenizer'].name!r}, but this run uses {self.tokenizer.name!r}; resume "
                f"with the same --data (and tokenizer) as the original run")
        if meta["config"] != self.model.config:
            diff = {k: (v, getattr(self.model.config, k)) for k, v in meta["config"].to_dict().items()
                    if getattr(self.model.config, k) != v}
            raise CheckpointError(
                f"--resume: the checkpoint in {self.out} was trained with a different model "
                f"(checkpoint vs asked: {diff}); use the same --preset and shape flags, "
                f"or another --out")
        model, _, _ = load_model(self.ckpt_path)
        self.model.load_state_dict(model.state_dict())
        state = load_training_state(self.state_path, self.names, self.optimizer, meta["run_id"])
        self.step = state["step"]
        self.loader.load_state_dict(state["loader"])
        self.model.rng.bit_generator.state = state["dropout_rng"]
        self.run_id = meta["run_id"]
        # log lines written after the checkpoint belong to steps that will run again
        if self.log_path.exists():
            self.records = [r for r in map(json.loads, self.log_path.read_text().splitlines())
                            if r["step"] <= self.step]
        self._write_log()
        self.print(f"resumed from {self.ckpt_path} at step {self.step}")

    def _write_log(self):
        with atomic_write(self.log_path, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in self.records))

    # -- the loop --------------------------------------------------------------
    def evaluate(self):
        """Mean loss over eval_batches fixed val batches (the same ones every time)."""
        c = self.config
        loader = BatchLoader(self.val_tokens, c.batch_size, self.model.config.block_size,
                             seed=0, split="val")
        self.model.eval()
        with no_grad():
            losses = [self.model(*loader.next_batch())[1].item() for _ in range(c.eval_batches)]
        self.model.train()
        return float(np.mean(losses))

    def train_step(self):
        """One optimizer step; returns (loss, grad_norm, lr)."""
        c = self.config
        lr = cosine_lr(self.step, c.lr, c.warmup_steps, c.max_steps, c.min_lr)
        self.optimizer.set_lr(lr)
        loss_sum = 0.0
        for _ in range(c.grad_accum):
            x, y = self.loader.next_batch()                     # (B, T) each
            _, loss = self.model(x, y)
            if not math.isfinite(loss.item()):
                raise TrainingError(self._diverged(f"the loss is {loss.item()}"))
            loss.backward(np.asarray(1.0 / c.grad_accum))       # mean over micro-batches
            loss_sum += loss.item()
        norm = clip_grad_norm(self.model.parameters(), c.grad_clip) if c.grad_clip > 0 else float("nan")
        if c.grad_clip > 0 and not math.isfinite(norm):
            raise TrainingError(self._diverged(f"the gradient norm is {norm}"))
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.step += 1
        return loss_sum / c.grad_accum, norm, lr

    def _diverged(self, what):
        kept = (f"the last good checkpoint (step {read_model_metadata(self.ckpt_path)['step']}) "
                f"is untouched in {self.out}" if self.ckpt_path.exists() else "no checkpoint was written")
        return (f"training diverged at step {self.step + 1}: {what}. Nothing was saved for this "
                f"step; {kept}. Try a lower --lr (now {self.config.lr}) or a smaller --grad-clip, "
                f"then --resume.")

    def train(self):
        """Run to max_steps (or to Ctrl-C); returns a summary dict."""
        c = self.config
        tokens_per_step = c.batch_size * c.grad_accum * self.model.config.block_size
        self.print(self.model.summary())
        self.print(f"backend {self.backend.NAME}; {len(self.train_tokens):,} train / "
                   f"{len(self.val_tokens):,} val tokens; {tokens_per_step:,} tokens per step")
        if not c.resume:
            self.records = []
            self._write_log()
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        started, steps_run, val_loss = time.perf_counter(), 0, None
        try:
            while self.step < c.max_steps and not self._stop_requested:
                t0 = time.perf_counter()
                loss, norm, lr = self.train_step()
                dt = time.perf_counter() - t0
                steps_run += 1
                record = {"step": self.step, "loss": loss, "lr": lr,
                          "tokens_per_sec": tokens_per_step / dt, "grad_norm": norm}
                if self.step % c.eval_interval == 0 or self.step == c.max_steps:
                    record["val_loss"] = val_loss = self.evaluate()
                    record["val_bpb"] = val_loss / math.log(2) / self.val_bytes_per_token
                self.records.append(record)
                with open(self.log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                eta = (time.perf_counter() - started) / steps_run * (c.max_steps - self.step)
                self._progress(record, eta)
                if "val_loss" in record:
                    self.save()
        finally:
            signal.signal(signal.SIGINT, previous)
        if self._stop_requested:
            self.save()
            self.print(f"\ninterrupted: saved step {self.step} to {self.ckpt_path}; "
                       f"continue with --resume")
        elapsed = time.perf_counter() - started
        return {"steps": self.step, "val_loss": val_loss, "seconds": elapsed,
                "tokens_per_sec": steps_run * tokens_per_step / max(elapsed, 1e-9),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "peak_device_mb": (self.backend.memory_stats()["peak_bytes_in_use"] / 2 ** 20
                                   if hasattr(self.backend, "memory_stats") else None),
                "interrupted": self._stop_requested}

    def _on_interrupt(self, signum, frame):
        if self._stop_requested:      # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_requested = True
        self.print("\nCtrl-C: finishing this step, then saving (press again to quit at once)")

    def _progress(self, r, eta):
        line = (f"step {r['step']:>5}/{self.config.max_steps} | loss {r['loss']:.4f} | "
                f"lr {r['lr']:.2e} | {r['tokens_per_sec']:,.0f} tok/s | ETA {_duration(eta)}")
        if "val_loss" in r:
            self.print(f"\r{line} | val {r['val_loss']:.4f} ({r['val_bpb']:.3f} bits/byte)")
        elif sys.stderr.isatty():
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
        elif r["step"] % max(1, self.config.eval_interval // 5) == 0:
            self.print(line)   # a log file gets a few lines, not one per step

    def sample(self, max_new_tokens, prompt, temperature=0.8, top_k=40, seed=0):
        ids = np.array([self.tokenizer.encode(prompt)])
        out = self.model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k, seed=seed)
        return self.tokenizer.decode(out[0].tolist())


def _duration(seconds):
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def build_parser():
    p = argparse.ArgumentParser(
        prog="train", description="Train a GPT on text. With no arguments: the default model "
        "on the Python standard library's source, about five minutes on two cores.",
        argument_default=argparse.SUPPRESS)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata["help"]
        if field.type is bool:
            p.add_argument(flag, action="store_true", help=help_text)
        else:
            shown = "" if field.default is None else f" (default: {field.default!r})"
            p.add_argument(flag, type=field.type, help=help_text + shown)
    return p


def config_from_args(argv=None):
    """A TrainConfig from flags; with --resume, flags not given come from the saved run."""
    given = vars(build_parser().parse_args(argv))
    config = TrainConfig(**given)
    state_path = pathlib.Path(config.out) / "train_state.safetensors"
    if config.resume and state_path.exists():
        from tinyllm.checkpoint import read_metadata
        saved = json.loads(read_metadata(state_path)["state"])["train_config"]
        config = TrainConfig(**{**saved, **given})
    return config


def main(argv=None):
    try:
        config = config_from_args(argv)
        trainer = Trainer(config)
        summary = trainer.train()
    except (TrainingError, CheckpointError, ValueError, backends.BackendUnavailable) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    log = trainer.records
    if log:
        picture = plot_loss_curve(log, trainer.out / "loss.svg")
        print(f"\nloss curve: {picture}", file=sys.stderr)
    print(f"{summary['steps']} steps, {summary['tokens_per_sec']:,.0f} tokens/s, "
          f"peak memory {summary['peak_rss_mb']:,.0f} MB"
          + (f" (GPU {summary['peak_device_mb']:,.0f} MB)" if summary["peak_device_mb"] else "")
          + ", final val loss "
          f"{summary['val_loss'] if summary['val_loss'] is not None else float('nan'):.4f}; "
          f"checkpoint {trainer.ckpt_path}", file=sys.stderr)
    if config.sample_tokens and not summary["interrupted"]:
        print(f"\n--- sample ({config.sample_tokens} tokens, temperature 0.8, top-k 40) ---", file=sys.stderr)
        print(trainer.sample(config.sample_tokens, config.prompt))
    return 0
