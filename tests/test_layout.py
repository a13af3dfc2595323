"""The layout's rules, checked: every import points down the layers, and files and functions stay small.

The layers, top to bottom (README's reading map follows them upward):
  cli/                 one module per command
  plan/                the scale planner (its commands are run.TrainConfig's flags)
  evaluate.py          a checkpoint measured on held-out data (`python -m tinyllm eval`)
  run.py finetune/run.py   a training or fine-tuning run built from flags
  train.py             the Trainer
  distributed.py zero.py   MPI data parallel, ZeRO-1
  checkpoint.py        what a checkpoint holds (a model and its tokenizer)
  finetune/            the fine-tuned models (classifier, LoRA) and their data, below checkpoint.py
  quant/               quantized weights (q8_0, q4_0) and the layers that hold them
  model.py             the GPT
  chat.py              a conversation: the template, the turns kept in the KV cache
  generate.py          the KV cache and decoding, for any model with forward(idx, cache=)
  sampling.py          logits -> token ids (NumPy only)
  nn.py optim.py gradcheck.py
  tensor.py ops.py     autograd; the one allowed circle (Tensor's operators are ops)
  curate/ data/ tokenizer/   text in; no autograd or model code
  backends/            the kernels
  errors.py atomic.py terminal.py folder_lock.py progress.py malloc.py memory.py safetensors.py plot.py   leaves
Every import, at the top of a file or inside a function, must go to a lower
layer or, inside one package, must not close a circle.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tinyllm"

# higher imports lower; a module's layer is that of its longest listed prefix
LAYERS = {
    "tinyllm.cli": 90, "tinyllm.__main__": 95, "tinyllm": 99,   # __init__: the public names
    "tinyllm.plan": 85, "tinyllm.evaluate": 82, "tinyllm.run": 80, "tinyllm.finetune.run": 81, "tinyllm.train": 70,
    "tinyllm.distributed": 65, "tinyllm.zero": 64, "tinyllm.checkpoint": 60,
    "tinyllm.finetune": 55, "tinyllm.quant": 55, "tinyllm.model": 50,
    "tinyllm.chat": 46, "tinyllm.generate": 45, "tinyllm.sampling": 44,
    "tinyllm.nn": 40, "tinyllm.optim": 40, "tinyllm.gradcheck": 40,
    "tinyllm.lm_loss": 35, "tinyllm.tensor": 30, "tinyllm.ops": 30,
    "tinyllm.curate": 24, "tinyllm.data": 22, "tinyllm.tokenizer": 20,
    "tinyllm.backends": 10,
    "tinyllm.errors": 0, "tinyllm.atomic": 0, "tinyllm.terminal": 0, "tinyllm.progress": 0, "tinyllm.malloc": 0, "tinyllm.memory": 0,
    "tinyllm.safetensors": 1, "tinyllm.plot": 1, "tinyllm.folder_lock": 1,
}
ALLOWED_CIRCLES = {frozenset({"tinyllm.tensor", "tinyllm.ops"})}
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module):
    prefix = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[prefix]


def imports(module):
    """The tinyllm modules that `module` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a import b` imports the module a.b when there is one, else a
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
                     else node.module for a in node.names]
        else:
            continue
        found.update(n for n in names if n in MODULES and n != module)
    return found


GRAPH = {m: imports(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = [m for m in GRAPH[module] if layer(m) > layer(module)]
    same = [m for m in GRAPH[module] if layer(m) == layer(module)
            and m.split(".")[:2] != module.split(".")[:2]
            and frozenset({m, module}) not in ALLOWED_CIRCLES]
    assert not upward and not same, (f"{module} (layer {layer(module)}) imports "
                                      f"{sorted(upward + same)} at the same or a higher layer")


def test_no_import_circle_but_tensor_and_ops():
    def visit(node, path, on_path, done):
        on_path.add(node)
        path.append(node)
        for nxt in sorted(GRAPH[node]):
            if nxt in on_path:
                circle = path[path.index(nxt):]
                if frozenset(circle) not in ALLOWED_CIRCLES:
                    raise AssertionError(f"import circle: {' -> '.join(circle + [nxt])}")
            elif nxt not in done:
                visit(nxt, path, on_path, done)
        path.pop()
        on_path.discard(node)
        done.add(node)

    done = set()
    for module in sorted(GRAPH):
        if module not in done:
            visit(module, [], set(), done)


SOURCES = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "csrc").rglob("*.[ch]"),
                  *(ROOT / "csrc").rglob("*.cu"), *(ROOT / "csrc").rglob("*.cuh"),
                  *(ROOT / "csrc").rglob("*.cpp"), *(ROOT / "examples").glob("*.py"),
                  *(ROOT / "tools").glob("*.py")])


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_stay_small(path):
    n = path.read_text().count("\n")
    assert n <= MAX_FILE_LINES, f"{path.relative_to(ROOT)} has {n} lines: split it by idea"


@pytest.mark.parametrize("path", [p for p in SOURCES if p.suffix == ".py"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_stay_short(path):
    long = [(node.name, node.end_lineno - node.lineno + 1)
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: {long}"
