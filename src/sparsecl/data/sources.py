"""Domain sources: each turns a domain spec from params.yaml into a list of text documents.

- builtin: real text that installs with the project (see builtin.py), so the default runs offline.
- files:   local globs (text/json/parquet) through `datasets.load_dataset`.
- hf:      a Hugging Face hub dataset (needs a network); a local dataset folder takes the same path.
- toy:     tiny synthetic domains with clearly different statistics, for tests and CI only.
"""
from __future__ import annotations

import glob
import os
import random

from sparsecl.data import builtin
from sparsecl.errors import DataSourceError, EmptyDomainError

BUILTIN_DOMAINS = tuple(builtin.LOADERS)
SOURCES = ("builtin", "files", "hf", "toy")


def load_documents(name: str, spec: dict, seed: int) -> tuple[list[str], dict]:
    """Return (documents, provenance) for one domain; refuse an empty domain."""
    source, key = spec["source"], f"data.domains.{name}"
    if source == "builtin":
        docs, prov = builtin.LOADERS[name](seed)
    elif source == "toy":
        docs, prov = toy_documents(name, spec["docs"], spec.get("seed", seed)), {"generator": "toy"}
    elif source == "files":
        docs, prov = files_documents(key, spec["paths"], spec.get("format", "text"), spec.get("text_field", "text"))
    elif source == "hf":
        docs, prov = hf_documents(key, spec["dataset"], spec.get("config"), spec["split"],
                                  spec.get("text_field", "text"))
    else:  # params validation rejects this first; kept for direct library use
        raise ValueError(f"{key}.source: unknown source {source!r}, allowed: {', '.join(SOURCES)}")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise EmptyDomainError(f"data.domains.{name}: source {source!r} produced no non-empty documents "
                               f"({prov}); check the spec")
    return docs, {"source": source, **prov}


def _reason(e: Exception) -> str:
    """The first line of a library's error, with its type: what a one-line message can carry."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}".rstrip(": ")


def files_documents(key: str, patterns: list[str], fmt: str, text_field: str) -> tuple[list[str], dict]:
    files = sorted({f for p in patterns for f in glob.glob(p, recursive=True)})
    if not files:
        raise DataSourceError(f"{key}: no file matches {key}.paths {patterns} (relative paths are read from "
                              f"{os.getcwd()}); fix the paths or add the files")
    import datasets

    # Text is decoded while reading: a byte that is not UTF-8 becomes U+FFFD instead of failing the domain.
    kwargs = {"encoding_errors": "replace"} if fmt == "text" else {}
    try:
        ds = datasets.load_dataset(fmt, data_files=files, split="train", **kwargs)
    except Exception as e:  # the library fails in many ways on a malformed file; each is the user's to fix
        raise DataSourceError(f"{key}: its {len(files)} file(s) cannot be read as {key}.format {fmt!r} "
                              f"({_reason(e)}); fix the files or the format") from e
    docs = _column(key, ds, text_field)
    prov = {"files": len(files), "format": fmt}
    if (replaced := sum("\ufffd" in d for d in docs)):
        print(f"[tokenize] note: {replaced} documents of {patterns} contain U+FFFD (what bytes that are not "
              f"UTF-8 are read as)", flush=True)
        prov["documents_with_replacement_char"] = replaced
    return docs, prov


def hf_documents(key: str, dataset: str, config: str | None, split: str, text_field: str) -> tuple[list[str], dict]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset, config, split=split)
    except Exception as e:  # no network, an unknown or gated dataset, a wrong config or split
        which = f"config {config!r}, split {split!r}" if config else f"split {split!r}"
        raise DataSourceError(f"{key}: the hf dataset {dataset!r} ({which}) cannot be "
                              f"loaded ({_reason(e)}); check the network, {key}.dataset, .config and .split, or "
                              f"use a local copy (a dataset folder as {key}.dataset, or source: files)") from e
    return _column(key, ds, text_field), {"dataset": dataset, "config": config or "", "split": split,
                                          "datasets_version": datasets.__version__}


def _column(key: str, ds, text_field: str) -> list[str]:
    import pyarrow as pa

    if text_field not in ds.column_names:
        raise DataSourceError(f"{key}: text_field {text_field!r} is not a column of its data; set "
                              f"{key}.text_field to one of {ds.column_names}")
    col = ds.data.column(text_field)
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        # Arrow keeps json/parquet strings that are not valid UTF-8 as they are; decode them leniently
        # (U+FFFD) rather than fail deep inside pyarrow.
        return [b.decode("utf-8", "replace") for b in col.cast(pa.large_binary()).to_pylist() if b is not None]
    return [str(x) for x in col.to_pylist() if x is not None]


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
