"""`mpirun -np 2 python -m tinyllm prepare`: the same shards as one process, and resumable.

The corpus has exact and near-duplicates planted across its two files, which
go to different ranks, so the 2-rank run only matches the 1-process run if the
duplicates are found across ranks. The runs launch `mpirun --oversubscribe -np 2`
as tests/test_distributed.py does and skip with its reason where mpirun or
mpi4py is missing (`make mpi` installs both). The first tests need neither.
"""
import json
import pathlib

import numpy as np
import pytest

from tinyllm.curate.prepare import PrepareConfig, prepare
from tinyllm.curate.ranks import Ranks, split_files
from tinyllm.curate.sources import SourceStats, read_documents
from tinyllm.curate.report import Report
from tinyllm.curate.synthetic import near_duplicate_corpus
from tests.test_distributed import MPI_MISSING, launch

needs_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=str(MPI_MISSING))
# rank RANK fails in the tokenize stage (rank 0 as it starts pulling the others' tokens,
# the others as they start tokenizing): the job stops after the plan
FAULTY = """
import sys
from tinyllm.cli.prepare import main
from tinyllm.curate import prepare, ranks
from tinyllm.errors import DataError
rank = ranks.Ranks(__import__("mpi4py.MPI").MPI.COMM_WORLD).rank
def fail(*args, **kw):
    raise DataError(f"rank {rank} gives up")
if rank == int(sys.argv[1]):
    prepare.tokenize_local = prepare.pulled_tokens = fail
sys.exit(main(sys.argv[3:]))   # after the rank and the command name
"""

# rank 1 runs with another --seed than rank 0
ODD_RANK = """
import sys
from mpi4py import MPI
from tinyllm.cli.prepare import main
argv = sys.argv[2:] + (["--seed", "1"] if MPI.COMM_WORLD.Get_rank() == 1 else [])
sys.exit(main(argv))
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two JSONL files; the duplicates of a document in one are often in the other."""
    docs, clusters = near_duplicate_corpus(n_docs=300, dup_clusters=30, related_pairs=10, seed=7)
    docs = docs + docs[:20]                                      # exact copies, in the second file
    order = np.random.default_rng(0).permutation(len(docs) - 20).tolist() + list(range(len(docs) - 20, len(docs)))
    folder = tmp_path_factory.mktemp("mpi-corpus")
    half = len(order) // 2
    for name, part in (("a.jsonl", order[:half]), ("b.jsonl", order[half:])):
        (folder / name).write_text("".join(json.dumps({"text": docs[i]}) + "\n" for i in part))
    return folder


def flags(corpus, out):
    return ["prepare", "--input", str(corpus), "--out", str(out), "--tokenizer", "bytes",
            "--workers", "1", "--shard-tokens", "20000"]


def one_process(corpus, out):
    return prepare([corpus], out, config=PrepareConfig(workers=1, shard_tokens=20000), progress=False)


def assert_same_output(a, b):
    names = sorted(p.name for p in a.iterdir() if p.name not in ("lock", "report.json"))
    assert names == sorted(p.name for p in b.iterdir() if p.name not in ("lock", "report.json"))
    assert len([n for n in names if n.startswith("train_")]) > 1          # several shards
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    reports = [json.loads((x / "report.json").read_text()) for x in (a, b)]
    for r in reports:
        del r["seconds"]
    assert reports[0] == reports[1]


def test_files_split_contiguously_by_bytes(tmp_path):
    files = []
    for k, size in enumerate([50, 10, 10, 30, 0, 100]):
        files.append(tmp_path / f"{k}.txt")
        files[-1].write_bytes(b"x" * size)
    for n in (1, 2, 3, 7):
        shares = [split_files(files, FakeRanks(r, n)) for r in range(n)]
        assert sum(shares, []) == files                                  # in order, each once
    assert [len(split_files(files, FakeRanks(r, 2))) for r in range(2)] == [4, 2]   # cut at 100
    assert split_files(files, Ranks()) == files


class FakeRanks:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size


def test_a_jsonl_file_is_cut_at_line_starts(tmp_path):
    """Every line once, in order, whichever bytes the cuts fall on (a line start, a newline,
    inside a line, inside a long line); the file counts as read once."""
    lines = [json.dumps({"text": "x" * n}) + "\n" for n in [0, 5, 1, 300, 2, 2, 40, 0, 7]]
    lines.insert(3, "\n")                                                # a blank line
    path = tmp_path / "one.jsonl"
    path.write_text("".join(lines))
    other = tmp_path / "two.txt"
    other.write_text("a text file")
    whole = [d.text for d in read_documents([path, other], SourceStats())]
    for n in range(1, 12):
        stats, texts = SourceStats(), []
        for r in range(n):
            texts += [d.text for d in read_documents(split_files([path, other], FakeRanks(r, n)), stats)]
        assert texts == whole and stats.files_read == 2, n


def test_merged_report_sums_the_ranks():
    a, b = Report(), Report()
    for report, reasons in ((a, ["too_few_words"]), (b, ["too_few_words", "empty"])):
        for reason in reasons:
            report.read(10)
            report.drop(reason, 10)
        report.read(5)
        report.keep(5)
    b.files["problems"], b.files["examples"] = {"unreadable": 1}, {"unreadable": ["x"]}
    merged = Report.merged([a.as_dict(), b.as_dict()])
    assert merged.documents == {"read": 5, "kept": 2, "dropped": {"too_few_words": 2, "empty": 1}}
    assert merged.bytes["read"] == 40 and merged.files["examples"] == {"unreadable": ["x"]}


@needs_mpi
def test_two_ranks_write_the_one_process_output(corpus, tmp_path):
    report = one_process(corpus, tmp_path / "one")
    assert report["documents"]["dropped"]["near_duplicate"] > 0
    assert report["documents"]["dropped"]["exact_duplicate"] >= 20
    done, _ = launch(2, ["tinyllm", *flags(corpus, tmp_path / "two")], script="-m", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("documents:") == 1                         # rank 0 alone prints
    assert_same_output(tmp_path / "one", tmp_path / "two")
    assert not (tmp_path / "two" / ".prepare-work").exists()


@needs_mpi
@pytest.mark.parametrize("rank", [0, 1])
def test_a_failed_rank_stops_the_job_and_a_rerun_resumes(corpus, tmp_path, rank):
    one_process(corpus, tmp_path / "one")
    out = tmp_path / "two"
    done, _ = launch(2, [FAULTY, str(rank), *flags(corpus, out)], script="-c", timeout=180)
    assert done.returncode != 0 and f"rank {rank} gives up" in done.stderr
    assert not (out / "manifest.json").exists()
    state = json.loads((out / ".prepare-work" / "state.json").read_text())
    assert state["stage"] == "planned"
    done, _ = launch(2, ["tinyllm", *flags(corpus, out)], script="-m", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming an interrupted run after its 'planned' stage" in done.stderr
    assert_same_output(tmp_path / "one", out)
    done, _ = launch(2, ["tinyllm", *flags(corpus, out)], script="-m", timeout=180)
    assert done.returncode == 0 and "nothing to do" in done.stderr, done.stderr[-3000:]


@needs_mpi
def test_one_big_file_is_shared_by_the_ranks(corpus, tmp_path):
    single = tmp_path / "all.jsonl"
    single.write_text("".join((corpus / name).read_text() for name in ("a.jsonl", "b.jsonl")))
    one_process(single, tmp_path / "one")
    assert len(split_files([single], FakeRanks(1, 2))) == 1               # rank 1 reads a piece
    done, _ = launch(2, ["tinyllm", *flags(single, tmp_path / "two")], script="-m", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_output(tmp_path / "one", tmp_path / "two")


@needs_mpi
def test_ranks_with_different_options_stop_before_any_work(corpus, tmp_path):
    done, seconds = launch(2, [ODD_RANK, *flags(corpus, tmp_path)], script="-c", timeout=120)
    assert done.returncode != 0
    assert "rank 1 of 2 sees a different run key" in done.stderr, done.stderr[-2000:]
    assert not list(tmp_path.glob("*.bin")) and not (tmp_path / "manifest.json").exists()
