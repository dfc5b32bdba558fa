"""Tokenize domains: document-level train/val split, byte-level BPE, flat token arrays + manifest.

Layout of the output folder (what the `tokenize` stage writes):
    tokenizer.json              byte-level BPE trained on a balanced, seeded sample of all domains
    <domain>.<split>.bin        flat uint16/uint32 token ids, documents separated by <|endoftext|>
    manifest.json               document and token counts, dtype, provenance, sha256 of every array
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np

from sparsecl.data.sources import load_documents
from sparsecl.errors import EmptyDomainError, IntegrityError
from sparsecl.io import atomic_path, read_json, sha256_bytes, sha256_file, write_json

EOT = "<|endoftext|>"
SPLITS = ("train", "val")
MIN_EVAL_TOKENS = 1024  # below this a domain's loss is too noisy to compare arms on


def _unit_hash(salt: str, doc: str) -> float:
    """A document's position in [0, 1), from its content: the same text always lands in the same place."""
    return int.from_bytes(hashlib.sha1(f"{salt}\0{doc}".encode("utf-8", "replace")).digest()[:8], "big") / 2**64


def select_and_split(docs: list[str], max_chars: int, val_fraction: float) -> dict[str, list[str]]:
    """Cap the domain at `max_chars` (a content-ordered prefix) and split by document hash (no leakage:
    a duplicated document lands in one split only)."""
    unique = sorted(set(docs), key=lambda d: _unit_hash("order", d))
    if max_chars:
        kept, total = [], 0
        for d in unique:
            if total >= max_chars:
                break
            kept.append(d)
            total += len(d)
        unique = kept
    split = {"train": [], "val": []}
    for d in unique:
        split["val" if _unit_hash("split", d) < val_fraction else "train"].append(d)
    return split


def train_tokenizer(splits: dict[str, dict[str, list[str]]], vocab_size: int, sample_chars: int, seed: int):
    """Byte-level BPE on an equal-size seeded sample of every domain's train split."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    sample = []
    for name in sorted(splits):
        docs = list(splits[name]["train"])
        random.Random(f"{seed}:{name}").shuffle(docs)
        total = 0
        for d in docs:
            if total >= sample_chars:
                break
            piece = d[: sample_chars - total]
            sample.append(piece)
            total += len(piece)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sample, trainer=trainer)
    return tok


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def encode(tok, docs: list[str], dtype) -> np.ndarray:
    eot = tok.token_to_id(EOT)
    ids: list[int] = []
    for enc in tok.encode_batch(docs):
        ids.extend(enc.ids)
        ids.append(eot)
    return np.asarray(ids, dtype=dtype)


def build(params: dict, out_dir: str | Path) -> dict:
    """Run the whole tokenize stage; return the manifest."""
    data, tcfg = params["data"], params["tokenizer"]
    out_dir = Path(out_dir)
    names = list(dict.fromkeys(data["order"]))  # domains in use, in order, once each
    splits, provenance = {}, {}
    for name in names:
        docs, provenance[name] = load_documents(name, data["domains"][name], data["seed"])
        splits[name] = select_and_split(docs, data["max_chars"], data["val_fraction"])
        kept = sum(len(splits[name][s]) for s in SPLITS)
        for s in SPLITS:
            if not splits[name][s]:
                more = "raise data.max_chars" if data["max_chars"] and kept < len(set(docs)) else "add documents"
                raise EmptyDomainError(
                    f"data.domains.{name}: the {s} split is empty; documents are split whole, by content hash, and "
                    f"this domain has {kept} distinct document(s) in use; {more} or adjust data.val_fraction")
    tok = train_tokenizer(splits, tcfg["vocab_size"], tcfg["sample_chars"], data["seed"])
    dtype = token_dtype(tok.get_vocab_size())
    # A small domain is evaluated on all of its val split (recorded, and said); a val split too small for
    # even one window is refused. All are checked before anything is written, so a refusal leaves no output.
    val = {name: encode(tok, splits[name]["val"], dtype) for name in names}
    needed = min(data["eval_tokens"], MIN_EVAL_TOKENS)
    for name in names:
        if min(data["eval_tokens"], val[name].size - 1) < needed:
            raise EmptyDomainError(
                f"data.domains.{name}: its val split has {val[name].size} tokens, fewer than the "
                f"{needed + 1} needed for evaluation; raise data.val_fraction or data.max_chars")
    with atomic_path(out_dir / "tokenizer.json") as tmp:
        tok.save(str(tmp))
    manifest = {"vocab_size": tok.get_vocab_size(), "dtype": np.dtype(dtype).name, "eot": tok.token_to_id(EOT),
                "domains": {}}
    for name in names:
        entry = {"provenance": provenance[name]}
        for s in SPLITS:
            arr = val[name] if s == "val" else encode(tok, splits[name][s], dtype)
            path = out_dir / f"{name}.{s}.bin"
            with atomic_path(path) as tmp:
                arr.tofile(tmp)
            entry[s] = {"documents": len(splits[name][s]), "chars": sum(map(len, splits[name][s])),
                        "tokens": int(arr.size), "sha256": sha256_bytes(arr.tobytes())}  # the bytes tofile wrote
        entry["eval_tokens"] = min(data["eval_tokens"], entry["val"]["tokens"] - 1)
        if entry["eval_tokens"] < data["eval_tokens"]:
            print(f"[tokenize] note: {name} has {entry['val']['tokens']} val tokens, fewer than "
                  f"data.eval_tokens={data['eval_tokens']}; it is evaluated on {entry['eval_tokens']}", flush=True)
        manifest["domains"][name] = entry
        print(f"[tokenize] {name:>10}: {entry['train']['documents']:6d} train docs {entry['train']['tokens']:9d} tokens"
              f" | {entry['val']['documents']:5d} val docs {entry['val']['tokens']:8d} tokens"
              f" | {provenance[name]}", flush=True)
    write_json(out_dir / "manifest.json", manifest)
    return manifest


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
