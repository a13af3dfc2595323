"""A pretraining run built from its settings: data, tokenizer, model, optimizer, then the Trainer.

    trainer = build_trainer(TrainConfig(data="shakespeare.txt", max_steps=500))
    summary = trainer.train()

`TrainConfig` is every setting of `python examples/train.py` (the loop's own
fields come from train.LoopConfig); `build_trainer` turns one into a ready
Trainer:
  data       a prepared folder (`python -m tinyllm prepare`) as it is, or text
             (a file, a folder, by default the Python standard library) split
             into train/val and tokenized once into OUT/data/
  tokenizer  tinyllm.tokenizer.load(--tokenizer): bytes, bpe (trained on the
             train split once and cached in OUT/data/), or a .bpe / .tiktoken file
  model      the preset, with the shape flags over it, on the chosen backend
  optimizer  AdamW with weight decay on the weight matrices only
  ranks      under mpirun (distributed.py): rank 0's weights on every rank, each
             rank's disjoint rows of every global batch (ranks x --batch-size), and
             with --zero 1 the AdamW moments sharded (zero.py)

Not here: the loop (train.py) or the flags (tinyllm/cli/train.py). Read
progress.py next, then plot.py.
"""
import dataclasses
import json
import pathlib
import sys

from tinyllm import backends, distributed
from tinyllm import tokenizer as tokenizers
from tinyllm.checkpoint import recover_checkpoint
from tinyllm.errors import CheckpointError
from tinyllm.folder_lock import lock_folder
from tinyllm.data import (BatchLoader, is_prepared, load_corpus, open_prepared, prepare_token_files,
                          prepared_tokenizer, read_tokens)
from tinyllm.data.loader import bytes_per_token
from tinyllm.model import GPT, PRESETS, GPTConfig
from tinyllm.ops import MATMUL_DTYPES
from tinyllm.optim import AdamW, param_groups
from tinyllm.safetensors import read_metadata
from tinyllm.train import LoopConfig, Trainer, option

MODEL_FIELDS = ("block_size", "n_layer", "n_head", "n_embd", "dropout")
DTYPE_HELP = ("matmul precision of the Linear layers and attention: fp32, or bf16 (bfloat16 "
              "operands, float32 sums, softmax and weights; fastest on CPUs with AVX512-BF16 or "
              "AMX, numpy and c backends)")


@dataclasses.dataclass
class TrainConfig(LoopConfig):
    data: str = option(None, "a UTF-8 text file or folder, or a folder from `python -m tinyllm "
                             "prepare` (default: the Python standard library's source)")
    preset: str = option("default", f"model shape: {', '.join(PRESETS)}; the shape flags below override it")
    block_size: int = option(None, "context length (default: the preset's)")
    n_layer: int = option(None, "transformer blocks (default: the preset's)")
    n_head: int = option(None, "attention heads (default: the preset's)")
    n_embd: int = option(None, "channels, a multiple of n_head (default: the preset's)")
    dropout: float = option(None, "dropout probability (default: the preset's, 0)")
    batch_size: int = option(16, "sequences per micro-batch")
    weight_decay: float = option(0.1, "AdamW weight decay, on weight matrices only")
    val_fraction: float = option(0.05, "share of the data held out for validation")
    seed: int = option(1337, "seed of the batch sampler")
    tokenizer: str = option("bpe", f"{tokenizers.SPECS}; bpe is trained on the data once, then cached")
    vocab_size: int = option(8192, "vocabulary size of the trained BPE tokenizer")
    backend: str = option(None, "numpy, c or cuda (default: the fastest one built here)")
    dtype: str = option("fp32", DTYPE_HELP)
    sample_tokens: int = option(300, "length of the sample printed at the end; 0 = none")
    prompt: str = option("\n", "text the final sample continues")
    zero: int = option(0, "under mpirun: 1 = ZeRO stage 1, the AdamW moments split across the "
                          "ranks (1/N of them each); 0 = every rank keeps them all")
    bucket_mb: float = option(25.0, "under mpirun: MB of gradients per allreduce bucket")
    mpi_timeout: float = option(300.0, "under mpirun: seconds a rank waits for the others before "
                                       "it stops with an error (a rank died or hangs)")

    def __post_init__(self):
        super().__post_init__()
        for name in ("batch_size", "vocab_size"):
            self._at_least(name, 1)
        for name in ("weight_decay", "sample_tokens", "seed"):
            self._at_least(name, 0)
        if self.sample_tokens and not self.prompt:
            raise ValueError("--prompt is empty: the closing sample continues it; give at least "
                             "one character (the default is a newline), or --sample-tokens 0")
        for name in ("bucket_mb", "mpi_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.zero not in (0, 1):
            raise ValueError(f"--zero must be 0 or 1 (ZeRO stage 1), got {self.zero}")
        check_dtype(self.dtype)

    def model_config(self, vocab_size):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        shape = {**PRESETS[self.preset], "vocab_size": vocab_size}
        shape.update({f: getattr(self, f) for f in MODEL_FIELDS if getattr(self, f) is not None})
        return GPTConfig(**shape)


def saved_config(out, config_class=None):
    """The config fields (of config_class, TrainConfig by default) a run in `out` was started
    with, or {} when there is none."""
    state_path = pathlib.Path(out) / "train_state.safetensors"
    if distributed.launched_rank() == 0:   # rank 0 alone owns the folder under mpirun
        lock_folder(out, "train")   # recovering renames files a running save may be writing
        recover_checkpoint(pathlib.Path(out) / "ckpt.safetensors", state_path)
    if not state_path.exists():
        return {}
    try:
        saved = json.loads(read_metadata(state_path)["state"])["train_config"]
        if not isinstance(saved, dict):
            raise TypeError(f"train_config is a {type(saved).__name__}, not an object")
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{state_path}: no readable train_config in its metadata ({str(e)[:200]}); "
                              f"the file is damaged: start a new run or restore it") from None
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(config_class or TrainConfig)})
    if unknown:
        raise CheckpointError(f"{state_path}: train_config has fields this command does not know "
                              f"({unknown}); it was written by another tinyllm or command: resume "
                              f"it with that one, or start a new run")
    return saved


def build_trainer(config, printer=None):
    """A Trainer for config, resumed from config.out when config.resume."""
    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; choose one of {sorted(PRESETS)}")
    if distributed.launched_rank() == 0:   # rank 0 alone writes the folder under mpirun
        lock_folder(config.out, "train")   # before anything is written there
    backend = backends.set_backend(config.backend) if config.backend else backends.get_backend()
    if config.max_steps is None:   # the default run's length follows the backend's speed
        config = dataclasses.replace(config, max_steps=800 if backend.NAME == "numpy" else 1100)
    dist = distributed.connect(config.mpi_timeout, config.bucket_mb)
    # rank 0 tokenizes and caches the data first; the other ranks then read its files
    tokenizer, train_tokens, val_tokens = dist.main_first(lambda: load_data(config))
    dist.check_same_run({**dataclasses.asdict(config), "tokenizer_fingerprint": tokenizer.fingerprint(),
                         "backend_in_use": backend.NAME})
    # on the backend's device: the GPU for cuda, where the whole step then stays
    model = GPT(config.model_config(tokenizer.vocab_size)).to(backend)
    model.set_matmul_dtype(config.dtype)
    precision = matmul_precision(backend, config.dtype)
    groups = param_groups(model.named_parameters(), config.weight_decay)
    optimizer = AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    optimizer = dist.attach(model, optimizer, zero=config.zero)   # broadcast, buckets, ZeRO-1
    T = model.config.block_size
    global_batch = config.batch_size * dist.world_size
    loader = dist.shard(BatchLoader(train_tokens, global_batch, T, seed=config.seed, split="train"))
    # fails now if the val split is short; every rank evaluates its rows of the same batches
    val_loader = dist.shard(BatchLoader(val_tokens, global_batch, T, seed=0, split="val"))
    val_batches = [val_loader.next_batch() for _ in range(config.eval_batches)]
    tokens_per_step = global_batch * config.grad_accum * T
    ranks = f"{dist.world_size} ranks, " if dist.world_size > 1 else ""
    trainer = Trainer(
        model, optimizer, loader, lambda: val_batches, tokenizer, config,
        # the optimizer keeps its state group by group; the names follow that order
        names=[n for g in groups for n in g["names"]],
        bytes_per_token=bytes_per_token(tokenizer, val_tokens),
        description=f"backend {backend.NAME}, matmuls {precision}; {ranks}{len(train_tokens):,} "
                    f"train / {len(val_tokens):,} val tokens; {tokens_per_step:,} tokens per step",
        printer=printer if dist.is_main else (lambda *a: None), dist=dist)
    if config.resume:
        trainer.resume()
    dist.own_dropout_stream(model)   # after the resume, which restores rank 0's generator
    return trainer


def check_dtype(dtype):
    if dtype not in MATMUL_DTYPES:
        raise ValueError(f"--dtype {dtype!r}: choose one of {', '.join(MATMUL_DTYPES)}")


def matmul_precision(backend, dtype):
    """How the Linear layers and attention multiply on `backend` in `dtype`, in words for the
    run's header; says on stderr, once, when bf16 cannot be faster than fp32 here."""
    if dtype == "fp32":
        return "fp32"
    if not hasattr(backend, "matmul_bf16"):
        raise ValueError(f"--dtype bf16: the {backend.NAME} backend has no bf16 matmul; use "
                         f"--backend c or numpy, or --dtype fp32")
    path = getattr(backend, "BF16_PATH", "numpy")
    if path in ("fp32", "numpy"):
        where, how = (("no AVX512-BF16 or AMX on this CPU, or TINYLLM_BF16_PATH=fp32",
                       "the Linear layers' operands rounded to bf16 as they are packed, attention "
                       "unrounded (csrc/attention.c), all multiplied in fp32")
                      if path == "fp32" else ("the numpy backend rounds in NumPy",
                                              "bf16-rounded operands multiplied in fp32"))
        print(f"tinyllm: --dtype bf16 is emulated ({where}): {how}, at no gain in speed",
              file=sys.stderr)
    return f"bf16 ({path})"


def load_data(config):
    """(tokenizer, train tokens, val tokens) for config.data, tokenized once and cached."""
    if config.data is not None and is_prepared(config.data):   # shards from `prepare`
        tokenizer = prepared_tokenizer(config.data)
        return (tokenizer, *open_prepared(config.data, tokenizer))
    corpus = load_corpus(config.data, config.val_fraction)
    tokenizer = tokenizers.load(config.tokenizer, corpus.iter_train,
                                cache_dir=pathlib.Path(config.out) / "data",
                                cache_key=f"{corpus.name}-{corpus.fingerprint()}",
                                vocab_size=config.vocab_size)
    train_path, val_path = prepare_token_files(corpus, tokenizer, pathlib.Path(config.out) / "data")
    return tokenizer, read_tokens(train_path), read_tokens(val_path)
