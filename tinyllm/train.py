"""The Trainer: given a model, an optimizer and batches, run the loop; save and resume it exactly.

One step: draw (x, y) batches (several micro-batches with gradient
accumulation), forward, backward, clip the global gradient norm, set the
cosine learning rate, AdamW. Every eval_interval steps the val loss is
measured on the same fixed batches and a checkpoint is written
(checkpoint.py). Every step appends one JSON line to OUT/log.jsonl.

Safety: Ctrl-C or SIGTERM finishes the current step, saves and exits (a
second one quits at once); a NaN or inf loss, val loss or weight stops the
run before anything is saved, so the last good checkpoint stays; the model
and training state move as one pair, so a SIGKILL at any instant leaves a
resumable run; `resume()` restores the model, AdamW, the step and every
random generator, and so continues exactly as an uninterrupted run would.

The Trainer does not know where its batches come from: pretraining, SFT or
classification hand it a loader (next_batch, state_dict, load_state_dict)
and a function giving the val batches. Building those from flags is run.py's
job; the command line is tinyllm/cli/train.py. Read run.py next.
"""
import dataclasses
import json
import math
import pathlib
import signal
import sys
import time

import numpy as np

from tinyllm.atomic import atomic_write
from tinyllm.backends import get_backend
from tinyllm.checkpoint import (load_model, load_training_state, new_run_id, read_model_metadata,
                                recover_checkpoint, save_checkpoint)
from tinyllm.distributed import SingleProcess
from tinyllm.errors import CheckpointError, TrainingError
from tinyllm.folder_lock import lock_folder
from tinyllm.malloc import keep_freed_memory
from tinyllm.memory import peak_resident_bytes
from tinyllm.optim import cosine_lr
from tinyllm.plot import read_log
from tinyllm.progress import Progress
from tinyllm.tensor import no_grad


def option(default, help):
    """A config field whose help text becomes its --flag's help (cli/train.py)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class LoopConfig:
    """What the loop itself needs; run.TrainConfig (and fine-tuning) add the data and model."""
    out: str = option("out", "folder for the log, checkpoints, loss curve and token cache")
    max_steps: int = option(None, "optimizer steps (default: 1100; 800 on the NumPy backend: "
                                  "about five minutes on two cores either way)")
    grad_accum: int = option(1, "micro-batches per step (effective batch = batch size x this)")
    lr: float = option(2e-3, "peak learning rate, reached after the warmup")
    min_lr: float = option(2e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = option(30, "steps of linear warmup")
    grad_clip: float = option(1.0, "limit on the global gradient norm; 0 = no clipping")
    eval_interval: int = option(100, "steps between val-loss measurements and checkpoints")
    eval_batches: int = option(8, "batches averaged for each val loss")
    resume: bool = option(False, "continue the run saved in --out, exactly where it stopped")

    def __post_init__(self):
        self._check_numbers()
        for name in ("max_steps", "grad_accum", "eval_interval", "eval_batches"):
            self._at_least(name, 1)
        for name in ("lr", "min_lr", "warmup_steps", "grad_clip"):
            self._at_least(name, 0)

    def _check_numbers(self):
        """Every int and float field, the subclasses' too, holds a finite number of its type
        (a saved run's config is read back from a file)."""
        for field in dataclasses.fields(self):
            flag, value = f"--{field.name.replace('_', '-')}", getattr(self, field.name)
            if field.type not in (int, float) or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (field.type is int and not isinstance(value, int)):
                raise ValueError(f"{flag} must be {'an integer' if field.type is int else 'a number'}, "
                                 f"got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{flag} must be a finite number, got {value}")

    def _at_least(self, name, low):
        value = getattr(self, name)
        if value is not None and value < low:
            rule = "be at least 1" if low else "not be negative"
            raise ValueError(f"--{name.replace('_', '-')} must {rule}, got {value}")


class Trainer:
    def __init__(self, model, optimizer, loader, val_batches, tokenizer, config, names,
                 bytes_per_token=None, description=None, printer=None, dist=None, metrics=None):
        """model: on its backend already; optimizer: over the parameters named by names, in its
        order; loader: next_batch() -> (x, y) and a state_dict; val_batches() -> [(x, y), ...],
        the same every call; bytes_per_token: of the val data, for bits per byte in the log;
        dist: this process's place in an MPI run (distributed.py; default: a single process);
        metrics: () -> {name: number}, measured and logged with every val loss (val accuracy)."""
        if config.max_steps is None:
            raise ValueError("LoopConfig.max_steps is not set: give the number of steps")
        self.print = printer or (lambda *a: print(*a, file=sys.stderr, flush=True))
        self.model, self.optimizer, self.loader = model, optimizer, loader
        self.val_batches, self.tokenizer, self.config, self.names = val_batches, tokenizer, config, names
        self.bytes_per_token, self.description = bytes_per_token, description
        self.metrics = metrics or dict
        self.out = pathlib.Path(config.out)
        self.ckpt_path = self.out / "ckpt.safetensors"
        self.state_path = self.out / "train_state.safetensors"
        self.log_path = self.out / "log.jsonl"
        self.step, self.run_id, self.records, self.step_tokens = 0, new_run_id(), [], 0
        self._stop_requested = False
        self.dist = dist or SingleProcess()
        if self.dist.is_main:   # one run per folder (a no-op when run.py took it)
            lock_folder(self.out, "train")
        keep_freed_memory()

    # -- checkpoints -----------------------------------------------------------
    def save(self):
        """The model and the training state, as one pair (checkpoint.save_checkpoint)."""
        if not self.dist.arrive_to_save():   # on N ranks, rank 0 alone writes
            return
        self._check_finite_weights()
        self.run_id = new_run_id()
        state = {"step": self.step, "loader": self.loader.state_dict(),
                 "dropout_rng": self.model.rng.bit_generator.state,
                 "train_config": dataclasses.asdict(self.config)}
        save_checkpoint(self.ckpt_path, self.state_path, self.model, self.tokenizer, self.names,
                        self.optimizer, state, self.run_id)

    def resume(self):
        """Continue the run saved in config.out; it must have this tokenizer and model shape."""
        # rank 0 finishes an interrupted save before the other ranks read the pair
        self.dist.main_first(lambda: recover_checkpoint(self.ckpt_path, self.state_path))
        if not self.ckpt_path.exists():
            raise CheckpointError(f"--resume: no checkpoint at {self.ckpt_path}; "
                                  f"train without --resume first, or point --out at the run")
        meta = read_model_metadata(self.ckpt_path)
        self._check_same_run(meta)
        model, _, _ = load_model(self.ckpt_path)
        self.model.load_state_dict(model.state_dict())
        state = load_training_state(self.state_path, self.names, self.optimizer, meta["run_id"])
        self.step = state["step"]
        self.loader.load_state_dict(state["loader"])
        self.model.rng.bit_generator.state = state["dropout_rng"]
        self.run_id = meta["run_id"]
        # log lines written after the checkpoint belong to steps that will run again
        if self.log_path.exists():
            self.records = [r for r in self._read_log() if r["step"] <= self.step]
        self._write_log()
        self.print(f"resumed from {self.ckpt_path} at step {self.step}")

    def _check_finite_weights(self):
        """Nothing non-finite is ever saved: the checkpoint on disk stays the last good one."""
        kernels, params = get_backend(), list(self.model.named_parameters())
        if not math.isfinite(kernels.sum_of_squares([p.data for _, p in params])):
            bad = [n for n, p in params if not math.isfinite(kernels.sum_of_squares([p.data]))]
            raise TrainingError(self._diverged(f"the weights {', '.join(bad[:3])} are not finite",
                                               self.step))

    def _check_same_run(self, meta):
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

    def _read_log(self):
        """The log's records; a torn last line (a kill or a full disk mid-write) is dropped."""
        def torn(lineno):
            self.print(f"warning: {self.log_path} line {lineno} is cut short (the run was "
                       f"stopped while writing it); dropped")
        try:
            return read_log(self.log_path, on_torn_last=torn, require_step=True)
        except ValueError as e:
            raise CheckpointError(f"{e}; repair or delete that line, then --resume") from None

    def _write_log(self):
        if not self.dist.is_main:
            return
        with atomic_write(self.log_path, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in self.records))

    # -- the loop --------------------------------------------------------------
    def evaluate(self):
        """Mean loss over the fixed val batches."""
        self.model.eval()
        with no_grad():
            losses = [self.model(x, y)[1].item() for x, y in self.val_batches()]
        self.model.train()
        return self.dist.mean(losses)

    def train_step(self):
        """One optimizer step; returns (loss, grad_norm, lr) and counts its tokens in step_tokens."""
        c = self.config
        lr = cosine_lr(self.step, c.lr, c.warmup_steps, c.max_steps, c.min_lr)
        self.optimizer.set_lr(lr)
        loss_sum, self.step_tokens = 0.0, 0
        for micro in range(c.grad_accum):
            x, y = self.loader.next_batch()                     # (B, T) each
            _, loss = self.model(x, y, return_logits=False)       # a frozen head never makes them
            if not math.isfinite(loss.item()):
                raise TrainingError(self._diverged(f"the loss is {loss.item()}"))
            with self.dist.averaging_gradients(last=micro == c.grad_accum - 1):
                loss.backward(np.asarray(1.0 / c.grad_accum))   # mean over micro-batches
            loss_sum += loss.item()
            self.step_tokens += x.size * self.dist.world_size   # every rank's rows
        # the global norm: on N ranks the gradients are averaged (or, with ZeRO-1, sharded)
        norm = (self.dist.clip_grad_norm(self.model.parameters(), c.grad_clip) if c.grad_clip > 0
                else float("nan"))
        if c.grad_clip > 0 and not math.isfinite(norm):
            raise TrainingError(self._diverged(f"the gradient norm is {norm}"))
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.step += 1
        return self.dist.mean([loss_sum / c.grad_accum]), norm, lr   # over every rank's rows

    def _diverged(self, what, step=None):
        """The message for a diverged run; step: where (default: the step being run)."""
        step = self.step + 1 if step is None else step
        kept = (f"the last good checkpoint (step {read_model_metadata(self.ckpt_path)['step']}) "
                f"is untouched in {self.out}" if self.ckpt_path.exists() else "no checkpoint was written")
        return (f"training diverged at step {step}: {what}. Nothing was saved for this "
                f"step; {kept}. Try a lower --lr (now {self.config.lr}) or a smaller --grad-clip, "
                f"then --resume.")

    def train(self):
        """Run to max_steps (or to Ctrl-C); returns a summary dict."""
        c = self.config
        self.print(self.model.summary())
        if self.description:
            self.print(self.description)
        if not c.resume:
            self.records = []
            self._write_log()
        bar = Progress("train", self.dist.is_main)
        # SIGTERM is how schedulers (Slurm, Kubernetes, systemd) ask a job to stop: as Ctrl-C
        previous = {s: signal.signal(s, self._on_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
        started, tokens_run, val_loss = time.perf_counter(), 0, None
        try:
            while self.step < c.max_steps and not self._agree_to_stop():
                t0 = time.perf_counter()
                loss, norm, lr = self.train_step()
                tokens_run += self.step_tokens
                record = {"step": self.step, "loss": loss, "lr": lr, "grad_norm": norm,
                          "tokens_per_sec": self.step_tokens / (time.perf_counter() - t0)}
                if self.step % c.eval_interval == 0 or self.step == c.max_steps:
                    record["val_loss"] = val_loss = self.evaluate()
                    if not math.isfinite(val_loss):
                        raise TrainingError(self._diverged(f"the val loss is {val_loss}", self.step))
                    if self.bytes_per_token:   # per byte, runs with other tokenizers compare
                        record["val_bpb"] = val_loss / math.log(2) / self.bytes_per_token
                    record.update(self.metrics())
                self._log(record, bar)
                if "val_loss" in record:
                    self.save()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self._stop_requested:
            self.save()
            self.print(f"\ninterrupted: saved step {self.step} to {self.ckpt_path}; "
                       f"continue with --resume")
        return self._summary(time.perf_counter() - started, tokens_run, val_loss)

    def _log(self, record, bar):
        if not self.dist.is_main:
            return
        self.records.append(record)
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        line = (f"step {record['step']:>5}/{self.config.max_steps} | loss {record['loss']:.4f} | "
                f"lr {record['lr']:.2e} | {record['tokens_per_sec']:,.0f} tok/s")
        if "val_loss" in record:
            bpb = f" ({record['val_bpb']:.3f} bits/byte)" if "val_bpb" in record else ""
            extra = "".join(f" | {k} {record[k]:.4f}" for k in sorted(record) if k.startswith("val_")
                            and k not in ("val_loss", "val_bpb"))
            bar.note(f"{line} | val {record['val_loss']:.4f}{bpb}{extra}")
        else:
            bar.update(line, self.step / self.config.max_steps)

    def _summary(self, elapsed, tokens_run, val_loss):
        backend = get_backend()
        return {"steps": self.step, "val_loss": val_loss, "seconds": elapsed,
                "tokens_per_sec": tokens_run / max(elapsed, 1e-9),
                "peak_rss_mb": peak_resident_bytes() / 2 ** 20,
                "peak_device_mb": (backend.memory_stats()["peak_bytes_in_use"] / 2 ** 20
                                   if hasattr(backend, "memory_stats") else None),
                "interrupted": self._stop_requested}

    def _agree_to_stop(self):
        """True once Ctrl-C was pressed here or, on N ranks, on any of them (all stop together)."""
        self._stop_requested = self.dist.any(self._stop_requested)
        return self._stop_requested

    def _on_interrupt(self, signum, frame):
        if self._stop_requested:      # the second Ctrl-C (or SIGTERM): stop now
            raise KeyboardInterrupt
        self._stop_requested = True
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.print(f"\n{what}: finishing this step, then saving (press Ctrl-C again to quit at once)")
