"""A plan as text: what `python -m tinyllm plan` prints (--json writes the dict instead).

Not here: the numbers (tinyllm/plan/__init__.py builds them). Read
tinyllm/cli/plan.py next.
"""
from tinyllm.plan.hardware import KNOWN


def count(n):
    """1_001_416_832 -> '1.00B', 83_627_648 -> '83.6M'."""
    for suffix, unit in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= unit:
            return f"{n / unit:.3g}{suffix}" if n / unit < 100 else f"{n / unit:.0f}{suffix}"
    return f"{n:.0f}"


def duration(seconds):
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.3g} s"


def rate(flops):
    return f"{flops / 1e12:.4g} TFLOP/s" if flops >= 1e12 else f"{flops / 1e9:.3g} GFLOP/s"


def gb(n):
    return f"{n / 1e9:.1f} GB"


def format_hardware():
    """The known devices: peaks, memory and where the numbers come from."""
    lines = [f"{'device':<10} {'bf16 dense':>14} {'fp32':>13} {'memory':>7}   source"]
    lines += [f"{h.name:<10} {rate(h.bf16):>14} {rate(h.fp32):>13} {h.memory / 1e9:>4.0f} GB   {h.source}"
              for h in KNOWN.values()]
    return "\n".join(lines + ["this       measured: the active backend's float32 matmul rate and this "
                               "machine's memory"])


def format_plan(plan):
    return "\n".join(_model(plan) + _budget(plan) + _memory(plan) + _hyperparameters(plan) + _commands(plan))


def _model(plan):
    m, hw = plan["model"], plan["hardware"]
    parts = m["parameters_by_part"]
    return [
        f"plan: a {count(m['parameters'])}-parameter GPT on {hw['count']} x {hw['name']} "
        f"({hw['dtype']}, MFU {plan['compute']['mfu']:g})", "",
        "model (" + ("depth and width from the GPT-3 table, Brown et al. 2020" if m["shape_from"] ==
                     "the GPT-3 table" else m["shape_from"]) + ")",
        f"  n_layer {m['n_layer']}, n_head {m['n_head']}, n_embd {m['n_embd']} (head size "
        f"{m['n_embd'] // m['n_head']}), context {m['block_size']}, vocab {m['vocab_size']}",
        f"  {m['parameters']:,} parameters: token embedding {count(parts['wte'])} + positions "
        f"{count(parts['wpe'])} + {m['n_layer']} block{'s' if m['n_layer'] > 1 else ''} "
        f"{count(parts['blocks'])} + lm_head "
        f"{count(parts['lm_head'])} (+ final norm)",
        f"  {m['flops_per_token'] / 1e9:.3g} GFLOP per training token (6 N + 12 L C T)", ""]


def _budget(plan):
    t, c, hw = plan["tokens"], plan["compute"], plan["hardware"]
    origin = ("--tokens" if t["from"] == "--tokens" else
              "compute-optimal by Chinchilla, Hoffmann et al. 2022 table 3")
    lines = ["tokens", f"  {count(t['budget'])} tokens ({t['tokens_per_parameter']:.1f} per parameter; {origin})"]
    if t["from"] == "--tokens":
        lines.append(f"  Chinchilla-optimal would be {count(t['chinchilla'])}")
    if t["days_allow"]:
        lines.append(f"  --days allows {count(t['days_allow'])} tokens at this MFU")
    return lines + [
        "", "compute",
        f"  {c['flops']:.3g} FLOPs: {duration(c['seconds'])} on {hw['count']} x {hw['name']} at "
        f"{rate(hw['peak_flops'])} {hw['dtype']} peak each and MFU {c['mfu']:g}",
        f"  ({hw['source']}); one optimizer step: {duration(c['step_seconds'])}",
        f"  {c['device_hours']:,.0f} device-hours: about ${c['cost']:,.0f} at "
        f"${c['price_per_device_hour']:.2f} per device-hour (--price)", ""]


def _memory(plan):
    chosen, hw = plan["memory"]["chosen"], plan["hardware"]
    lines = [f"memory per device, {gb(chosen['usable_bytes'])} of {gb(hw['memory_bytes'])} usable "
             f"(ZeRO: Rajbhandari et al. 2020; activations: Korthikanti et al. 2022, fused attention)",
             "  stage    model states   + 1 sequence   with recomputation   fewest devices (recomputing)"]
    for row in plan["memory"]["stages"]:
        fewest = f"{row['min_devices'] or '-'} ({row['min_devices_recompute'] or '-'})"
        lines.append(f"  ZeRO-{row['zero']}   {gb(row['states_bytes']):>12}   {gb(row['bytes']):>12}   "
                     f"{gb(row['bytes_recompute']):>18}   {fewest}")
    how = "full recomputation" if chosen["recompute"] else "no recomputation"
    runtime = f" + {gb(chosen['runtime_bytes'])} the process" if chosen["runtime_bytes"] else ""
    lines.append(f"  chosen: ZeRO-{chosen['zero']}, {how}, micro-batch {chosen['micro_batch']}: "
                 f"{gb(chosen['states_bytes'])} states + {gb(chosen['activation_bytes'])} activations"
                 f"{runtime} = {gb(chosen['bytes_per_device'])}")
    if hw["dtype"] == "bf16":
        lines.append(f"  (with a materialised softmax and dropout the layers would keep "
                     f"{gb(chosen['korthikanti_activation_bytes'])}: Korthikanti et al. eq. 1)")
    return lines + [""]


def _hyperparameters(plan):
    h, chosen, T = plan["hyperparameters"], plan["memory"]["chosen"], plan["model"]["block_size"]
    return ["hyperparameters (GPT-3 table 2.1 interpolated by size; its appendix B recipe)",
            f"  global batch {h['batch_sequences']} x {T} = {h['batch_tokens']:,} tokens "
            f"({_devices(chosen['devices'])} x micro-batch {chosen['micro_batch']} x accumulation "
            f"{chosen['grad_accum']}; GPT-3's at this size: {count(h['batch_tokens_gpt3'])})",
            f"  learning rate {h['lr']:.3g}: linear warmup over {h['warmup_steps']} steps, cosine decay to "
            f"{h['min_lr']:.3g} at step {h['max_steps']:,}",
            f"  AdamW betas ({h['betas'][0]}, {h['betas'][1]}), eps {h['eps']:g}, weight decay "
            f"{h['weight_decay']}, gradient clipping {h['grad_clip']}", ""]


def _devices(n):
    return f"{n} device" + ("s" if n > 1 else "")


def _commands(plan):
    cmd = plan["commands"]
    lines = ["commands",
             f"  data ({count(plan['tokens']['budget'])} tokens of text, roughly 4 bytes each):",
             f"    {cmd['prepare']}", "  train:", f"    {cmd['train']}"]
    if "train_mpi" in cmd:
        lines += [f"  ({cmd['note']})", f"    {cmd['train_mpi']}"]
    if "today" in cmd:
        lines.append(f"  ({cmd['today']})")
    return lines
