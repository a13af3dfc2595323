"""The prepare run's report: documents and bytes kept and dropped, per reason.

`Report` counts as the pipeline goes: every document read is either kept or
dropped for exactly one reason, so read = kept + sum(dropped) for documents
and for bytes (a document's bytes are its stored size, before cleaning).
It round-trips through a dict, because a resumed run picks up the counts
of the stages that had finished. `format()` is the text printed at the end;
report.json holds `as_dict()`. The progress line while it runs is
tinyllm/progress.py's. Not the pipeline itself: read prepare.py.
"""


class Report:
    """Counts of one prepare run."""

    def __init__(self, d=None):
        d = d or {}
        self.documents = d.get("documents", {"read": 0, "kept": 0, "dropped": {}})
        self.bytes = d.get("bytes", {"read": 0, "kept": 0, "dropped": {}})
        self.files = d.get("files", {"read": 0, "problems": {}, "examples": {}})
        self.tokens = d.get("tokens", {"train": 0, "val": 0})
        self.shards = d.get("shards", {"train": 0, "val": 0})
        self.split_documents = d.get("split_documents", {"train": 0, "val": 0})
        self.seconds = d.get("seconds", {})
        self.notes = d.get("notes", [])

    @classmethod
    def merged(cls, dicts):
        """One report of the filter stages of several ranks (their counts summed, in rank order)."""
        out = cls(dicts[0])
        for d in dicts[1:]:
            for mine, theirs in ((out.documents, d["documents"]), (out.bytes, d["bytes"])):
                mine["read"] += theirs["read"]
                mine["kept"] += theirs["kept"]
                for reason, n in theirs["dropped"].items():
                    mine["dropped"][reason] = mine["dropped"].get(reason, 0) + n
            files = d["files"]
            out.files["read"] += files["read"]
            for kind, n in files["problems"].items():
                out.files["problems"][kind] = out.files["problems"].get(kind, 0) + n
                shown = out.files["examples"].setdefault(kind, [])
                shown.extend(files["examples"][kind][:5 - len(shown)])
            for stage, seconds in d["seconds"].items():     # the ranks ran side by side
                out.seconds[stage] = max(out.seconds.get(stage, 0), seconds)
        return out

    def read(self, nbytes):
        self.documents["read"] += 1
        self.bytes["read"] += nbytes

    def drop(self, reason, nbytes, count=1):
        for table, amount in ((self.documents, count), (self.bytes, nbytes)):
            table["dropped"][reason] = table["dropped"].get(reason, 0) + amount

    def undo_keep(self, count, nbytes):
        """Documents counted as kept by an earlier stage that a later one dropped."""
        self.documents["kept"] -= count
        self.bytes["kept"] -= nbytes

    def keep(self, nbytes):
        self.documents["kept"] += 1
        self.bytes["kept"] += nbytes

    def as_dict(self):
        return {"documents": self.documents, "bytes": self.bytes, "files": self.files,
                "tokens": self.tokens, "shards": self.shards,
                "split_documents": self.split_documents, "seconds": self.seconds,
                "notes": self.notes}

    def format(self):
        d, b = self.documents, self.bytes
        lines = [f"documents: {d['read']:,} read, {d['kept']:,} kept "
                 f"({_share(d['kept'], d['read'])}); bytes: {_mb(b['read'])} read, "
                 f"{_mb(b['kept'])} kept ({_share(b['kept'], b['read'])})"]
        if d["dropped"]:
            lines.append("dropped:")
            width = max(map(len, d["dropped"]))
            for reason, n in sorted(d["dropped"].items(), key=lambda kv: (-kv[1], kv[0])):
                size = _mb(b["dropped"].get(reason, 0))
                lines.append(f"  {reason:<{width}}  {n:>9,} docs  {size:>10}")
        f = self.files
        problems = ", ".join(f"{n} {kind}" for kind, n in sorted(f["problems"].items()))
        lines.append(f"files: {f['read']:,} read" + (f"; skipped: {problems}" if problems else ""))
        for kind, paths in sorted(f["examples"].items()):
            more = " ..." if f["problems"][kind] > len(paths) else ""
            lines.append(f"  {kind}: {', '.join(paths)}{more}")
        lines.append(f"tokens: {self.tokens['train']:,} train in {self.shards['train']} shard(s) "
                     f"({self.split_documents['train']:,} docs), {self.tokens['val']:,} val in "
                     f"{self.shards['val']} shard(s) ({self.split_documents['val']:,} docs)")
        rates = {k: f" ({b['read'] / 1e6 / v:.1f} MB/s of input)" if v > 0 else ""
                 for k, v in self.seconds.items()}
        lines.append("time: " + ", ".join(f"{k} {v:.1f}s{rates[k]}" for k, v in self.seconds.items()))
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _share(part, whole):
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _mb(n):
    return f"{n / 1e6:,.2f} MB"

