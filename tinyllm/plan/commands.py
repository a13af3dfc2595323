"""The commands a plan prints: `prepare` for the data, `examples/train.py` with every flag set.

The training flags are built as a run.TrainConfig, so each one is a field the
trainer has and passes its checks; the command line is those fields spelled
as flags. On several devices the run is DESIGN.md's distributed contract,
`mpirun -np N python examples/train.py ...` with the same flags (one rank per
device, the global batch being ranks x --batch-size x --grad-accum) and
`--zero 1` when the plan shards the optimizer state; the one-process command
beside it runs the same global batch through N times the accumulation.
tinyllm shards at ZeRO stage 1 only: for a stage 2 or 3 plan the mpirun
command runs stage 1, and a note gives the memory that takes.

Not here: where the numbers come from (budget.py, shapes.py). Read
report.py next, which prints a plan.
"""
from tinyllm.run import TrainConfig

DATA_DIR = "prepared"


def train_config(config, layout, hp, backend, out, ranks=1):
    """The TrainConfig of the planned run on `ranks` processes (accumulation makes up the rest)."""
    accum = layout["grad_accum"] * layout["devices"] // ranks
    steps = hp["max_steps"]
    return TrainConfig(
        data=DATA_DIR, block_size=config.block_size, n_layer=config.n_layer, n_head=config.n_head,
        n_embd=config.n_embd, batch_size=layout["micro_batch"], grad_accum=accum,
        max_steps=steps, lr=float(f"{hp['lr']:.3g}"), min_lr=float(f"{hp['min_lr']:.3g}"),
        warmup_steps=hp["warmup_steps"], weight_decay=hp["weight_decay"], grad_clip=hp["grad_clip"],
        eval_interval=min(1000, max(50, steps // 50)), backend=backend, out=out,
        zero=1 if ranks > 1 and layout["zero"] else 0)


# the flags a planned command sets, in this order; the rest keep TrainConfig's defaults
FLAGS = ("data", "block_size", "n_layer", "n_head", "n_embd", "batch_size", "grad_accum", "max_steps",
         "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip", "eval_interval", "backend", "out")


def command_line(config, prefix="python examples/train.py"):
    """`prefix --data prepared --block-size 2048 ...`: the FLAGS of a TrainConfig (and --zero 1 if set)."""
    flags = FLAGS + (("zero",) if config.zero else ())
    return " ".join([prefix, *(f"--{name.replace('_', '-')} {getattr(config, name)}" for name in flags)])


def commands(config, layout, hp, hardware, dtype, out, fits_one_device=True, zero1=None):
    """prepare, train (one process) and, on several devices, train_mpi with what it runs as notes."""
    devices = layout["devices"]
    prepare = f"python -m tinyllm prepare --input YOUR_TEXT/ --out {DATA_DIR} --vocab-size {config.vocab_size}"
    one = command_line(train_config(config, layout, hp, hardware.backend, out))
    result = {"prepare": prepare, "train": one}
    if dtype != "fp32" or layout["zero"] > 1 or layout["recompute"]:
        result["today"] = ("tinyllm trains in float32 without recomputation today, sharding the AdamW "
                           "state alone (ZeRO-1): the shape, batch and schedule carry over as they are; "
                           "the planned speed and memory assume mixed precision and the layout above")
    if devices > 1:
        flags = command_line(train_config(config, layout, hp, hardware.backend, out, ranks=devices))
        result["train_mpi"] = f"mpirun -np {devices} " + flags
        result["note"] = (f"data parallel on {devices} MPI ranks, one per device: global batch = ranks x "
                          f"--batch-size x --grad-accum; on several nodes add --hostfile (README: "
                          f"\"On several processes or machines\")")
        result["one_process"] = (f"the same global batch in one process, {devices} x the time"
                                 if fits_one_device else "the same run in one process, but the model "
                                 "does not fit on one device")
        if zero1 is not None:
            result["zero_note"] = _zero1_note(layout, hardware, zero1)
    return result


def _zero1_note(layout, hardware, zero1):
    """What a ZeRO-2/3 plan runs as in tinyllm, which shards the optimizer state alone (ZeRO-1)."""
    gb, usable = zero1["bytes_per_device"] / 1e9, layout["usable_bytes"] / 1e9
    head = f"the plan's ZeRO-{layout['zero']} is not in tinyllm yet: `--zero 1` shards the AdamW state alone"
    if zero1["fits"] and zero1["micro_batch"] == layout["micro_batch"]:
        return f"{head} and keeps {gb:.1f} GB per device, within the {usable:.1f} GB usable: it runs as planned"
    if zero1["fits"]:
        return (f"{head}: at this micro-batch it does not fit; with --batch-size {zero1['micro_batch']} "
                f"--grad-accum {zero1['grad_accum']} (the same global batch) it keeps {gb:.1f} GB per "
                f"device, within the {usable:.1f} GB usable")
    head += f" and keeps {gb:.1f} GB per device even at micro-batch 1, more than the {usable:.1f} GB usable"
    need = zero1["min_devices"]
    if need is None:
        return (f"{head}, and ZeRO-1 fits at no device count (every rank keeps the weights and "
                f"gradients): this model needs ZeRO-2 or 3")
    return f"{head}; ZeRO-1 fits on {need} devices (--hardware {need}x{hardware.name})"
