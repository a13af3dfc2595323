"""What a prepare run leaves on disk, and how a re-run decides to skip, resume or rebuild.

  run key      a hash of the input files (path, size, modification time), the
               options that change the output and the tokenizer's fingerprint;
               --workers and progress output are not part of it
  state.json   in OUT/.prepare-work/: the run key, the last finished stage
               ("filtered", "planned") and each split's finished shards
  manifest     OUT/manifest.json, written last: the run is complete

A re-run compares keys: a complete OUT with the same key is left alone; an
unfinished one with the same key resumes; anything else is reset first (the
manifest goes first, so a crash during the reset never leaves a manifest
that points at missing shards). Only prepare's own names in OUT are touched.
This is not the pipeline: read prepare.py.
"""
import dataclasses
import hashlib
import json
import pathlib
import re
import shutil

from tinyllm.atomic import atomic_write
from tinyllm.errors import DataError
from tinyllm.data.shards import MANIFEST, SPLITS, TOKENIZER, read_manifest
from tinyllm.data.tokenfile import read_header

WORK = ".prepare-work"
_SHARD = re.compile(r"^(train|val)_\d{6}\.bin(\.tmp)?$")


def run_key(files, config, tokenizer):
    """Hash of everything the output depends on."""
    h = hashlib.sha1()
    for f in files:
        try:
            st = f.stat()
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "unreadable"   # counted as such by the run; a file that appears changes the key
        h.update(f"{f.resolve()}|{stamp}\n".encode("utf-8", "surrogateescape"))
    options = config_dict(config)
    options.pop("workers")
    if config.langid_model:
        model = pathlib.Path(config.langid_model)
        options["langid_model"] = [str(model.resolve()), model.stat().st_size, model.stat().st_mtime_ns]
    h.update(json.dumps(options, sort_keys=True).encode())
    h.update(tokenizer.fingerprint().encode())
    return h.hexdigest()[:16]


def config_dict(config):
    """The PrepareConfig as JSON-ready data (the clean limits nested)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def finished(out, key):
    """True when OUT holds a complete run with this key whose shards are all intact."""
    try:
        manifest = read_manifest(out)
        if manifest.get("run_key") != key or not (out / "report.json").is_file():
            return False
        for split in SPLITS:
            for shard in manifest["shards"][split]:
                if read_header(out / shard["file"])["count"] != shard["tokens"]:
                    return False
    except DataError:
        return False
    return True


def load_state(work):
    """The saved state of an unfinished run, or {} (missing or unreadable: start over)."""
    try:
        state = json.loads((work / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and "key" in state and "stage" in state else {}


def save_state(work, state):
    write_json(work / "state.json", state)


def reset(out, work):
    """Remove a previous run's manifest, then its shards, report and work folder."""
    (out / MANIFEST).unlink(missing_ok=True)
    remove_stale_shards(out, {split: set() for split in SPLITS})
    (out / "report.json").unlink(missing_ok=True)
    (out / TOKENIZER).unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)


def remove_stale_shards(out, keep):
    """Delete shard files (and .tmp files) of OUT that are not in keep[split]."""
    for path in out.iterdir():
        m = _SHARD.match(path.name)
        if m and (m.group(2) or path.name not in keep[m.group(1)]):
            path.unlink()


def write_json(path, data):
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
