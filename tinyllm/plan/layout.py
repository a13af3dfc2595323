"""The data-parallel layout that fits: ZeRO stage, recomputation, micro-batch and accumulation.

    choose_layout(config, params, hardware, "bf16", zero=None, batch_sequences=488)
      -> ({"zero": 1, "devices": 8, "micro_batch": 4, "grad_accum": 15, "recompute": False, ...}, table)

The rule: the lowest ZeRO stage (the least communication) on which one
sequence per device fits without recomputation; failing that, with full
recomputation; then the largest power-of-two micro-batch that still fits,
and the accumulation that makes up the global batch. The table gives every
stage's memory per device and the fewest devices on which it would fit.

Not here: the byte counts themselves (budget.py). Read commands.py next.
"""
from tinyllm.errors import PlanError
from tinyllm.plan.budget import (USABLE_MEMORY, ZERO_STAGES, activation_bytes, korthikanti_layer_bytes,
                                 memory_per_device, min_devices, model_state_bytes)


def usable_bytes(hardware):
    return hardware.memory * USABLE_MEMORY - hardware.runtime


def stage_table(config, params, hardware, dtype):
    """Every ZeRO stage on hardware.count devices, at one sequence per device."""
    n, usable = hardware.count, usable_bytes(hardware)
    rows = []
    for stage in ZERO_STAGES:
        row = {"zero": stage, "states_bytes": model_state_bytes(params, n, stage, dtype)}
        for recompute, name in ((False, ""), (True, "_recompute")):
            row["bytes" + name] = memory_per_device(config, params, n, stage, 1, dtype, recompute)
            row["fits" + name] = row["bytes" + name] <= usable
            row["min_devices" + name] = min_devices(config, params, usable, stage, dtype, recompute)
        rows.append(row)
    return rows


def choose_layout(config, params, hardware, dtype, zero, batch_sequences):
    n, usable = hardware.count, usable_bytes(hardware)
    table = stage_table(config, params, hardware, dtype)
    stages = [zero] if zero is not None else list(ZERO_STAGES)
    for recompute in (False, True):
        fitting = [s for s in stages if table[s]["fits_recompute" if recompute else "fits"]]
        if fitting:
            break
    else:
        raise _does_not_fit(config, params, hardware, dtype, zero, table)
    stage = fitting[0]
    b, accum = _micro_batch(lambda b: memory_per_device(config, params, n, stage, b, dtype, recompute) <= usable,
                            n, batch_sequences)
    s, h, a = config.block_size, config.n_embd, config.n_head
    chosen = {"zero": stage, "devices": n, "micro_batch": b, "grad_accum": accum,
              "recompute": recompute, "usable_bytes": usable, "runtime_bytes": hardware.runtime,
              "states_bytes": model_state_bytes(params, n, stage, dtype),
              "activation_bytes": activation_bytes(config, b, dtype, recompute),
              "bytes_per_device": memory_per_device(config, params, n, stage, b, dtype, recompute)
              + hardware.runtime,
              # what the same layers would keep with a materialised softmax and dropout (eq. 1, 16-bit)
              "korthikanti_activation_bytes": config.n_layer * korthikanti_layer_bytes(s, b, h, a)}
    return chosen, table


def _micro_batch(fits, devices, batch_sequences, tolerance=0.05):
    """(micro-batch, accumulation): the largest power-of-two micro-batch that fits and makes the
    global batch within `tolerance` of batch_sequences (else the largest that fits)."""
    largest = 1
    while largest * 2 <= max(1, batch_sequences // devices) and fits(largest * 2):
        largest *= 2
    b = largest
    while b >= 1:
        accum = max(1, round(batch_sequences / (devices * b)))
        if abs(devices * b * accum / batch_sequences - 1) <= tolerance:
            return b, accum
        b //= 2
    return largest, max(1, round(batch_sequences / (devices * largest)))


def _does_not_fit(config, params, hardware, dtype, zero, table):
    where = f"{hardware.count} x {hardware.name} ({hardware.memory / 1e9:.0f} GB each)"
    others = [row["zero"] for row in table if row["fits"] or row["fits_recompute"]]
    if zero is not None and others:
        return PlanError(f"{params:,} parameters do not fit on {where} at --zero {zero}; "
                         f"--zero {others[0]} fits")
    need = table[3]["min_devices_recompute"]
    if need is None:
        one = activation_bytes(config, 1, dtype, recompute=True) / 1e9
        return PlanError(f"one sequence of {config.block_size:,} tokens needs {one:.1f} GB of activations "
                         f"even with full recomputation, more than a {hardware.name} holds; lower "
                         f"--seq-len or choose devices with more memory")
    return PlanError(f"{params:,} parameters do not fit on {where}, even at ZeRO-3 with full "
                     f"recomputation: that needs at least {need} devices (--hardware {need}x{hardware.name})")
