"""Tokenize domains: document-level train/val split, byte-level BPE, flat token arrays + manifest.

Layout of the output folder (what the `tokenize` stage writes):
    tokenizer.json              byte-level BPE trained on a balanced, seeded sample of all domains
    <domain>.<split>.bin        flat uint16/uint32 token ids, documents separated by <|endoftext|>
    manifest.json               document and token counts, what was dropped or cut, provenance, sha256 of
                                every array

Memory does not grow with the corpus: each domain is streamed from its source into sorted shards on disk
and merged into its splits (corpus.py), the tokenizer is trained on a sample of bounded size, and each split
is encoded in batches appended to its array. Everything is written in a work folder beside the output and
moved into it only when every domain is done, the manifest last, so a killed run leaves either the last
complete output or none (TokenData refuses a folder without its manifest), and a rerun starts afresh.
"""
from __future__ import annotations

import hashlib
import random
import shutil
from array import array
from pathlib import Path
from typing import Iterable

import numpy as np

from sparsecl.data.corpus import SHARD_CHARS, DocFile, split_domain
from sparsecl.data.sources import BUDGET_KEYS, DocumentStream
from sparsecl.errors import EmptyDomainError, IntegrityError
from sparsecl.io import read_json, sha256_file, write_json

EOT = "<|endoftext|>"
SPLITS = ("train", "val")
MIN_EVAL_TOKENS = 1024  # below this a domain's loss is too noisy to compare arms on
ENCODE_CHARS = 1 << 20  # characters per encode_batch call: enough to keep every core busy, a few MB of ids


def _sample(train: DocFile, sample_chars: int, seed: str) -> list[str]:
    """The first `sample_chars` characters of the split's documents in a seeded shuffled order. The order is
    that of random.shuffle on the list of documents, computed on their indices (8 bytes per document)."""
    order = array("q", range(len(train)))
    random.Random(seed).shuffle(order)
    reader, sample, total = train.reader(), [], 0
    try:
        for i in order:
            if total >= sample_chars:
                break
            piece = reader[i][: sample_chars - total]
            sample.append(piece)
            total += len(piece)
    finally:
        reader.close()
    return sample


def train_tokenizer(sample: list[str], vocab_size: int):
    """Byte-level BPE on the given text sample."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sample, trainer=trainer)
    return tok


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def encode_to(tok, docs: Iterable[str], path: Path, dtype) -> dict:
    """Encode `docs` in batches (the tokenizer's batch API, on every core) and append them to the flat
    array at `path`, each document followed by <|endoftext|>; return its token count and sha256."""
    eot, digest, tokens = tok.token_to_id(EOT), hashlib.sha256(), 0

    def flush(batch):
        nonlocal tokens
        ids: list[int] = []
        for enc in tok.encode_batch(batch):
            ids.extend(enc.ids)
            ids.append(eot)
        raw = np.asarray(ids, dtype=dtype).tobytes()
        fh.write(raw)
        digest.update(raw)
        tokens += len(ids)

    with open(path, "wb") as fh:
        batch, chars = [], 0
        for doc in docs:
            batch.append(doc)
            chars += len(doc)
            if chars >= ENCODE_CHARS:
                flush(batch)
                batch, chars = [], 0
        if batch:
            flush(batch)
    return {"tokens": tokens, "sha256": digest.hexdigest()}


def _created_dirs(folder: Path) -> list[Path]:
    """The folders (deepest first) that creating `folder` makes, so a refusal can leave none behind."""
    made = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        made.append(p)
    return made


def build(params: dict, out_dir: str | Path, shard_chars: int = SHARD_CHARS) -> dict:
    """Run the whole tokenize stage; return the manifest. `shard_chars` bounds the characters held in memory
    at once while a domain is split; it does not change the output."""
    out_dir = Path(out_dir)
    work = out_dir.parent / f".{out_dir.name}.work"
    shutil.rmtree(work, ignore_errors=True)  # what a killed run left
    made = _created_dirs(work.parent)
    work.mkdir(parents=True)
    try:
        manifest = _build(params, work, shard_chars)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "manifest.json").unlink(missing_ok=True)  # the old arrays stop being valid from here
        for f in ["tokenizer.json", *(f"{n}.{s}.bin" for n in manifest["domains"] for s in SPLITS)]:
            (work / f).replace(out_dir / f)
        write_json(out_dir / "manifest.json", manifest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for p in made:
            if p.exists() and not any(p.iterdir()):
                p.rmdir()
        raise
    shutil.rmtree(work)
    return manifest


def _build(params: dict, work: Path, shard_chars: int) -> dict:
    data, tcfg = params["data"], params["tokenizer"]
    names = list(dict.fromkeys(data["order"]))  # domains in use, in order, once each
    splits, entries = {}, {}
    for name in names:
        stream = DocumentStream(name, data["domains"][name], data["seed"])
        splits[name], counts = split_domain(stream, work / name, data["max_chars"], data["val_fraction"], shard_chars)
        kept = sum(len(f) for f in splits[name].values())
        entries[name] = {"provenance": stream.provenance,
                         "read": {**stream.read, "duplicates": stream.read["documents"] - counts["distinct"]},
                         "max_chars_cut": {"documents": counts["cut_documents"], "chars": counts["cut_chars"]}}
        for s in SPLITS:
            if not splits[name][s]:
                more = "raise data.max_chars" if counts["cut_documents"] else "add documents"
                raise EmptyDomainError(
                    f"data.domains.{name}: the {s} split is empty; documents are split whole, by content hash, and "
                    f"this domain has {kept} distinct document(s) in use; {more} or adjust data.val_fraction")
    sample = [piece for name in sorted(splits)
              for piece in _sample(splits[name]["train"], tcfg["sample_chars"], f"{data['seed']}:{name}")]
    tok = train_tokenizer(sample, tcfg["vocab_size"])
    del sample
    dtype = token_dtype(tok.get_vocab_size())
    # A small domain is evaluated on all of its val split (recorded, and said); a val split too small for
    # even one window is refused. The val splits are encoded and checked first, so a refusal comes early.
    arrays = {(name, "val"): encode_to(tok, splits[name]["val"], work / f"{name}.val.bin", dtype) for name in names}
    needed = min(data["eval_tokens"], MIN_EVAL_TOKENS)
    for name in names:
        have = arrays[name, "val"]["tokens"]
        if min(data["eval_tokens"], have - 1) < needed:
            raise EmptyDomainError(
                f"data.domains.{name}: its val split has {have} tokens, fewer than the "
                f"{needed + 1} needed for evaluation; raise data.val_fraction or data.max_chars")
    tok.save(str(work / "tokenizer.json"))
    manifest = {"vocab_size": tok.get_vocab_size(), "dtype": np.dtype(dtype).name, "eot": tok.token_to_id(EOT),
                "domains": {}}
    for name in names:
        entry = entries[name]
        for s in SPLITS:
            if s == "train":
                arrays[name, s] = encode_to(tok, splits[name][s], work / f"{name}.{s}.bin", dtype)
            entry[s] = {"documents": len(splits[name][s]), "chars": splits[name][s].chars, **arrays[name, s]}
        shutil.rmtree(work / name)  # the domain's documents, no longer needed
        entry["eval_tokens"] = min(data["eval_tokens"], entry["val"]["tokens"] - 1)
        _notes(name, entry, data)
        manifest["domains"][name] = entry
        print(f"[tokenize] {name:>10}: {entry['train']['documents']:6d} train docs {entry['train']['tokens']:9d} tokens"
              f" | {entry['val']['documents']:5d} val docs {entry['val']['tokens']:8d} tokens"
              f" | {entry['provenance']}", flush=True)
    return manifest


def _notes(name: str, entry: dict, data: dict) -> None:
    """Say what was dropped or cut: each is also in the manifest."""
    read, cut = entry["read"], entry["max_chars_cut"]
    if entry["eval_tokens"] < data["eval_tokens"]:
        print(f"[tokenize] note: {name} has {entry['val']['tokens']} val tokens, fewer than "
              f"data.eval_tokens={data['eval_tokens']}; it is evaluated on {entry['eval_tokens']}", flush=True)
    if read["duplicates"] or read["empty"]:
        print(f"[tokenize] note: {name}: of {read['documents'] + read['empty']} documents read, "
              f"{read['duplicates']} repeated an earlier one and {read['empty']} were empty; both are dropped",
              flush=True)
    if cut["documents"]:
        print(f"[tokenize] note: {name}: data.max_chars={data['max_chars']} cut {cut['documents']} documents "
              f"({cut['chars']} characters)", flush=True)
    budget = {k: v for k, v in data["domains"][name].items() if k in BUDGET_KEYS}
    if read["budget_reached"]:
        print(f"[tokenize] note: {name}: reading stopped at its budget after {read['documents']} documents "
              f"({read['chars']} characters)", flush=True)
    elif budget:
        print(f"[tokenize] note: {name}: the source ended before its budget {budget} was reached "
              f"({read['documents']} documents, {read['chars']} characters)", flush=True)


class TokenData:
    """Read-only view of the tokenize stage's output; every array is checked against its manifest hash."""

    def __init__(self, folder: str | Path, verify: bool = True):
        self.folder = Path(folder)
        try:
            self.manifest = read_json(self.folder / "manifest.json")
        except (OSError, ValueError) as e:
            raise IntegrityError(f"{self.folder}/manifest.json: cannot be read ({e}); rerun `dvc repro tokenize`") from e
        self.dtype = np.dtype(self.manifest["dtype"])
        self.vocab_size = self.manifest["vocab_size"]
        self._verify = verify
        self._arrays: dict[tuple[str, str], np.ndarray] = {}

    def meta(self, domain: str, split: str) -> dict:
        if domain not in self.manifest["domains"]:
            raise IntegrityError(f"{self.folder}/manifest.json: data.domains.{domain} is not in it (tokenized with "
                                 f"other params); rerun `dvc repro tokenize`")
        return self.manifest["domains"][domain][split]

    def array(self, domain: str, split: str) -> np.ndarray:
        key = (domain, split)
        if key not in self._arrays:
            path = self.folder / f"{domain}.{split}.bin"
            meta = self.meta(domain, split)
            if self._verify and (not path.exists() or sha256_file(path) != meta["sha256"]):
                raise IntegrityError(f"{path}: missing, or its content hash does not match manifest.json "
                                     f"(corrupted or truncated); rerun `dvc repro tokenize`")
            self._arrays[key] = np.memmap(path, dtype=self.dtype, mode="r")
        return self._arrays[key]

    def verify(self, domains: list[str]) -> None:
        """Check both splits of every domain against the manifest now: read lazily, a corrupted array of the
        last phase would be found only when that phase starts, after the earlier ones trained."""
        for domain in dict.fromkeys(domains):
            for split in SPLITS:
                self.array(domain, split)

    def require(self, domains: list[str], block_size: int) -> None:
        """Refuse, before any training, a domain too short for one training window (block_size + 2 tokens)
        or one evaluation window (block_size + 1): otherwise the stage would fail hours later, at that phase."""
        for domain in domains:
            for split, need in (("train", block_size + 2), ("val", block_size + 1)):
                have = self.meta(domain, split)["tokens"]
                if have < need:
                    raise EmptyDomainError(
                        f"data.domains.{domain}: its {split} split has {have} tokens, fewer than the {need} that "
                        f"one window of model.block_size={block_size} needs; add documents or lower model.block_size")
