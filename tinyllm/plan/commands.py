"""The commands a plan prints: `prepare` for the data, `examples/train.py` with every flag set.

The training flags are built as a run.TrainConfig, so each one is a field the
trainer has and passes its checks; the command line is those fields spelled
as flags. DESIGN.md's distributed contract is `mpirun -np N python
examples/train.py ...` with the same flags, the global batch being ranks x
--batch-size x --grad-accum: until MPI data parallel lands, the planner
prints the one-process command (the same global batch through N times the
accumulation, N times slower) and the mpirun one it will become.

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
        eval_interval=min(1000, max(50, steps // 50)), backend=backend, out=out)


# the flags a planned command sets, in this order; the rest keep TrainConfig's defaults
FLAGS = ("data", "block_size", "n_layer", "n_head", "n_embd", "batch_size", "grad_accum", "max_steps",
         "lr", "min_lr", "warmup_steps", "weight_decay", "grad_clip", "eval_interval", "backend", "out")


def command_line(config, prefix="python examples/train.py"):
    """`prefix --data prepared --block-size 2048 ...`: the FLAGS of a TrainConfig."""
    return " ".join([prefix, *(f"--{name.replace('_', '-')} {getattr(config, name)}" for name in FLAGS)])


def commands(config, layout, hp, hardware, dtype, out, fits_one_device=True):
    devices = layout["devices"]
    prepare = f"python -m tinyllm prepare --input YOUR_TEXT/ --out {DATA_DIR} --vocab-size {config.vocab_size}"
    one = command_line(train_config(config, layout, hp, hardware.backend, out))
    result = {"prepare": prepare, "train": one}
    if dtype != "fp32" or layout["zero"] or layout["recompute"]:
        result["today"] = ("tinyllm trains in float32, without ZeRO or recomputation, today: the shape, "
                           "batch and schedule carry over as they are; the planned speed and memory "
                           "assume mixed precision and the ZeRO stage above")
    if devices > 1:
        flags = command_line(train_config(config, layout, hp, hardware.backend, out, ranks=devices))
        result["train_mpi"] = f"mpirun -np {devices} " + flags
        one_device = (f"`train` runs the same global batch on one device ({devices} x the time)"
                      if fits_one_device else "`train` shows the same run in one process, but the model "
                      "does not fit on one device")
        result["note"] = (f"MPI data parallel has not landed yet: {one_device}; once it lands, "
                          f"`train_mpi` runs it on {devices} ranks (global batch = ranks x --batch-size "
                          f"x --grad-accum)")
    return result
