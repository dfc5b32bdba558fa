"""Domain sources: each turns a domain spec from params.yaml into a stream of text documents.

- builtin: real text that installs with the project (see builtin.py), so the default runs offline.
- files:   local globs: text (a file is one document by default; `document: paragraphs | lines`), or
           json/jsonl/parquet rows, streamed through `datasets.load_dataset(..., streaming=True)`.
- hf:      a Hugging Face hub dataset, streamed (needs a network; nothing is downloaded whole); a local
           dataset folder takes the same path.
- toy:     tiny synthetic domains with clearly different statistics, for tests and CI only.

Every source may stop early at a budget (`max_documents`, `max_read_chars`): reading stops there, in the
source's own order, so a domain of a large hub dataset costs only what it uses.
"""
from __future__ import annotations

import glob
import os
import random
from typing import Iterable, Iterator

from sparsecl.data import builtin
from sparsecl.errors import DataSourceError, EmptyDomainError

BUILTIN_DOMAINS = tuple(builtin.LOADERS)
SOURCES = ("builtin", "files", "hf", "toy")
TEXT_DOCUMENTS = ("file", "paragraphs", "lines")  # what one document of a text file is
ARROW_BATCH = 1024  # rows per Arrow batch of a streamed json/parquet/hf source


# A domain's read budget: at most this many non-empty documents / characters (0 or absent: no limit).
BUDGET_KEYS = ("max_documents", "max_read_chars")


class DocumentStream:
    """One domain's non-empty documents, read lazily and once. While it is read, `provenance` says where
    they came from and `read` counts what was taken (documents, characters), skipped as empty
    (whitespace only) and whether a budget stopped the reading."""

    def __init__(self, name: str, spec: dict, seed: int):
        self.name, self.spec, self.seed = name, spec, seed
        self.key = f"data.domains.{name}"
        self._provenance: dict = {}
        self.read = {"documents": 0, "chars": 0, "empty": 0, "budget_reached": False}

    def __iter__(self) -> Iterator[str]:
        spec, key = self.spec, self.key
        max_docs, max_chars = spec.get("max_documents", 0), spec.get("max_read_chars", 0)
        for doc in self._raw():
            if not doc.strip():
                self.read["empty"] += 1
                continue
            self.read["documents"] += 1
            self.read["chars"] += len(doc)
            yield doc
            # Checked after the document is handed on, so the source is not asked for one more.
            if (max_docs and self.read["documents"] >= max_docs) or (max_chars and self.read["chars"] >= max_chars):
                self.read["budget_reached"] = True
                return
        if not self.read["documents"]:
            raise EmptyDomainError(f"{key}: source {spec['source']!r} produced no non-empty documents "
                                   f"({self._provenance}); check the spec")

    def _raw(self) -> Iterable[str]:
        spec, key, source = self.spec, self.key, self.spec["source"]
        if source == "builtin":
            docs, prov = builtin.LOADERS[self.name](self.seed)
        elif source == "toy":
            docs, prov = toy_documents(self.name, spec["docs"], spec.get("seed", self.seed)), {"generator": "toy"}
        elif source == "files":
            docs, prov = files_documents(key, spec["paths"], spec.get("format", "text"), spec.get("text_field", "text"),
                                         spec.get("document", "file"))
        elif source == "hf":
            docs, prov = hf_documents(key, spec["dataset"], spec.get("config"), spec["split"],
                                      spec.get("text_field", "text"))
        else:  # params validation rejects this first; kept for direct library use
            raise ValueError(f"{key}.source: unknown source {source!r}, allowed: {', '.join(SOURCES)}")
        self._provenance = prov  # a dict the source may still fill in while it is read
        return docs

    @property
    def provenance(self) -> dict:
        return {"source": self.spec["source"], **self._provenance}


def load_documents(name: str, spec: dict, seed: int) -> tuple[list[str], dict]:
    """All of one domain's non-empty documents in a list, with their provenance (small domains, tests)."""
    stream = DocumentStream(name, spec, seed)
    docs = list(stream)
    return docs, stream.provenance


def _reason(e: Exception) -> str:
    """The first line of a library's error, with its type: what a one-line message can carry."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def files_documents(key: str, patterns: list[str], fmt: str, text_field: str,
                    document: str = "file") -> tuple[Iterator[str], dict]:
    files = sorted({f for p in patterns for f in glob.glob(p, recursive=True)})
    if not files:
        raise DataSourceError(f"{key}: no file matches {key}.paths {patterns} (relative paths are read from "
                              f"{os.getcwd()}); fix the paths or add the files")
    prov = {"files": len(files), "format": fmt}
    if fmt == "text":
        prov["document"] = document
        docs = _text_documents(files, document)
    else:
        import datasets

        def fail(e):
            return DataSourceError(f"{key}: its {len(files)} file(s) cannot be read as {key}.format {fmt!r} "
                                   f"({_reason(e)}); fix the files or the format")
        try:
            ds = datasets.load_dataset(fmt, data_files=files, split="train", streaming=True)
        except Exception as e:  # the library fails in many ways on a malformed file; each is the user's to fix
            raise fail(e) from e
        docs = _rows(key, ds, text_field, fail)
    return _note_replacements(docs, patterns, prov), prov


def _text_documents(files: list[str], document: str) -> Iterator[str]:
    """Text files read one at a time, a byte that is not UTF-8 read as U+FFFD instead of failing the domain.
    `document`: a whole file, or each blank-line-separated paragraph, or each line."""
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as fh:
            if document == "file":
                yield fh.read()
            elif document == "lines":
                for line in fh:
                    yield line.rstrip("\n")
            else:
                para: list[str] = []
                for line in fh:
                    if line.strip():
                        para.append(line)
                    elif para:
                        yield "".join(para).rstrip("\n")
                        para = []
                if para:
                    yield "".join(para).rstrip("\n")


def _note_replacements(docs: Iterable[str], patterns: list[str], prov: dict) -> Iterator[str]:
    replaced = 0
    for d in docs:
        replaced += "\ufffd" in d
        yield d
    if replaced:
        print(f"[tokenize] note: {replaced} documents of {patterns} contain U+FFFD (what bytes that are not "
              f"UTF-8 are read as)", flush=True)
        prov["documents_with_replacement_char"] = replaced


def hf_documents(key: str, dataset: str, config: str | None, split: str, text_field: str) -> tuple[Iterator[str], dict]:
    """The dataset streamed (`streaming=True`): rows arrive as they are read, and reading stops where the
    stream's consumer stops, so a budget smaller than the dataset downloads only what it uses."""
    import datasets

    which = f"config {config!r}, split {split!r}" if config else f"split {split!r}"

    def fail(e):
        return DataSourceError(f"{key}: the hf dataset {dataset!r} ({which}) cannot be "
                               f"loaded ({_reason(e)}); check the network, {key}.dataset, .config and .split, or "
                               f"use a local copy (a dataset folder as {key}.dataset, or source: files)")
    try:
        ds = datasets.load_dataset(dataset, config, split=split, streaming=True)
    except Exception as e:  # no network, an unknown or gated dataset, a wrong config or split
        raise fail(e) from e
    return _rows(key, ds, text_field, fail), {"dataset": dataset, "config": config or "", "split": split,
                                               "datasets_version": datasets.__version__}


def _rows(key: str, ds, text_field: str, fail) -> Iterator[str]:
    """The text column of a streamed dataset, batch by batch as Arrow tables. Arrow keeps json/parquet
    strings that are not valid UTF-8 as they are; they are decoded leniently (U+FFFD) rather than fail deep
    inside pyarrow. A missing row value is skipped, as an empty document."""
    import pyarrow as pa

    batches = iter(ds.with_format("arrow").iter(batch_size=ARROW_BATCH))
    while True:
        try:
            table = next(batches)
        except StopIteration:
            return
        except Exception as e:  # a malformed file, or a network failure mid-stream
            raise fail(e) from e
        if text_field not in table.column_names:
            raise DataSourceError(f"{key}: text_field {text_field!r} is not a column of its data; set "
                                  f"{key}.text_field to one of {table.column_names}")
        col = table.column(text_field)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            yield from (b.decode("utf-8", "replace") if b is not None else ""
                        for b in col.cast(pa.large_binary()).to_pylist())
        else:
            yield from (str(x) if x is not None else "" for x in col.to_pylist())


def toy_documents(name: str, n_docs: int, seed: int) -> list[str]:
    """Documents over a small domain-specific alphabet and word list: domains differ clearly."""
    rng = random.Random(f"{name}:{seed}")
    letters = rng.sample("abcdefghijklmnopqrstuvwxyz", 6)
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 6))) for _ in range(40)]
    nxt = {w: rng.sample(words, 3) for w in words}  # sparse bigram structure
    docs = []
    for _ in range(n_docs):
        w, out = rng.choice(words), []
        for _ in range(rng.randint(20, 60)):
            out.append(w)
            w = rng.choice(nxt[w])
        docs.append(" ".join(out) + ".")
    return docs
