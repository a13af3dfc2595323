"""The planner's command and library: flags, --json, errors that name the fix, layouts, commands."""
import dataclasses
import importlib.util
import json
import pathlib
import shlex

import pytest

from tinyllm.cli import main as cli_main
from tinyllm.cli.plan import main
from tinyllm.cli.train import build_parser as train_parser
from tinyllm.errors import PlanError
from tinyllm.model import num_parameters, preset
from tinyllm.plan import budget, make_plan, parse_count
from tinyllm.plan.hardware import KNOWN, Hardware, parse_hardware
from tinyllm.plan.layout import usable_bytes
from tinyllm.run import TrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def fake_this():
    return Hardware("this machine (test)", 1, None, 100e9, 16e9, "a test's numbers", "c", mfu=0.75)


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--params", "--hardware", "--days", "--tokens", "--seq-len", "--dtype", "--zero",
                 "--mfu", "--price", "--json", "H100-SXM"):
        assert flag in out


def test_dispatch_lists_plan(capsys):
    assert cli_main(["--help"]) == 0
    assert "plan" in capsys.readouterr().err


def test_text_plan_has_every_section(capsys):
    rc, out, _ = run(capsys, "--params", "1B", "--hardware", "8xH100")
    assert rc == 0
    for words in ("n_layer", "tokens", "FLOPs", "ZeRO-3", "learning rate", "python examples/train.py",
                  "python -m tinyllm prepare", "mpirun -np 8", "per device-hour"):
        assert words in out


def test_json_plan(capsys):
    rc, out, _ = run(capsys, "--params", "1.3B", "--hardware", "8xA100", "--json", "--price", "1.5")
    assert rc == 0
    plan = json.loads(out)
    assert set(plan) == {"model", "hardware", "tokens", "compute", "memory", "hyperparameters", "commands"}
    assert plan["model"]["parameters"] == pytest.approx(1.3e9, rel=0.07)
    assert plan["compute"]["cost"] == pytest.approx(plan["compute"]["device_hours"] * 1.5)
    assert [row["zero"] for row in plan["memory"]["stages"]] == [0, 1, 2, 3]


@pytest.mark.parametrize("argv, words", [
    (["--params", "0"], ["--params", "positive"]),
    (["--params", "banana"], ["banana", "1.3B"]),
    (["--params", "1B", "--hardware", "8xTPUv9"], ["TPUv9", "H100-SXM", "A100-40GB", "RTX-4090", "this"]),
    (["--params", "175B", "--hardware", "8xA100-40GB"], ["ZeRO-3", "at least", "xA100-40GB"]),
    (["--params", "10B", "--hardware", "8xH100", "--days", "1"], ["--days 1", "too short", "--tokens"]),
    (["--params", "1B", "--mfu", "1.5"], ["--mfu", "(0, 1]"]),
    (["--params", "1B", "--mfu", "0"], ["--mfu", "(0, 1]"]),
    (["--params", "1B", "--tokens", "0"], ["--tokens", "positive"]),
    (["--params", "1B", "--seq-len", "1000000", "--hardware", "L4"], ["--seq-len"]),
])
def test_bad_input_names_the_fix(capsys, argv, words):
    rc, out, err = run(capsys, *argv)
    assert rc == 1 and not out
    for w in words:
        assert w in err, err


def test_too_big_says_how_many_devices_fit():
    with pytest.raises(PlanError, match=r"at least (\d+) devices") as e:
        make_plan(params=175e9, hardware="8xA100-40GB")
    need = int(e.value.args[0].split("at least ")[1].split()[0])
    make_plan(params=175e9, hardware=f"{need}xA100-40GB", zero=3)                 # fits at that count
    with pytest.raises(PlanError):
        make_plan(params=175e9, hardware=f"{need - 1}xA100-40GB", zero=3)       # and not one fewer


@pytest.mark.parametrize("text, value", [("1B", 1e9), ("350M", 350e6), ("1.3b", 1.3e9), ("7.5e9", 7.5e9),
                                         ("20B", 20e9), ("1T", 1e12), ("125m", 125e6)])
def test_parse_count(text, value):
    assert parse_count(text, "--params") == pytest.approx(value)


@pytest.mark.parametrize("spec, name, count", [("8xH100", "H100-SXM", 8), ("H200", "H200", 1),
                                               ("64 x a100-40gb", "A100-40GB", 64), ("2×RTX 4090", "RTX-4090", 2),
                                               ("4*h100-pcie", "H100-PCIe", 4), ("l4", "L4", 1)])
def test_parse_hardware(spec, name, count):
    hw = parse_hardware(spec)
    assert (hw.name, hw.count) == (name, count)
    assert hw.bf16 > hw.fp32 > 0 and hw.memory >= 24e9


def test_known_accelerators_have_sources():
    for hw in KNOWN.values():
        assert "datasheet" in hw.source or "whitepaper" in hw.source


def test_hardware_this_is_measured():
    hw = parse_hardware("this")
    assert hw.fp32 > 1e8 and hw.memory > 1e8 and hw.runtime > 0 and hw.bf16 is None
    assert "measured" in hw.source


def test_this_plans_in_fp32_on_the_cpu_backend():
    plan = make_plan(preset="tiny", hardware="this", measure=fake_this)
    assert plan["hardware"]["dtype"] == "fp32" and plan["compute"]["mfu"] == 0.75
    assert "--backend c" in plan["commands"]["train"] and "train_mpi" not in plan["commands"]
    with pytest.raises(PlanError, match="--dtype fp32"):
        make_plan(preset="tiny", hardware="this", measure=fake_this, dtype="bf16")


def train_flags(command):
    """The TrainConfig a planned `python examples/train.py ...` command line would run."""
    words = shlex.split(command)
    start = words.index("examples/train.py") + 1
    return TrainConfig(**vars(train_parser().parse_args(words[start:])))


def test_commands_parse_as_the_trainers_flags():
    plan = make_plan(params=1e9, hardware="8xH100")
    one, mpi = (train_flags(plan["commands"][k]) for k in ("train", "train_mpi"))
    chosen, hp, m = plan["memory"]["chosen"], plan["hyperparameters"], plan["model"]
    assert (one.n_layer, one.n_head, one.n_embd, one.block_size) == (m["n_layer"], m["n_head"],
                                                                      m["n_embd"], m["block_size"])
    assert one.batch_size == mpi.batch_size == chosen["micro_batch"]
    # the same global batch: one process accumulates what 8 ranks do together
    assert one.grad_accum == 8 * mpi.grad_accum
    assert 8 * mpi.batch_size * mpi.grad_accum * one.block_size == hp["batch_tokens"]
    assert dataclasses.replace(one, grad_accum=mpi.grad_accum) == mpi
    assert one.max_steps * hp["batch_tokens"] >= plan["tokens"]["budget"]
    assert one.warmup_steps < one.max_steps and one.min_lr == pytest.approx(one.lr / 10, rel=0.01)
    assert plan["commands"]["train_mpi"].startswith("mpirun -np 8 python examples/train.py")


def test_layout_takes_the_lowest_zero_stage_that_fits_and_a_micro_batch_that_fits():
    plan = make_plan(params=10e9, hardware="64xH100")
    chosen, stages = plan["memory"]["chosen"], plan["memory"]["stages"]
    assert chosen["zero"] == min(row["zero"] for row in stages if row["fits"])
    usable = usable_bytes(parse_hardware("64xH100"))
    assert chosen["bytes_per_device"] <= usable
    config = _config(plan)
    N = plan["model"]["parameters"]
    bigger = budget.memory_per_device(config, N, 64, chosen["zero"], 2 * chosen["micro_batch"], "bf16", False)
    assert bigger > usable or 64 * 2 * chosen["micro_batch"] > plan["hyperparameters"]["batch_sequences"]


def test_zero_flag_is_kept_or_refused():
    plan = make_plan(params=10e9, hardware="64xH100", zero=3)
    assert plan["memory"]["chosen"]["zero"] == 3
    with pytest.raises(PlanError, match="--zero 1 fits"):
        make_plan(params=10e9, hardware="64xH100", zero=0)


def test_days_and_tokens():
    plan = make_plan(params=1e9, hardware="8xH100", days=7)
    c = plan["compute"]   # the compute rate, slowed by each step's exposed allreduce
    assert plan["tokens"]["days_allow"] == pytest.approx(
        7 * 86400 * 8 * 989.5e12 * 0.4 / plan["model"]["flops_per_token"]
        * c["compute_step_seconds"] / c["step_seconds"])
    plan = make_plan(params=1e9, hardware="8xH100", tokens=5e9)
    assert plan["tokens"]["budget"] == 5e9 and plan["tokens"]["from"] == "--tokens"
    assert plan["compute"]["flops"] == plan["model"]["flops_per_token"] * 5e9


def test_preset_keeps_its_shape():
    plan = make_plan(preset="bench", hardware="1xL4")
    assert (plan["model"]["n_layer"], plan["model"]["n_embd"], plan["model"]["block_size"]) == (6, 384, 256)
    assert plan["model"]["parameters"] == num_parameters(_config(plan))


def _config(plan):
    from tinyllm.model import GPTConfig
    fields = {f.name for f in dataclasses.fields(GPTConfig)}
    return GPTConfig(**{k: v for k, v in plan["model"].items() if k in fields})


def test_plan_matches_tinyllm_itself_on_the_bench_preset():
    spec = importlib.util.spec_from_file_location("bench_plan", ROOT / "examples" / "bench_plan.py")
    bench_plan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_plan)
    hw, config = parse_hardware("this"), preset("bench")
    # batch 4 and one step after the warm-up: the peak (activations plus the AdamW moments the
    # first update makes) is reached by then, and the planner's ratio is the same at batches 4-16
    N, b = num_parameters(config), 4
    r = bench_plan.measured("bench", hw.backend, b, steps=1)
    # the child's own process memory (VmHWM, tinyllm/memory.py: the same on a loaded machine),
    # not this one's: pytest's has torch and every test's imports
    memory = budget.memory_per_device(config, N, 1, 0, b, "fp32", False) + r["start_mb"] * 2 ** 20
    # memory only: no test asserts a time (the planned step time against the measured one is
    # examples/bench_plan.py's table, recorded in BENCHMARKS.md)
    assert abs(memory / (r["peak_mb"] * 2 ** 20) - 1) < 0.10


@pytest.mark.parametrize("intro, kwargs", [
    ("A 1B model on one 8 x H100 node:", dict(params=1e9, hardware="8xH100")),
    ("A 10B model on 64 H100s (eight nodes):", dict(params=10e9, hardware="64xH100"))])
def test_readme_plans_are_what_the_command_prints(intro, kwargs):
    from tinyllm.plan.report import format_plan
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```\n", readme.index(intro)) + 4
    assert readme[start:readme.index("\n```", start)] == format_plan(make_plan(**kwargs))


def test_list_hardware(capsys):
    rc, out, _ = run(capsys, "--list-hardware")
    assert rc == 0
    for hw in KNOWN.values():
        assert hw.name in out and hw.source in out
    rc, _, err = run(capsys)
    assert rc == 1 and "--params" in err and "--preset" in err


def test_communication_arithmetic():
    from tinyllm.plan.scaling import OVERLAP, communication
    node = dataclasses.replace(KNOWN["H100-SXM"], count=4, link=100e9, network=10e9)
    comm = communication(1e9, node, zero=1)
    # a ring of 4 sends 2 x 3/4 of the 1 GB over the 100 GB/s link: 15 ms; the backward hides 44%
    assert comm["allreduce_seconds"] == pytest.approx(0.015) and OVERLAP == 0.44
    assert comm["exposed_seconds"] == pytest.approx(0.56 * 0.015)
    # 16 ranks span two nodes of 8: the 10 GB/s network is the slowest link; ZeRO-3 moves 1.5 x
    comm = communication(1e9, dataclasses.replace(node, count=16), zero=3)
    assert comm["across_nodes"] and comm["allreduce_seconds"] == pytest.approx(2 * 15 / 16 * 1.5e9 / 10e9)
    assert communication(1e9, dataclasses.replace(node, count=1), zero=0)["exposed_seconds"] == 0


def test_plan_time_includes_the_allreduce():
    plan = make_plan(params=1e9, hardware="8xH100")
    c, N = plan["compute"], plan["model"]["parameters"]
    comm = c["communication"]
    # bf16 gradients, 2 bytes a parameter, over NVLink 4 (450 GB/s one way) within one node
    assert comm["grad_bytes"] == 2 * N and comm["bytes_per_second"] == 450e9
    assert comm["exposed_seconds"] == pytest.approx(0.56 * 2 * 7 / 8 * 2 * N / 450e9)
    assert c["step_seconds"] == pytest.approx(c["compute_step_seconds"] + comm["exposed_seconds"])
    assert c["seconds"] == pytest.approx(c["compute_seconds"] * c["step_seconds"] / c["compute_step_seconds"])
    assert c["compute_seconds"] == pytest.approx(c["flops"] / (8 * 989.5e12 * 0.4))
    assert c["device_hours"] == pytest.approx(c["seconds"] / 3600 * 8)
    # 64 devices are 8 nodes: the ring runs at the nodes' 8 x 400 Gbit/s InfiniBand
    assert make_plan(params=10e9, hardware="64xH100")["compute"]["communication"]["bytes_per_second"] == 400e9
    one = make_plan(params=125e6, hardware="1xH100")["compute"]
    assert one["communication"]["exposed_seconds"] == 0 and one["step_seconds"] == one["compute_step_seconds"]


def test_communication_is_a_line_of_the_plan(capsys):
    rc, out, _ = run(capsys, "--params", "1B", "--hardware", "8xH100")
    assert rc == 0 and "communication per step" in out and "450 GB/s" in out and "44%" in out
    assert "has not landed" not in out and "has not landed" not in (ROOT / "README.md").read_text()
    rc, out, _ = run(capsys, "--params", "1B", "--hardware", "8xH100", "--json")
    assert json.loads(out)["compute"]["communication"]["ranks"] == 8
    rc, out, _ = run(capsys, "--params", "125M", "--hardware", "1xH100")
    assert rc == 0 and "communication per step" not in out and "mpirun" not in out


def test_zero1_plans_pass_zero_1_to_mpirun():
    plan = make_plan(params=10e9, hardware="64xH100")
    assert plan["memory"]["chosen"]["zero"] == 1
    one, mpi = (train_flags(plan["commands"][k]) for k in ("train", "train_mpi"))
    assert mpi.zero == 1 and one.zero == 0 and "--zero 1" in plan["commands"]["train_mpi"]
    assert "zero_note" not in plan["commands"]
    assert "--zero" not in make_plan(params=1e9, hardware="8xH100")["commands"]["train_mpi"]


@pytest.mark.parametrize("kwargs, words", [
    # ZeRO-2 chosen: ZeRO-1 takes 85.9 GB a device here, and fits from 28 devices
    (dict(params=13e9, hardware="8xH100"), ["ZeRO-2 is not in tinyllm", "more than", "28xH100-SXM"]),
    # ZeRO-3 chosen: every rank keeps 4 bytes a parameter of weights and gradients, > 72 GB
    (dict(params=20e9, hardware="8xH100"), ["ZeRO-3 is not in tinyllm", "at no device count"]),
    # --zero 3 asked for where ZeRO-1 fits at half the micro-batch, with twice the accumulation
    (dict(params=10e9, hardware="64xH100", zero=3), ["ZeRO-3 is not in tinyllm", "--batch-size 2 "
                                                     "--grad-accum 8", "within"]),
    # ZeRO-3 on twice the devices a 1B model needs: ZeRO-1 fits as planned
    (dict(params=1e9, hardware="8xH100", zero=3), ["ZeRO-3 is not in tinyllm", "runs as planned"])])
def test_zero_2_and_3_plans_say_what_tinyllm_runs_instead(kwargs, words):
    plan = make_plan(**kwargs)
    note, instead = plan["commands"]["zero_note"], plan["memory"]["tinyllm_zero1"]
    for w in words:
        assert w in note, note
    assert f"{instead['bytes_per_device'] / 1e9:.1f} GB" in note
    assert train_flags(plan["commands"]["train_mpi"]).zero == 1
