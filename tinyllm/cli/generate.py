"""`python -m tinyllm generate` (also `sample`, and `python examples/sample.py`): continue a prompt.

    python -m tinyllm generate --ckpt out/ckpt.safetensors --prompt "ROMEO:" --stop "\\n\\n"
    echo "ROMEO:" | python -m tinyllm generate --temperature 0

The prompt comes from --prompt, --prompt-file (- for stdin), or stdin when it
is a pipe or a file; with none, the text starts from the end-of-text token.
The text is streamed to stdout as it is decoded (several --num-samples are
decoded as one batch and printed when done); prefill and
decode tokens/s go to stderr at the end. Bad flags, a bad checkpoint or a
prompt the tokenizer refuses stop with a message and exit code 1 before
anything is written. --adapter puts a `finetune --lora` adapter on its base;
--instruction puts the prompt in the fine-tuning template and prints the
answer alone. This file only parses flags and prints; decoding is
tinyllm/generate.py's, sampling tinyllm/sampling.py's.
"""
import argparse
import dataclasses
import os
import stat
import sys

import numpy as np

from tinyllm import backends
from tinyllm.errors import CheckpointError, DataError, TokenizerError
from tinyllm.finetune import sft
from tinyllm.finetune.run import load_for_inference
from tinyllm.generate import Timing, stream_text
from tinyllm.ops import MATMUL_DTYPES
from tinyllm.run import matmul_precision
from tinyllm.sampling import Sampling
from tinyllm.terminal import MODES, shown


def parser(prog="generate"):
    p = argparse.ArgumentParser(prog=prog, description="Generate text from a trained checkpoint, "
                                "streamed as it is decoded.")
    p.add_argument("--ckpt", default="out/ckpt.safetensors", help="model checkpoint (default: %(default)s)")
    p.add_argument("--prompt", default=None, help="text to continue (default: --prompt-file, stdin, "
                   "or the end-of-text token / a newline when there is none)")
    p.add_argument("--prompt-file", default=None, help="read the prompt from this file (- = stdin)")
    p.add_argument("--max-new-tokens", type=int, default=300, help="tokens to generate (default: %(default)s)")
    p.add_argument("--num-samples", type=int, default=1,
                   help="independent samples, decoded as one batch (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="0 = always the likeliest token; higher = more varied (default: %(default)s)")
    p.add_argument("--top-k", type=int, default=40, help="sample among the k likeliest; 0 = all "
                   "(default: %(default)s)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold in (0, 1] (default: off)")
    p.add_argument("--min-p", type=float, default=None,
                   help="drop tokens below min-p times the likeliest one's probability (default: off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 makes tokens already in the context less likely (default: 1, off)")
    p.add_argument("--stop", action="append", default=[], metavar="STRING",
                   help="stop when this text is generated (not printed); repeatable")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--backend", default=None, help="numpy, c or cuda (default: the fastest built)")
    p.add_argument("--escape", choices=MODES, default="auto",
                   help="show control characters of the text as \\xNN: auto = when stdout is a "
                        "terminal (a file or pipe gets the exact text), always, or never "
                        "(default: %(default)s)")
    p.add_argument("--dtype", default="fp32", choices=MATMUL_DTYPES,
                   help="matmul precision of the Linear layers, as train's --dtype (default: %(default)s)")
    p.add_argument("--adapter", default=None, help="a LoRA adapter folder (`finetune --lora`) to put "
                   "on top of --ckpt, its base")
    p.add_argument("--instruction", action="store_true", help="the prompt is a question: put it in "
                   "the fine-tuning template (tinyllm/finetune/sft.py) and stop at <|end|>")
    return p


def settings_from(args):
    """Sampling settings from the flags; ValueError names a bad one."""
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    return Sampling(args.temperature, args.top_k or None, args.top_p, args.min_p,
                    args.repetition_penalty)


def with_exclude(settings, tokenizer):
    """The settings, never sampling an id the tokenizer has no bytes for."""
    return dataclasses.replace(settings, exclude=tuple(tokenizer.unused_ids()))


def read_prompt(args):
    """The prompt's text; None when none was given (stdin, not a terminal, may give one)."""
    if args.prompt is not None or args.prompt_file not in (None, "-"):
        text, flag = (args.prompt, "--prompt") if args.prompt is not None else (None, "--prompt-file")
        if text is None:
            try:
                with open(args.prompt_file, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"--prompt-file {args.prompt_file}: {e}") from e
        if not text:
            raise ValueError(f"{flag} is empty: the text continues it; give at least one character, "
                             f"or leave the flag out to start from the end-of-text token (or a newline)")
        return text
    if args.prompt_file == "-" or _stdin_is_piped():
        return sys.stdin.read() or None
    return None


def _stdin_is_piped():
    """True when stdin is a pipe or a file (`echo hi | ...`, `< prompt.txt`), not a terminal,
    /dev/null or a test runner's stand-in, none of which is read without --prompt-file -."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (AttributeError, OSError, ValueError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode)


def prompt_ids(prompt, tokenizer, block_size):
    """The prompt's ids, cropped to the context; no prompt starts from end-of-text or a newline."""
    ids = tokenizer.encode(prompt) if prompt else []
    if not ids:
        eot = getattr(tokenizer, "eot_token", None)
        ids = [eot] if eot is not None else tokenizer.encode("\n")
        print(f"note: no prompt; starting from {'<|endoftext|>' if eot is not None else 'a newline'}",
              file=sys.stderr)
    if len(ids) > block_size:
        print(f"warning: the prompt has {len(ids)} tokens, more than the context of {block_size}; "
              f"keeping the last {block_size}", file=sys.stderr)
        ids = ids[-block_size:]
    return ids


def main(argv=None, prog="generate"):
    args = parser(prog).parse_args(argv)
    try:
        settings = settings_from(args)
        if args.backend:
            backends.set_backend(args.backend)
        prompt = read_prompt(args)
        model, tokenizer, meta = load_for_inference(args.ckpt, args.adapter)
        model.eval()
        model.set_matmul_dtype(args.dtype)
        matmul_precision(backends.get_backend(), args.dtype)   # refuses where there is no bf16
        settings = with_exclude(settings, tokenizer)
        if args.instruction:   # the answer alone is shown, up to its end token
            ids, stops = sft.prompt_ids(tokenizer, prompt or ""), [*args.stop, sft.END]
        else:
            ids, stops = prompt_ids(prompt, tokenizer, model.config.block_size), args.stop
    except (CheckpointError, DataError, TokenizerError, ValueError, backends.BackendUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.ckpt}: step {meta['step']}, {model.summary()}", file=sys.stderr)
    idx = np.array([ids] * args.num_samples)                               # (num_samples, T)
    timing, rows = Timing(), [[] for _ in range(args.num_samples)]
    head = "" if args.instruction else tokenizer.decode(ids)
    if args.num_samples == 1:
        print(shown(head, mode=args.escape), end="", flush=True)
    for _, pieces in stream_text(model, tokenizer, idx, args.max_new_tokens, settings,
                                 np.random.default_rng(args.seed), stops, timing=timing):
        if args.num_samples == 1:
            print(shown(pieces[0], mode=args.escape), end="", flush=True)
        for row, piece in zip(rows, pieces):
            row.append(piece)
    if args.num_samples == 1:
        print()
    for i, row in enumerate(rows if args.num_samples > 1 else []):
        print(f"--- sample {i + 1} ---\n" + shown(head + "".join(row), mode=args.escape))
    print(timing.report(), file=sys.stderr)
    return 0
