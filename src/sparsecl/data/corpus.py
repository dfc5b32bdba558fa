"""One domain's documents on disk, deduplicated, capped and split, in bounded memory.

A domain is read once, as a stream (sources.DocumentStream). Its documents are gathered into shards of
at most `shard_chars` characters, each deduplicated and sorted by content hash in memory and written to
disk; the shards are then merged (a heap over one record per shard). The merged order is the documents'
content-hash order, the order the whole domain sorted in memory would have, so the number of shards does
not change the result: the same documents give the same files whatever the shard size.

The merge drops repeats (equal documents are adjacent), applies `data.max_chars` as a content-ordered
prefix, and sends each document to train or val by a second hash of its content (a duplicate lands in one
split only). Each split is written as a `DocFile`: length-prefixed UTF-8 documents and their offsets, read
in order for encoding and by index for the tokenizer's sample.
"""
from __future__ import annotations

import hashlib
import heapq
import struct
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

SHARD_CHARS = 1 << 24  # characters sorted in memory at once: ~16M, tens of MB of Python strings
_RECORD = struct.Struct("<QQQ")  # order key, characters, bytes
_LENGTH = struct.Struct("<Q")
_BUFFER = 1 << 20


def hash_key(salt: bytes, doc: bytes) -> int:
    """A document's 64-bit position from its content: the same text always lands in the same place."""
    return int.from_bytes(hashlib.sha1(salt + b"\0" + doc).digest()[:8], "big")


def to_bytes(doc: str) -> bytes:
    # "replace": a lone surrogate (not encodable) must not stop the domain; it becomes "?"
    return doc.encode("utf-8", "replace")


def _write_shard(docs: dict[bytes, int], path: Path) -> None:
    with open(path, "wb", buffering=_BUFFER) as fh:
        for key, doc in sorted((hash_key(b"order", d), d) for d in docs):
            fh.write(_RECORD.pack(key, docs[doc], len(doc)))
            fh.write(doc)


def _read_shard(path: Path) -> Iterator[tuple[int, bytes, int]]:
    with open(path, "rb", buffering=_BUFFER) as fh:
        while head := fh.read(_RECORD.size):
            key, chars, size = _RECORD.unpack(head)
            yield key, fh.read(size), chars


def spill(docs: Iterable[str], folder: Path, shard_chars: int = SHARD_CHARS) -> list[Path]:
    """Write `docs` as sorted, internally deduplicated shards under `folder`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[Path] = []
    pending: dict[bytes, int] = {}  # document -> its length in characters
    chars = 0

    def flush():
        nonlocal pending, chars
        if pending:
            shards.append(folder / f"shard{len(shards):05d}")
            _write_shard(pending, shards[-1])
        pending, chars = {}, 0

    for doc in docs:
        raw = to_bytes(doc)
        if raw not in pending:
            pending[raw] = len(doc)
            chars += len(doc)
            if chars >= shard_chars:
                flush()
    flush()
    return shards


def merged(shards: list[Path]) -> Iterator[tuple[int, bytes, int]]:
    """All shards' records in (order key, content) order, a repeated document once."""
    last = None
    for key, doc, chars in heapq.merge(*(_read_shard(p) for p in shards)):
        if (key, doc) != last:
            last = (key, doc)
            yield key, doc, chars


def select(records: Iterable[tuple[int, bytes, int]], max_chars: int, val_fraction: float,
           counts: dict) -> Iterator[tuple[str, bytes, int]]:
    """(split, document, characters) in content-hash order: the first documents up to `max_chars`
    characters (0: all), each sent to val when its split hash falls below `val_fraction`. `counts` gets
    `distinct` and what the cap cut (`cut_documents`, `cut_chars`)."""
    total = 0
    counts.update(distinct=0, cut_documents=0, cut_chars=0)
    for _, doc, chars in records:
        counts["distinct"] += 1
        if max_chars and total >= max_chars:
            counts["cut_documents"] += 1
            counts["cut_chars"] += chars
            continue
        total += chars
        yield ("val" if hash_key(b"split", doc) / 2**64 < val_fraction else "train"), doc, chars


class DocFile:
    """Documents of one split on disk: `<stem>.docs` (each a length and its UTF-8 bytes) and `<stem>.idx`
    (uint64 offset of each document), written in order, then read in order or by index."""

    def __init__(self, stem: Path):
        self.docs, self.idx = stem.with_suffix(".docs"), stem.with_suffix(".idx")
        self.documents = self.chars = 0

    def writer(self) -> "_Writer":
        return _Writer(self)

    def __len__(self) -> int:
        return self.documents

    def __iter__(self) -> Iterator[str]:
        with open(self.docs, "rb", buffering=_BUFFER) as fh:
            while head := fh.read(_LENGTH.size):
                yield fh.read(_LENGTH.unpack(head)[0]).decode("utf-8")

    def reader(self) -> "_Reader":
        return _Reader(self)


class _Writer:
    def __init__(self, f: DocFile):
        self.f = f
        self.docs, self.idx = open(f.docs, "wb", buffering=_BUFFER), open(f.idx, "wb", buffering=_BUFFER)
        self.offset = 0

    def add(self, doc: bytes, chars: int) -> None:
        self.idx.write(_LENGTH.pack(self.offset))
        self.docs.write(_LENGTH.pack(len(doc)))
        self.docs.write(doc)
        self.offset += _LENGTH.size + len(doc)
        self.f.documents += 1
        self.f.chars += chars

    def close(self) -> None:
        self.docs.close()
        self.idx.close()


class _Reader:
    """Random access by document index (the offsets memory-mapped, not loaded)."""

    def __init__(self, f: DocFile):
        self.offsets = np.memmap(f.idx, dtype="<u8", mode="r") if f.documents else np.zeros(0, "<u8")
        self.fh = open(f.docs, "rb")

    def __getitem__(self, i: int) -> str:
        self.fh.seek(int(self.offsets[i]))
        return self.fh.read(_LENGTH.unpack(self.fh.read(_LENGTH.size))[0]).decode("utf-8")

    def close(self) -> None:
        self.fh.close()


def split_domain(docs: Iterable[str], work: Path, max_chars: int, val_fraction: float,
                 shard_chars: int = SHARD_CHARS) -> tuple[dict[str, DocFile], dict]:
    """Spill, merge and split one domain's documents under `work`; return ({split: DocFile}, counts)."""
    shards = spill(docs, work / "shards", shard_chars)
    files = {s: DocFile(work / s) for s in ("train", "val")}
    writers = {s: f.writer() for s, f in files.items()}
    counts: dict = {}
    try:
        for split, doc, chars in select(merged(shards), max_chars, val_fraction, counts):
            writers[split].add(doc, chars)
    finally:
        for w in writers.values():
            w.close()
    for p in shards:
        p.unlink()
    return files, counts
