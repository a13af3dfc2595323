"""The scale planner: from a target size and the hardware at hand, a whole training plan.

    plan = make_plan(params=1e9, hardware="8xH100")
    plan["model"]["n_layer"], plan["tokens"]["budget"], plan["memory"]["chosen"], plan["commands"]["train"]

A plan holds: the model shape (shapes.py, from the GPT-3 paper's table) and
its exact parameter count (model.num_parameters, from the config alone);
the token budget (Chinchilla-optimal, or --tokens) and what --days allows;
the training FLOPs and time at an MFU; the memory per device for each ZeRO
stage and the smallest layout that fits (budget.py); the hyperparameters
(GPT-3's, interpolated by size) with the micro-batch and accumulation that
fit; and the commands (commands.py) with a rough cost. Every value is plain
data, so `--json` writes the dict as it is.

Not here: printing it (report.py) or the flags (tinyllm/cli/plan.py). Read
hardware.py next; then shapes.py, budget.py, layout.py, commands.py, report.py.
"""
import math
import re

from tinyllm.errors import PlanError
from tinyllm.model import PRESETS, GPTConfig, flops_per_token, num_parameters, parameter_counts
from tinyllm.plan import budget
from tinyllm.plan.commands import commands
from tinyllm.plan.hardware import parse_hardware
from tinyllm.plan.layout import choose_layout, usable_bytes
from tinyllm.plan.shapes import GPT3_RECIPE, gpt3_hyperparameters, shape_for

SUFFIXES = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text, flag):
    """'1B' -> 1e9, '350M', '7.5e9', '20b' -> 2e10; a positive count or a PlanError naming the flag."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbgt]?)\s*", str(text), flags=re.IGNORECASE)
    if not m:
        raise PlanError(f"{flag} {text!r} is not a count: write it like 125M, 1.3B, 10B or 7e9")
    value = float(m.group(1)) * SUFFIXES[m.group(2).lower()]
    if value < 1:
        raise PlanError(f"{flag} must be a positive count, got {text!r}: e.g. {flag} 1B")
    return value


def make_plan(params=None, hardware="8xH100", preset=None, tokens=None, days=None, seq_len=None,
              vocab_size=50257, dtype=None, zero=None, mfu=None, price=2.0, out=None, measure=None):
    """The plan for a model of `params` parameters (or the shape of `preset`) on `hardware`."""
    hw = parse_hardware(hardware, measure)
    dtype = dtype or ("bf16" if hw.bf16 else "fp32")
    mfu = hw.mfu if mfu is None else mfu
    _check_options(hw, dtype, zero, mfu, price, days)
    config = _model(params, preset, seq_len, vocab_size)
    N, T = num_parameters(config), config.block_size
    chinchilla = budget.chinchilla_tokens(N)
    if tokens is not None and tokens < 1:
        raise PlanError(f"--tokens must be a positive count, got {tokens}: e.g. --tokens 20B")
    D = tokens or chinchilla
    flops = budget.training_flops(config, D)
    seconds = budget.training_seconds(flops, hw, dtype, mfu)
    allowed = budget.tokens_in(days * 86400, config, hw, dtype, mfu) if days else None
    if days and allowed < D:
        raise _too_short(days, D, seconds, allowed, hw, mfu)
    hp = _hyperparameters(params or N, D, T)   # at the size asked for: the table's own at its sizes
    layout, stages = choose_layout(config, N, hw, dtype, zero, hp["batch_sequences"])
    _schedule(hp, layout, D, T)
    fits_one = (budget.memory_per_device(config, N, 1, 0, layout["micro_batch"], dtype, False)
                + hw.runtime <= usable_bytes(hw))
    device_hours = seconds / 3600 * hw.count
    return {
        "model": {**config.to_dict(), "shape_from": f"the {preset} preset" if preset else "the GPT-3 table",
                  "parameters": N, "parameters_by_part": parameter_counts(config),
                  "flops_per_token": flops_per_token(config)},
        "hardware": {"name": hw.name, "count": hw.count, "peak_flops": hw.peak(dtype), "dtype": dtype,
                     "memory_bytes": hw.memory, "source": hw.source, "backend": hw.backend},
        "tokens": {"budget": D, "chinchilla": chinchilla, "from": "chinchilla" if tokens is None else "--tokens",
                   "tokens_per_parameter": D / N, "days_allow": allowed},
        "compute": {"flops": flops, "mfu": mfu, "seconds": seconds, "days": seconds / 86400,
                    "step_seconds": flops_per_token(config) * hp["batch_tokens"] / flops * seconds,
                    "device_hours": device_hours, "price_per_device_hour": price,
                    "cost": device_hours * price},
        "memory": {"chosen": layout, "stages": stages},
        "hyperparameters": hp,
        "commands": commands(config, layout, hp, hw, dtype, out or f"out/plan-{_size_name(N)}", fits_one),
    }


def _too_short(days, D, seconds, allowed, hw, mfu):
    needed = seconds / 86400
    return PlanError(f"--days {days:g} is too short for one pass over the {D / 1e9:,.1f}B tokens: at "
                     f"MFU {mfu:g} on {hw.count} x {hw.name} it takes {needed:,.1f} days; give --days "
                     f"{math.ceil(needed * 10) / 10:g}, --hardware {math.ceil(hw.count * needed / days)}x"
                     f"{hw.name}, or --tokens {allowed / 1e9:.3g}B")


def _schedule(hp, layout, D, T):
    """The global batch the layout makes, and the steps: enough for D tokens, GPT-3's warmup."""
    hp["batch_sequences"] = layout["devices"] * layout["micro_batch"] * layout["grad_accum"]
    hp["batch_tokens"] = hp["batch_sequences"] * T
    hp["max_steps"] = math.ceil(D / hp["batch_tokens"])
    # GPT-3's 375M warmup tokens, but at most a tenth of a short run
    hp["warmup_steps"] = math.ceil(min(GPT3_RECIPE["warmup_tokens"] / hp["batch_tokens"], hp["max_steps"] / 10))


def _check_options(hw, dtype, zero, mfu, price, days):
    if dtype not in budget.BYTES:
        raise PlanError(f"--dtype {dtype!r}: choose one of {', '.join(budget.BYTES)}")
    if hw.peak(dtype) is None:
        raise PlanError(f"{hw.name} has no measured {dtype} rate (tinyllm trains in float32); "
                        f"use --dtype fp32")
    if zero is not None and zero not in budget.ZERO_STAGES:
        raise PlanError(f"--zero {zero}: the ZeRO stages are 0, 1, 2 and 3")
    if not 0 < mfu <= 1:
        raise PlanError(f"--mfu {mfu} must be a fraction in (0, 1], e.g. 0.4")
    if price < 0:
        raise PlanError(f"--price {price} must not be negative (it is per device-hour)")
    if days is not None and days <= 0:
        raise PlanError(f"--days {days} must be positive, e.g. --days 7")


def _model(params, preset, seq_len, vocab_size):
    if (params is None) == (preset is None):
        raise PlanError("give the model as --params (e.g. --params 1B) or --preset NAME, one of the two")
    if preset is not None:
        if preset not in PRESETS:
            raise PlanError(f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}")
        return GPTConfig(**{**PRESETS[preset], "block_size": seq_len or PRESETS[preset]["block_size"]})
    if seq_len is not None and seq_len < 1 or vocab_size < 1:
        raise PlanError(f"--seq-len and --vocab-size must be positive, got {seq_len} and {vocab_size}")
    return shape_for(params, vocab_size, seq_len or 2048)


def _hyperparameters(N, D, T):
    gpt3 = gpt3_hyperparameters(N)
    return {"lr": gpt3["lr"], "min_lr": gpt3["lr"] * GPT3_RECIPE["min_lr_ratio"],
            "batch_tokens_gpt3": gpt3["batch_tokens"],
            "batch_sequences": max(1, round(min(gpt3["batch_tokens"], D) / T)),
            "weight_decay": GPT3_RECIPE["weight_decay"], "betas": list(GPT3_RECIPE["betas"]),
            "eps": GPT3_RECIPE["eps"], "grad_clip": GPT3_RECIPE["grad_clip"], "schedule": "cosine"}


def _size_name(n):
    for suffix, unit in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= unit:
            return f"{n / unit:.3g}{suffix}".lower()
    return str(n)
