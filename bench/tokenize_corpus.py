"""The tokenize stage on a generated corpus larger than it could hold as Python strings: tokens/s and peak RSS.

Generates `--gb` GB of text (two `files` domains of text files, a paragraph per document) in a temporary
folder, runs `sparsecl.data.tokens.build` on it in a fresh process (spawned, so its peak RSS is the stage's
own, not the generator's), prints the figures and deletes the folder. The stage's memory should not grow
with the corpus: compare the peak RSS with the text's size.

    python bench/tokenize_corpus.py              # 1 GB
    python bench/tokenize_corpus.py --gb 0.002   # a smoke test
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

DOMAINS = ("prose", "records")
FILE_BYTES = 64 << 20  # each generated text file; a domain is several


def _words(rng: np.random.Generator, n: int) -> list[bytes]:
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
    return [letters[rng.integers(0, 26, rng.integers(1, 10))].tobytes() for _ in range(n)]


def generate(folder: Path, total_bytes: int, seed: int = 0) -> None:
    """Paragraphs of Zipf-distributed words (a vocabulary per domain), blank lines between them."""
    for d, name in enumerate(DOMAINS):
        rng = np.random.default_rng([seed, d])
        words = _words(rng, 20000)
        (folder / name).mkdir(parents=True)
        left, part = total_bytes // len(DOMAINS), 0
        while left > 0:
            size = min(FILE_BYTES, left)
            with open(folder / name / f"part{part:04d}.txt", "wb") as fh:
                written = 0
                while written < size:
                    idx = np.minimum(rng.zipf(1.2, 200_000), len(words)) - 1
                    lens = rng.integers(50, 600, 800)  # words per paragraph
                    pieces, start = [], 0
                    for n in lens:
                        if start >= idx.size:
                            break
                        pieces.append(b" ".join(words[i] for i in idx[start:start + n]) + b".\n\n")
                        start += n
                    chunk = b"".join(pieces)[: size - written]
                    fh.write(chunk)
                    written += len(chunk)
            left -= size
            part += 1


def _tokenize(params: dict, out: str, result) -> None:
    from sparsecl.data.tokens import build

    start = time.perf_counter()
    manifest = build(params, out)
    result.put((time.perf_counter() - start, manifest))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0, help="text to generate, in GB (10^9 bytes)")
    ap.add_argument("--params", default="params.yaml", help="the tokenizer and data settings are read from it")
    ap.add_argument("--tiny", action="store_true", help="2 MB of text (smoke test)")
    args = ap.parse_args()
    total = int((0.002 if args.tiny else args.gb) * 1e9)
    params = yaml.safe_load(Path(args.params).read_text())
    root = Path(tempfile.mkdtemp(prefix="sparsecl-tokenize-bench-"))
    try:
        start = time.perf_counter()
        generate(root / "corpus", total)
        gen_s = time.perf_counter() - start
        text_bytes = sum(f.stat().st_size for f in (root / "corpus").rglob("*.txt"))
        params["data"].update(order=list(DOMAINS), max_chars=0, domains={
            name: {"source": "files", "paths": [str(root / "corpus" / name / "*.txt")], "document": "paragraphs"}
            for name in DOMAINS})
        ctx = mp.get_context("spawn")
        result = ctx.Queue()
        proc = ctx.Process(target=_tokenize, args=(params, str(root / "tokens"), result))
        proc.start()
        seconds, manifest = result.get()
        proc.join()
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
        splits = [e[s] for e in manifest["domains"].values() for s in ("train", "val")]
        tokens, docs = sum(s["tokens"] for s in splits), sum(s["documents"] for s in splits)
        print(f"text: {text_bytes / 1e9:.3f} GB in {len(DOMAINS)} domains, {docs:,} documents "
              f"(generated in {gen_s:.0f} s)")
        print(f"tokenize: {tokens:,} tokens in {seconds:.0f} s = {tokens / seconds:,.0f} tokens/s "
              f"({text_bytes / seconds / 1e6:.2f} MB of text/s)")
        print(f"peak RSS of the tokenize process: {peak / 2**30:.2f} GiB "
              f"({peak / text_bytes:.2f} x the text's size)")
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
