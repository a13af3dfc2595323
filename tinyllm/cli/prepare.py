"""`python -m tinyllm prepare`: raw text in, clean deduplicated token shards out.

    python -m tinyllm prepare --input data/ more.jsonl.gz --out prepared/ [--languages en ...]
    mpirun -np 4 python -m tinyllm prepare ...     # the same output, the files split across ranks

Under mpirun rank 0 trains (or loads) the tokenizer and sends it to the others, and
alone prints; an error on any rank stops them all.

This file only parses flags and prints; the pipeline is tinyllm/curate/prepare.py.
"""
import argparse
import dataclasses
import pathlib
import sys

from tinyllm import distributed, tokenizer as tokenizers
from tinyllm.curate.clean import CleanConfig
from tinyllm.curate.prepare import PrepareConfig, input_texts, inputs_fingerprint, prepare
from tinyllm.curate.report import Report
from tinyllm.errors import DataError, DistributedError, OutputFolderError, TokenizerError
from tinyllm.folder_lock import lock_folder


def build_parser():
    p = argparse.ArgumentParser(
        prog="prepare", description="Turn raw text (.txt, .md, .jsonl with a 'text' field, "
        ".gz of those, or folders of them) into clean, deduplicated, language-filtered token "
        "shards for `train --data OUT`. Re-running resumes an interrupted run.")
    p.add_argument("--input", nargs="+", required=True, action="extend", metavar="PATH",
                   help="files or folders to read")
    p.add_argument("--out", required=True, help="output folder for shards, manifest and report")
    p.add_argument("--tokenizer", default="bpe",
                   help="'bpe' (default: a BPE vocabulary trained once on the inputs and cached "
                        "in OUT), 'bytes', or a .bpe / .tiktoken file")
    p.add_argument("--vocab-size", type=int, default=8192,
                   help="vocabulary size of the trained BPE tokenizer (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    for f in dataclasses.fields(PrepareConfig):
        if f.name == "clean":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type is bool:
            flag = "--no-" + f.name if f.default else flag
            p.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true",
                           help=f.metadata["help"])
        elif f.name == "languages":
            p.add_argument(flag, nargs="+", default=None, metavar="LABEL", help=f.metadata["help"])
        else:
            p.add_argument(flag, type=f.type, default=f.default,
                           help=f"{f.metadata['help']} (default: %(default)s)")
    group = p.add_argument_group("quality filters (0 turns one off; see tinyllm/curate/clean.py)")
    for f in dataclasses.fields(CleanConfig):
        group.add_argument("--" + f.name.replace("_", "-"), type=f.type, default=f.default,
                           help=f"{f.metadata['help']} (default: %(default)s)")
    return p


def main(argv=None):
    args = vars(build_parser().parse_args(argv))
    out = args.pop("out")
    try:
        comm = distributed.import_mpi().COMM_WORLD if distributed.launched_ranks() > 1 else None
        main_rank = comm is None or comm.Get_rank() == 0
        clean = CleanConfig(**{f.name: args.pop(f.name) for f in dataclasses.fields(CleanConfig)})
        inputs, progress = args.pop("input"), not args.pop("no_progress") and main_rank
        spec, vocab_size = args.pop("tokenizer"), args.pop("vocab_size")
        tokenizer = None
        if main_rank:
            lock_folder(out, "prepare")   # before the tokenizer is trained into it
            tokenizer = tokenizers.load(spec, lambda: input_texts(inputs), cache_dir=out,
                                        cache_key=inputs_fingerprint(inputs),
                                        vocab_size=vocab_size, progress=progress)
        if comm is not None:               # one tokenizer for every rank: rank 0's
            tokenizer = tokenizers.from_dict(comm.bcast(tokenizer and tokenizer.to_dict(), root=0))
        report = prepare(inputs, out, tokenizer, PrepareConfig(clean=clean, **args), progress, comm)
    except (DataError, TokenizerError, OutputFolderError, DistributedError) as e:
        print(f"error{distributed.rank_label()}: {e}", file=sys.stderr)
        distributed.abort_all(1)   # under mpirun the other ranks stop instead of waiting
        return 1
    except OSError as e:   # the disk filled, or the folder became read-only, mid-run
        print(f"error{distributed.rank_label()}: cannot write {e.filename or out}: "
              f"{e.strerror or e}", file=sys.stderr)
        distributed.abort_all(1)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume", file=sys.stderr)
        return 130
    if main_rank:
        print(Report(report).format())
        print(f"report: {pathlib.Path(out) / 'report.json'}; "
              f"train with: python examples/train.py --data {out}")
    return 0
