"""Tests for the prepare pipeline and command: end to end, bad input, interruption, resume.

Corpora are small and synthetic (tinyllm/curate/synthetic.py), written in every
accepted format plus one file of each kind of bad input. An interruption is
simulated by raising KeyboardInterrupt inside each stage, and once for real
by SIGKILL of a running `prepare` process; every re-run must give the same
shards, byte for byte, as a run that was never interrupted.
"""
import gzip
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyllm.cli.prepare import main
from tinyllm.curate.clean import normalize
from tinyllm.curate.dedup import duplicates_to_drop, find_near_duplicates
from tinyllm.data import DataError, open_prepared, prepared_tokenizer, read_tokens
from tinyllm.tokenizer import ByteTokenizer, load_file
from tinyllm.curate.langid import train_supervised
from tinyllm.curate.prepare import PrepareConfig, prepare
from tinyllm.curate.synthetic import language_sentences, near_duplicate_corpus

REPO = pathlib.Path(__file__).resolve().parents[1]


def make_corpus(folder, n_docs=200, seed=0):
    """Synthetic documents in .txt, .md, .jsonl and .jsonl.gz, plus bad input of every kind."""
    docs, clusters = near_duplicate_corpus(n_docs=n_docs, dup_clusters=n_docs // 10,
                                           related_pairs=n_docs // 20, words=(60, 150), seed=seed)
    (folder / "sub").mkdir(parents=True)
    for i, doc in enumerate(docs[:60]):
        (folder / f"doc{i:03d}.{'md' if i % 2 else 'txt'}").write_text(doc, encoding="utf-8")
    with open(folder / "sub" / "part.jsonl", "w") as f:
        for doc in docs[60:130]:
            f.write(json.dumps({"text": doc, "id": 1}) + "\n")
        f.write("{broken json\n" + json.dumps({"title": "no text field"}) + "\n\n")
    with gzip.open(folder / "sub" / "more.jsonl.gz", "wt") as f:
        for doc in docs[130:]:
            f.write(json.dumps({"text": doc}) + "\n")
    (folder / "exact_copy.txt").write_text(docs[0] + "\n\n")        # same text once normalized
    (folder / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 80)
    (folder / "empty.txt").write_text(" \n \t")
    (folder / "short.md").write_text("too short to keep")
    (folder / "picture.png").write_bytes(b"\x89PNG\r\n")
    (folder / "vanished.txt").symlink_to(folder / "no-such-target.txt")
    whole = gzip.compress(b"".join(json.dumps({"text": d}).encode() + b"\n" for d in docs[:3]))
    (folder / "sub" / "truncated.jsonl.gz").write_bytes(whole[:len(whole) * 2 // 3])
    return docs, clusters


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "in"
    docs, clusters = make_corpus(folder)
    return folder, docs, clusters


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted run (1 worker, small shards) that the other runs are compared with."""
    out = tmp_path_factory.mktemp("reference")
    report = prepare([corpus[0]], out, config=_config(workers=1), progress=False)
    return out, report


def _config(**kw):
    return PrepareConfig(**{"shard_tokens": 20_000, **kw})


def _shard_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(pathlib.Path(folder).glob("*_*.bin"))}


def _assert_same_output(folder, reference_folder):
    assert _shard_bytes(folder) == _shard_bytes(reference_folder)
    for name in ("manifest.json", "report.json"):
        got, want = (json.loads((f / name).read_text()) for f in (folder, reference_folder))
        for key in ("shards", "documents", "bytes", "tokens"):
            assert got.get(key) == want.get(key), (name, key)
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in reference_folder.iterdir())

# ----------------------------------------------------------------------------- end to end


def test_report_accounts_for_every_document(reference):
    out, report = reference
    docs, size = report["documents"], report["bytes"]
    assert docs["read"] == docs["kept"] + sum(docs["dropped"].values())
    assert size["read"] == size["kept"] + sum(size["dropped"].values())
    for reason in ("invalid_utf8", "bad_json", "no_text", "empty", "too_few_words",
                   "exact_duplicate", "near_duplicate"):
        assert docs["dropped"].get(reason, 0) >= 1, reason
    assert docs["dropped"]["invalid_utf8"] == 1 and docs["dropped"]["bad_json"] == 1
    assert docs["dropped"]["near_duplicate"] >= 20   # 20 planted clusters of 2-4 documents
    assert report["files"]["problems"] == {"corrupt_gzip": 1, "unreadable": 1, "unsupported": 1}
    assert report["tokens"]["train"] > 0 and report["tokens"]["val"] > 0
    assert json.loads((out / "report.json").read_text()) == report
    assert not (out / ".prepare-work").exists()


def test_near_duplicates_dropped_as_find_near_duplicates_finds_them(tmp_path):
    """The plan stage (signatures from the workers, exact Jaccard read back from the spool
    near the threshold) drops what find_near_duplicates on the same texts would."""
    docs, _ = near_duplicate_corpus(n_docs=240, dup_clusters=40, related_pairs=10, seed=5,
                                    similarity=(0.7, 1.0))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    report = prepare([tmp_path / "in.jsonl"], tmp_path / "out", config=_config(workers=1,
                     quality=False), progress=False)
    want = duplicates_to_drop(find_near_duplicates([normalize(d) for d in docs]))
    dropped = report["documents"]["dropped"]    # copies at similarity 1.0 are exact duplicates
    assert dropped["near_duplicate"] + dropped.get("exact_duplicate", 0) == len(want) > 20


def test_shards_hold_the_kept_documents(corpus, reference):
    out, report = reference
    train, val = open_prepared(out, ByteTokenizer())
    text = ByteTokenizer().decode(np.concatenate([train, val]))
    kept = {normalize(d) for d in corpus[1]} & {normalize(d) for d in corpus[1] if normalize(d) in text}
    assert len(kept) == report["documents"]["kept"]           # each kept text once, nothing else
    assert sum(len(d.encode()) for d in kept) == len(text.encode())
    assert len(train) + len(val) == sum(report["tokens"].values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["tokens"] for s in manifest["shards"]["train"][:-1]] == \
        [20_000] * (len(manifest["shards"]["train"]) - 1)
    assert manifest["tokenizer"]["fingerprint"] == ByteTokenizer().fingerprint()
    assert isinstance(prepared_tokenizer(out), ByteTokenizer)


def test_output_does_not_depend_on_workers(corpus, reference, tmp_path):
    prepare([corpus[0]], tmp_path, config=_config(workers=2), progress=False)
    _assert_same_output(tmp_path, reference[0])


def test_end_of_text_token_separates_documents(corpus, tmp_path):
    class EotBytes(ByteTokenizer):
        name, vocab_size, eot_token = "bytes+eot", 257, 256

        def to_dict(self):
            return {"type": "bytes+eot"}

    report = prepare([corpus[0]], tmp_path, EotBytes(), _config(workers=1), progress=False)
    train, val = open_prepared(tmp_path, EotBytes())
    assert int((train == 256).sum()) == report["split_documents"]["train"]
    assert int((val == 256).sum()) == report["split_documents"]["val"] and val[-1] == 256
    with pytest.raises(DataError, match="made by the tokenizer 'bytes\\+eot'"):
        open_prepared(tmp_path, ByteTokenizer())


def test_bpe_tokenizer_file(corpus, tmp_path):
    tokenizer = pytest.importorskip("tinyllm.tokenizer", reason="BPE tokenizer not in this tree")
    tok = tokenizer.Tokenizer.train(" ".join(corpus[1][:20]), 300, special_tokens=["<|endoftext|>"])
    tok.save(tmp_path / "tok.bpe")
    loaded = load_file(str(tmp_path / "tok.bpe"))
    report = prepare([corpus[0]], tmp_path / "out", loaded, _config(workers=1), progress=False)
    rebuilt = prepared_tokenizer(tmp_path / "out")        # what the trainer will use
    assert rebuilt.fingerprint() == loaded.fingerprint()
    train, _ = open_prepared(tmp_path / "out", rebuilt)
    assert int((train == loaded.eot_token).sum()) == report["split_documents"]["train"]
    first = int(np.flatnonzero(train == loaded.eot_token)[0])
    assert rebuilt.decode(train[:first].tolist()) in {normalize(d) for d in corpus[1]}

# ----------------------------------------------------------------------------- language filter


def test_language_filter(tmp_path):
    lines = language_sentences(1200, seed=2)
    (tmp_path / "lid.txt").write_text("".join(f"__label__{lab} {s}\n" for lab, s in lines))
    model = train_supervised(str(tmp_path / "lid.txt"), lr=0.5, epoch=5, dim=16, minn=2, maxn=4,
                             bucket=2000)
    model.save(tmp_path / "lid.bin")
    (tmp_path / "in").mkdir()
    by_label = {}
    for i in range(40):   # documents of 8 sentences in one made-up language each
        label, _ = lines[i % 4]
        text = ". ".join(s for lab, s in language_sentences(40, seed=100 + i) if lab == label)
        (tmp_path / "in" / f"{i}.txt").write_text(text)
        by_label[label] = by_label.get(label, 0) + 1
    config = _config(workers=1, languages=["lat", "__label__gre"], langid_model=str(tmp_path / "lid.bin"))
    report = prepare([tmp_path / "in"], tmp_path / "out", config=config, progress=False)
    assert report["documents"]["dropped"]["language"] == by_label["cyr"] + by_label["ort"]
    assert report["documents"]["kept"] == by_label["lat"] + by_label["gre"]
    with pytest.raises(DataError, match="__label__xx not among the model's 4 labels"):
        prepare([tmp_path / "in"], tmp_path / "o2", config=_config(
            languages=["xx"], langid_model=str(tmp_path / "lid.bin")), progress=False)
    with pytest.raises(DataError, match="needs a language-id model: .*lid.176.ftz.*--skip-langid"):
        prepare([tmp_path / "in"], tmp_path / "o3", config=_config(languages=["en"]), progress=False)
    report = prepare([tmp_path / "in"], tmp_path / "o4", config=_config(
        workers=1, languages=["en"], skip_langid=True), progress=False)
    assert "language" not in report["documents"]["dropped"]
    assert any("skip-langid" in note for note in report["notes"])

# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no-such-dir: no such file or folder"):
        prepare([tmp_path / "no-such-dir"], tmp_path / "out", progress=False)
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="table.csv: unsupported file type.*.jsonl"):
        prepare([tmp_path / "table.csv"], tmp_path / "out", progress=False)
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(DataError, match="no readable input"):
        prepare([tmp_path / "empty-dir"], tmp_path / "out", progress=False)
    (tmp_path / "few.txt").write_text("three short words")
    with pytest.raises(DataError, match="(?s)every document was dropped.*too_few_words.*--no-quality"):
        prepare([tmp_path / "few.txt"], tmp_path / "out", config=_config(workers=1), progress=False)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["documents"]["read"] == 1
    with pytest.raises(DataError, match="--val-fraction 1.5"):
        PrepareConfig(val_fraction=1.5)

# ----------------------------------------------------------------------------- interruption


@pytest.mark.parametrize("stage", ["filter", "plan", "tokenize"])
def test_interrupted_run_resumes_to_the_same_output(corpus, reference, tmp_path, monkeypatch, stage):
    import tinyllm.curate.prepare as prep
    calls = []

    def interrupt_on(name, after):
        real = getattr(prep, name)

        def fake(*args, **kw):
            calls.append(name)
            if len(calls) > after:
                raise KeyboardInterrupt
            return real(*args, **kw)
        monkeypatch.setattr(prep, name, fake)

    monkeypatch.setattr(prep, "_CHUNK_DOCS", 16)   # several chunks, so a stage stops halfway
    interrupt_on({"filter": "filter_chunk", "plan": "near_duplicate_clusters",
                  "tokenize": "tokenize_chunk"}[stage], after={"filter": 3, "plan": 0, "tokenize": 4}[stage])
    with pytest.raises(KeyboardInterrupt):
        prepare([corpus[0]], tmp_path, config=_config(workers=1), progress=False)
    assert not (tmp_path / "manifest.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(DataError, match="not a finished prepared dataset"):
        open_prepared(tmp_path, ByteTokenizer())
    if stage == "tokenize":
        assert list(tmp_path.glob("train_*.bin"))    # finished shards stay for the resume
    monkeypatch.undo()
    prepare([corpus[0]], tmp_path, config=_config(workers=1), progress=False)
    _assert_same_output(tmp_path, reference[0])


def test_killed_process_resumes(corpus, reference, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tinyllm", "prepare", "--input", str(corpus[0]),
               "--out", str(tmp_path), "--shard-tokens", "2000", "--workers", "2", "--no-progress",
               "--tokenizer", "bytes"]
    proc = subprocess.Popen(command, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (tmp_path / "train_000010.bin").exists() and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)                              # the workers too
    proc.wait()
    if (tmp_path / "manifest.json").exists():
        pytest.skip("prepare finished before it could be killed (a very fast machine)")
    assert proc.returncode == -signal.SIGKILL and list(tmp_path.glob("train_*.bin"))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    fresh = tmp_path.parent / "fresh"
    prepare([corpus[0]], fresh, config=_config(workers=1, shard_tokens=2000), progress=False)
    _assert_same_output(tmp_path, fresh)


def test_rerun_is_a_no_op_and_changed_input_rebuilds(tmp_path):
    make_corpus(tmp_path / "in", n_docs=100, seed=4)
    report = prepare([tmp_path / "in"], tmp_path / "out", config=_config(workers=1, shard_tokens=5000),
                     progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert prepare([tmp_path / "in"], tmp_path / "out", config=_config(workers=1, shard_tokens=5000),
                   progress=False) == report
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == stamps
    for name in ("doc000.txt", "doc001.md", "doc002.txt"):
        (tmp_path / "in" / name).unlink()                            # less text: fewer shards
    smaller = prepare([tmp_path / "in"], tmp_path / "out", config=_config(workers=1, shard_tokens=5000),
                      progress=False)
    assert smaller["documents"]["read"] == report["documents"]["read"] - 3
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    listed = {s["file"] for split in ("train", "val") for s in manifest["shards"][split]}
    assert {p.name for p in (tmp_path / "out").glob("*.bin")} == listed   # no stale shards


def test_damaged_output_is_refused_then_rebuilt(corpus, reference, tmp_path):
    prepare([corpus[0]], tmp_path, config=_config(workers=1), progress=False)
    shard = tmp_path / "train_000001.bin"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(DataError, match="train_000001.bin: truncated or corrupt"):
        open_prepared(tmp_path, ByteTokenizer())
    prepare([corpus[0]], tmp_path, config=_config(workers=1), progress=False)
    _assert_same_output(tmp_path, reference[0])
    (tmp_path / "manifest.json").write_text('{"format": "tinyllm-prepared", "vers')
    with pytest.raises(DataError, match="manifest.json: unreadable or corrupt"):
        open_prepared(tmp_path, ByteTokenizer())
    prepare([corpus[0]], tmp_path, config=_config(workers=1), progress=False)
    _assert_same_output(tmp_path, reference[0])


def test_garbage_work_state_starts_over(corpus, reference, tmp_path):
    (tmp_path / ".prepare-work").mkdir()
    (tmp_path / ".prepare-work" / "state.json").write_text("\0\0garbage")
    (tmp_path / "train_000099.bin").write_bytes(b"stale shard of an older run")
    (tmp_path / "val_000000.bin.tmp").write_bytes(b"half-written")
    prepare([corpus[0]], tmp_path, config=_config(workers=1), progress=False)
    _assert_same_output(tmp_path, reference[0])

# ----------------------------------------------------------------------------- command line


def test_cli_help_and_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--input", "--languages", "--langid-model", "--dedup-threshold", "--min-words",
                 "--dup-ngram-limits", "--no-quality", "--skip-langid", "--shard-tokens"):
        assert flag in out
    assert main(["--input", "/no/such/path", "--out", "/tmp/x"]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_end_to_end_subprocess(tmp_path):
    make_corpus(tmp_path / "in", n_docs=60, seed=9)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    help_ = subprocess.run([sys.executable, "-m", "tinyllm", "prepare", "--help"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert help_.returncode == 0 and "--input PATH" in help_.stdout
    done = subprocess.run([sys.executable, "-m", "tinyllm", "prepare", "--input",
                           str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--no-quality",
                           "--workers", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "documents:" in done.stdout and "dropped:" in done.stdout and "near_duplicate" in done.stdout
    assert "filter: done" in done.stderr and "tokenize: done" in done.stderr
    # the default tokenizer: BPE trained once on the inputs, cached beside the shards
    tokenizer = prepared_tokenizer(tmp_path / "out")
    assert tokenizer.name.startswith("bpe") and tokenizer.eot_token is not None
    assert len(list((tmp_path / "out").glob("tokenizer-*.bpe"))) == 1
    train, val = open_prepared(tmp_path / "out", tokenizer)
    assert len(train) > 0 and len(val) > 0 and tokenizer.eot_token in np.asarray(train)
    assert read_tokens(tmp_path / "out" / "train_000000.bin").dtype == np.uint16
