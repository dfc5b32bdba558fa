"""The tokenize stage's sharded path: the output does not depend on the shard size, and it is the output the
former in-memory implementation gave (its arrays' hashes recorded below, computed with that code)."""
import hashlib
import json
import random
from pathlib import Path

import pytest

from sparsecl.data.tokens import build


def write_corpus(root: Path) -> dict:
    """A small generated `files` corpus: text files read a line per document (blank and repeated lines
    among them) and a JSON-lines file; returns their data.domains specs."""
    rng = random.Random(17)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "court", "lemma", "proof", "dose", "patient"]

    def line():
        return " ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) + "."
    (root / "text").mkdir(parents=True)
    seen = []
    for f in range(5):
        rows = []
        for _ in range(60):
            r = rng.random()
            rows.append("" if r < 0.05 else rng.choice(seen) if r < 0.15 and seen else line())
            seen.append(rows[-1])
        (root / "text" / f"part{f}.txt").write_text("\n".join(rows) + "\n")
    with open(root / "rows.jsonl", "w") as fh:
        for i in range(250):
            fh.write(json.dumps({"body": "   " if i % 40 == 0 else line() + " " + line()}) + "\n")
    return {"beta": {"source": "files", "paths": [str(root / "text" / "*.txt")], "document": "lines"},
            "gamma": {"source": "files", "paths": [str(root / "rows.jsonl")], "format": "json", "text_field": "body"}}


# sha256 of each file and (documents, chars, tokens) per split, from the in-memory implementation this one
# replaced (tokenizers 0.23.3), on write_corpus + the toy alpha domain, without and with data.max_chars.
OLD = {
    0: ({"alpha.train.bin": "db801da7b34e4d24e8e114e1bdb8523936bb9713c3511dd1446c1d32738c62d8",
         "alpha.val.bin": "eeae864d1de97377cf3994821893b66c0137b5e88de66342d44037fe7d084074",
         "beta.train.bin": "a622090ff989f2293a6e533076ede8d19a1d8de4df50d4508e2fb10ac767dcd4",
         "beta.val.bin": "67c0e23d664d39319b5938f95b6ba10c0436ff7f664c144a6be4e6c258e62826",
         "gamma.train.bin": "583d77b9f3b8f71da9b421c3d52eee0f49f72dc8d1a3836af48aabef458cbb4d",
         "gamma.val.bin": "898ce8add6c2c06cf36ad72b05f0d87375c37c218c6121db862c5ae860c0ea86",
         "tokenizer.json": "bd21dc7cf7003939a12d325974a422fb5ea61699e506be86bc6d2d9094c48f19"},
        {"alpha": {"train": [129, 24260, 19185], "val": [21, 4007, 3197]},
         "beta": {"train": [206, 19465, 6795], "val": [56, 5770, 2053]},
         "gamma": {"train": [191, 37690, 13011], "val": [52, 10312, 3588]}}),
    6000: ({"alpha.train.bin": "349470fcb8aeca8c846643dd9cc8c74d9abc79abe10b2e02acafb1054ef53359",
            "alpha.val.bin": "a4153e526c5bc1002b03048d7eacd798a149552e5ff4e66881a1346978f6fcf8",
            "beta.train.bin": "a478fefd08b651be899e1a96f3f3a668b66c5e58ff143559abbd10a43212ee78",
            "beta.val.bin": "d750928357d91aa54c8fcc5c7c5cf1523f4060da58cf574938e87993e480810a",
            "gamma.train.bin": "9d6a009f0bc29c7875a98935ba9ca91654ee8e497aec08a5e9f8c7959c6d801b",
            "gamma.val.bin": "368dadf98322504af00bf65fb58c404b1f636a5ac504f0fcc30f9de4ab47367d",
            "tokenizer.json": "49b33781354838d7abc6d21f4a9bb62e8336de45f6f499ce51ddf6d0b11fcb9e"},
           {"alpha": {"train": [29, 5540, 4233], "val": [3, 566, 436]},
            "beta": {"train": [50, 4956, 1755], "val": [13, 1126, 419]},
            "gamma": {"train": [25, 4947, 1715], "val": [7, 1258, 447]}}),
}


@pytest.mark.parametrize("max_chars", sorted(OLD))
def test_sharded_tokenize_is_byte_identical_to_one_shard_and_to_the_former_in_memory_path(tmp_path, toy_params,
                                                                                      max_chars):
    toy_params["data"]["domains"].update(write_corpus(tmp_path / "corpus"))
    toy_params["data"]["max_chars"] = max_chars
    # 500 characters a shard: every domain is merged from tens of shards; the default holds each in one
    sharded = build(toy_params, tmp_path / "sharded", shard_chars=500)
    whole = build(toy_params, tmp_path / "whole")
    assert sharded == whole
    files = sorted(p.name for p in (tmp_path / "whole").iterdir())
    for name in files:
        assert (tmp_path / "sharded" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    hashes, counts = OLD[max_chars]
    assert files == sorted([*hashes, "manifest.json"])
    assert {n: hashlib.sha256((tmp_path / "whole" / n).read_bytes()).hexdigest() for n in hashes} == hashes
    assert {d: {s: [e[s]["documents"], e[s]["chars"], e[s]["tokens"]] for s in ("train", "val")}
            for d, e in whole["domains"].items()} == counts
    assert not list(tmp_path.glob(".*.work"))  # the work folder is gone


def test_a_killed_tokenize_leaves_no_half_output_and_a_rerun_starts_afresh(tmp_path, toy_params, monkeypatch):
    from sparsecl.data import tokens

    first = build(toy_params, tmp_path / "tokens")
    before = {p.name: p.read_bytes() for p in (tmp_path / "tokens").iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what a kill in the middle of encoding looks like to the stage
    monkeypatch.setattr(tokens, "encode_to", killed)
    with pytest.raises(KeyboardInterrupt):
        build(toy_params, tmp_path / "tokens")
    # the previous complete output is untouched and no work folder is left
    assert {p.name: p.read_bytes() for p in (tmp_path / "tokens").iterdir()} == before
    assert not (tmp_path / ".tokens.work").exists()
    monkeypatch.undo()
    (tmp_path / ".tokens.work" / "alpha").mkdir(parents=True)  # as if a SIGKILL left it behind
    (tmp_path / ".tokens.work" / "alpha" / "stale").write_text("x")
    assert build(toy_params, tmp_path / "tokens") == first
    assert not (tmp_path / ".tokens.work").exists()
