"""Load and validate params.yaml before any stage does work.

The schema is plain data: every key the pipeline reads, its type and range. A problem is reported as
`key: value is wrong, allowed ...`; all problems are reported together so one run shows them all.
"""
from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any

import yaml

from sparsecl.checks import Check, choice, flag, number
from sparsecl.data.sources import BUDGET_KEYS, BUILTIN_DOMAINS, SOURCES, TEXT_DOCUMENTS
from sparsecl.errors import ParamsError
from sparsecl.mechanisms import MECHANISMS
from sparsecl.topology import TOPOLOGIES, kept_per_matrix
from sparsecl.topology.allocation import ALLOCATIONS, allocate


def _str(key, v):
    return None if isinstance(v, str) and v else f"{key}: {v!r} is not a non-empty string"


def _list_of(item: Check, unique=True, empty=False) -> Check:
    def check(key, v):
        if not isinstance(v, list) or not (v or empty):
            return f"{key}: {v!r} is not a {'' if empty else 'non-empty '}list"
        errs = [e for i, x in enumerate(v) if (e := item(f"{key}[{i}]", x))]
        if not errs and unique and len(set(map(str, v))) != len(v):
            errs.append(f"{key}: {v!r} has duplicate entries")
        return "\n".join(errs) or None
    return check


INT_POS = number(1, integer=True)
INT_NONNEG = number(0, integer=True)

SCHEMA: dict[str, Any] = {
    "density": number(0, 1, lo_open=True),
    "seeds": _list_of(INT_NONNEG),
    "topologies": _list_of(choice(sorted(TOPOLOGIES))),
    "mechanisms": _list_of(choice(sorted(MECHANISMS))),
    "references": _list_of(choice(sorted(TOPOLOGIES)), empty=True),  # each must be in `topologies` (below)
    "device": choice(["auto", "cpu", "cuda"]),
    "data": {
        "seed": INT_NONNEG,
        "order": _list_of(_str, unique=False),  # a domain may come back (experiment 3 cycles them)
        "domains": "domains",  # checked by _check_domains
        "max_chars": INT_NONNEG,
        "val_fraction": number(0, 0.5, lo_open=True),
        "eval_tokens": INT_POS,
    },
    "tokenizer": {
        "vocab_size": number(260, 2**32, integer=True, why="token ids are stored as uint32 arrays"),
        "sample_chars": INT_POS,
    },
    "model": {
        "n_layer": INT_POS,
        "n_head": INT_POS,
        "n_embd": INT_POS,
        "block_size": INT_POS,
        "dropout": number(0, 1),
        "bias": flag,
        "mlp_activation": choice(["gelu", "topk"]),
        "topk_k": INT_POS,
    },
    "topology": {name: topo.SCHEMA for name, topo in TOPOLOGIES.items()},
    "train": {
        "optimizer": choice(["adamw", "sgd"]),
        "batch_size": INT_POS,
        "grad_accum": INT_POS,
        "lr": number(0, lo_open=True),
        "matrix_lr_ratio": number(0, lo_open=True),
        "min_lr_ratio": number(0, 1),
        "warmup_steps": INT_NONNEG,
        "weight_decay": number(0),
        "beta1": number(0, 1),
        "beta2": number(0, 1),
        "grad_clip": number(0),
        "log_every": INT_POS,
        "ckpt_every": INT_POS,
        "compile": flag,
        "kernel": choice(["masked", "sparse", "auto"]),
    },
    "distributed": {"nproc_per_node": INT_POS},
    "lr_search": {"factors": _list_of(number(0, lo_open=True)), "tokens": INT_POS, "seed": INT_NONNEG},
    "pretrain": {"tokens": INT_POS},
    "phase": {"tokens": INT_POS, "speed_steps": INT_POS},
    "mechanism": {name: mech.SCHEMA for name, mech in MECHANISMS.items()},
    "analysis": {"crossover_persist": INT_POS, "min_start_gap": number(0), "crossover_margin": number(0)},
}

# Sections whose sub-keys are optional (settings of arms that may not be in the run).
OPTIONAL_SECTIONS = {"topology", "mechanism"}

# Every source may stop reading early: at most `max_documents` non-empty documents or `max_read_chars`
# characters, in the source's own order (what a streamed hub dataset needs; data.max_chars, by contrast,
# caps what was read, in content-hash order).
BUDGET = {key: INT_POS for key in BUDGET_KEYS}
DOMAIN_SCHEMA = {
    "builtin": {"source": None, **BUDGET},
    "toy": {"source": None, "docs": INT_POS, "seed": INT_NONNEG, **BUDGET},
    "files": {"source": None, "paths": _list_of(_str), "format": choice(["text", "json", "parquet"]),
              "text_field": _str, "document": choice(list(TEXT_DOCUMENTS)), **BUDGET},
    "hf": {"source": None, "dataset": _str, "config": _str, "split": _str, "text_field": _str, **BUDGET},
}
DOMAIN_OPTIONAL = {source: set(BUDGET) | extra for source, extra in {
    "builtin": set(), "toy": {"seed"}, "files": {"format", "text_field", "document"}, "hf": {"config", "text_field"},
}.items()}
DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _unknown(key: str, allowed, missing=()) -> str:
    """Unknown key; suggest a close spelling, or the one key of this section that is missing."""
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(allowed), n=1) or list(missing)[:1]
    hint = f" (did you mean {close[0]!r}?)" if close and len(missing) <= 1 else ""
    return f"{key}: unknown key{hint}, allowed: {', '.join(sorted(allowed))}"


def _check(schema: dict, node: Any, prefix: str, errors: list[str], optional: bool = False) -> None:
    if not isinstance(node, dict):
        errors.append(f"{prefix.rstrip('.') or 'params'}: expected a mapping, got {node!r}")
        return
    missing = [] if optional else [k for k in schema if k not in node]
    for key in node:
        if key not in schema:
            errors.append(_unknown(f"{prefix}{key}", schema, missing))
    for key, spec in schema.items():
        full = f"{prefix}{key}"
        if key not in node:
            if not optional:
                errors.append(f"{full}: missing key")
            continue
        if spec == "domains":
            _check_domains(node[key], full, errors)
        elif isinstance(spec, dict):
            _check(spec, node[key], full + ".", errors, optional=key in OPTIONAL_SECTIONS and not prefix)
        elif (err := spec(full, node[key])):
            errors.append(err)


def _check_domains(domains: Any, prefix: str, errors: list[str]) -> None:
    if not isinstance(domains, dict) or not domains:
        errors.append(f"{prefix}: expected a non-empty mapping of domain name -> source spec")
        return
    for name, spec in domains.items():
        key = f"{prefix}.{name}"
        if not DOMAIN_NAME.fullmatch(str(name)):
            errors.append(f"{key}: domain name {name!r} is not allowed: use letters, digits, '_' and '-' "
                          f"(it names files and metrics)")
        if not isinstance(spec, dict) or "source" not in spec:
            errors.append(f"{key}.source: missing key, allowed: {', '.join(SOURCES)}")
            continue
        source = spec["source"]
        if not isinstance(source, str) or source not in DOMAIN_SCHEMA:
            errors.append(f"{key}.source: unknown domain source {source!r}, allowed: {', '.join(SOURCES)}")
            continue
        if source == "builtin" and name not in BUILTIN_DOMAINS:
            errors.append(f"{key}: no builtin domain named {name!r}, allowed: {', '.join(BUILTIN_DOMAINS)}")
        schema = DOMAIN_SCHEMA[source]
        for k in spec:
            if k not in schema:
                errors.append(_unknown(f"{key}.{k}", schema))
        for k, check in schema.items():
            if k not in spec:
                if k not in DOMAIN_OPTIONAL.get(source, ()):
                    errors.append(f"{key}.{k}: missing key (source {source!r} needs it)")
            elif check and (err := check(f"{key}.{k}", spec[k])):
                errors.append(err)
        if source == "files" and "document" in spec and spec.get("format", "text") != "text":
            errors.append(f"{key}.document: {spec['document']!r} applies to format 'text' only (a {spec['format']} row "
                          f"is one document); remove it")


def mapping(node: dict, key: str) -> dict:
    """node[key] where it is a mapping, else {}: a section of the wrong type was reported by the per-key
    check, and the cross-key checks only must not crash on it."""
    return node[key] if isinstance(node.get(key), dict) else {}


def _check_cross(p: dict, errors: list[str]) -> None:
    """Relations between keys that a per-key check cannot see."""
    data, model = mapping(p, "data"), mapping(p, "model")
    domains = mapping(data, "domains")
    order = data.get("order") if isinstance(data.get("order"), list) else []
    for i, name in enumerate(order):
        if domains and isinstance(name, str) and name not in domains:
            errors.append(f"data.order[{i}]: domain {name!r} is not defined in data.domains "
                          f"(defined: {', '.join(domains)})")
    if len(order) < 2:
        errors.append("data.order: needs at least two domains (one to pretrain on, one to learn next)")
    n_embd, n_head = model.get("n_embd"), model.get("n_head")
    if isinstance(n_embd, int) and isinstance(n_head, int) and n_head > 0 and n_embd % n_head:
        errors.append(f"model.n_embd: {n_embd} is not divisible by model.n_head={n_head}")
    eval_tokens, block = data.get("eval_tokens"), model.get("block_size")
    if isinstance(eval_tokens, int) and isinstance(block, int) and eval_tokens < block:
        errors.append(f"data.eval_tokens: {eval_tokens} is less than model.block_size={block}, allowed >= "
                      f"model.block_size (one full evaluation window)")
    topk_k = model.get("topk_k")
    if isinstance(n_embd, int) and isinstance(topk_k, int) and topk_k > 4 * n_embd:
        errors.append(f"model.topk_k: {topk_k} is more than the {4 * n_embd} MLP units per layer")
    batch, nproc = mapping(p, "train").get("batch_size"), mapping(p, "distributed").get("nproc_per_node")
    if isinstance(batch, int) and isinstance(nproc, int) and nproc > 0 and batch % nproc:
        errors.append(f"train.batch_size: {batch} does not split evenly over distributed.nproc_per_node={nproc} "
                      f"processes, allowed a multiple of {nproc}")
    topologies, references = p.get("topologies"), p.get("references")
    valid = isinstance(topologies, list) and all(isinstance(t, str) and t in TOPOLOGIES for t in topologies)
    for i, name in enumerate(references if isinstance(references, list) and valid else []):
        if name not in topologies:
            errors.append(f"references[{i}]: {name!r} is not one of topologies ({', '.join(map(str, topologies))}): "
                          f"a reference sits beside an arm of the run")
    blocks = _masked_blocks(p)
    if blocks is not None:
        _check_kept_weights(p, blocks, errors)
        _check_mechanism_fit(p, blocks, errors)
    for section, arms_key, registry in (("topology", "topologies", TOPOLOGIES),
                                        ("mechanism", "mechanisms", MECHANISMS)):
        arms, settings = p.get(arms_key), mapping(p, section)
        for arm in arms if isinstance(arms, list) else []:
            if isinstance(arm, str) and arm in registry and registry[arm].SCHEMA and arm not in settings:
                errors.append(f"{section}.{arm}: missing settings for the selected arm {arm!r}")


def _allocations(p: dict) -> dict[str, dict[str, list[str]]]:
    """Each density key of the run -> {the allocation that turns it into kept weights per logical matrix
    (sparsecl.topology.allocation.allocate): the arms using it}: the sparse topologies' `allocation` (`erk`
    is random with erk), post-pruning's rho (uniform: round(rho * n_out * n_in)). `dense` keeps everything
    and `narrow` at least one inner dimension and one unit per layer, so neither can end without weights."""
    out: dict[str, dict[str, list[str]]] = {}
    topologies, settings = p.get("topologies"), p.get("topology")
    for name in topologies if isinstance(topologies, list) else []:
        if not isinstance(name, str):  # reported by the per-key check
            continue
        if name == "erk":
            allocation = "erk"
        elif name in TOPOLOGIES and "allocation" in TOPOLOGIES[name].SCHEMA and isinstance(settings, dict) \
                and isinstance(settings.get(name), dict):
            allocation = settings[name].get("allocation")
        else:
            continue
        if allocation in ALLOCATIONS:
            out.setdefault("density", {}).setdefault(allocation, []).append(f"topology {name!r}")
    if isinstance(p.get("mechanisms"), list) and "postprune" in p["mechanisms"]:
        out["mechanism.postprune.rho"] = {"uniform": ["mechanism 'postprune'"]}
    return out


def _masked_blocks(p: dict) -> dict | None:
    """The sparsified matrices at the model's shape, or None where the model section is invalid (reported
    already; there is no shape to check against)."""
    from sparsecl.topology.store import masked_blocks  # here: it imports the model (torch)

    model = p.get("model")
    model_errors: list[str] = []
    _check(SCHEMA["model"], model, "model.", model_errors)
    if model_errors or model["n_embd"] % model["n_head"]:
        return None
    return masked_blocks(p)


def _check_kept_weights(p: dict, blocks: dict, errors: list[str]) -> None:
    """A density that keeps no weight in some matrix at the model's shape trains a matrix without
    weights (and fails late, or not at all): refuse it, saying the smallest density this shape allows."""
    model = p["model"]
    for key, allocations in _allocations(p).items():
        *parents, last = key.split(".")
        node = p
        for k in parents:
            node = node.get(k) if isinstance(node, dict) else None
        density = node.get(last) if isinstance(node, dict) else None
        if number(0, 1, lo_open=True)(key, density) is not None:
            continue  # not a density at all: reported by the per-key check
        for allocation, users in allocations.items():
            empty = [n for n, k in allocate(blocks, density, allocation).items() if k == 0]
            if empty:
                n_out, n_in = blocks[empty[0]][1]
                smallest = max(_smallest_density(blocks, a) for a in allocations)
                errors.append(
                    f"{key}: {density!r} keeps 0 weights in {empty[0]} ({n_out} x {n_in} per logical matrix) for "
                    f"{users[0]} ({allocation} allocation), a matrix without weights; allowed >= "
                    f"{smallest:.3g} at this model shape (model.n_embd={model['n_embd']})")
                break


def _check_mechanism_fit(p: dict, blocks: dict, errors: list[str]) -> None:
    """Mechanism settings that only the model and the topologies can refuse: refused here, so that a run
    does not stop at its first sequential stage, after the lr grid and pretraining."""
    mechanisms = p.get("mechanisms") if isinstance(p.get("mechanisms"), list) else []
    settings, model = mapping(p, "mechanism"), p["model"]
    ssd = mapping(settings, "ssd")
    if "ssd" in mechanisms and model["mlp_activation"] == "topk" and isinstance(ssd.get("k"), int) \
            and ssd["k"] != model["topk_k"]:
        errors.append(f"mechanism.ssd.k: {ssd['k']} differs from model.topk_k={model['topk_k']}, the units the "
                      f"Top-K activation lets fire; allowed: {model['topk_k']} with model.mlp_activation topk")
    rho, density = mapping(settings, "postprune").get("rho"), p.get("density")
    if "postprune" not in mechanisms or number(0, 1, lo_open=True)("rho", rho) is not None or rho == 1 \
            or number(0, 1, lo_open=True)("density", density) is not None:
        return  # not run, reported by the per-key check, or rho 1: the off switch, which prunes nothing
    topologies = p.get("topologies") if isinstance(p.get("topologies"), list) else []
    topology = mapping(p, "topology")
    for name in topologies:
        if not isinstance(name, str) or name not in TOPOLOGIES or not isinstance(topology.get(name, {}), dict):
            continue  # reported by the per-key check
        own = topology.get(name, {})
        if "allocation" in TOPOLOGIES[name].SCHEMA and own.get("allocation") not in ALLOCATIONS:
            continue  # reported by the per-key check
        kept = kept_per_matrix(name, blocks, density, {**own, "n_head": model["n_head"]})
        if all(kept[n] <= round(rho * n_out * n_in) for n, (_, (n_out, n_in)) in blocks.items()):
            errors.append(f"mechanism.postprune.rho: {rho:g} is not below what topology {name!r} keeps of any "
                          f"sparsified matrix (density={density:g}): post-pruning would remove nothing and the arm "
                          f"would equal `none`; run postprune on a denser topology (dense) or lower "
                          f"mechanism.postprune.rho")


def _smallest_density(blocks: dict, allocation: str) -> float:
    """The smallest density, rounded up to 3 significant digits, that keeps a weight in every matrix."""
    def keeps_all(d: float) -> bool:
        return min(allocate(blocks, d, allocation).values()) > 0

    lo, hi = 0.0, 1.0
    for _ in range(60):  # bisection: the kept counts grow with the density
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if keeps_all(mid) else (mid, hi)
    digits = 2 - math.floor(math.log10(hi))
    shown = math.ceil(hi * 10**digits) / 10**digits
    while not keeps_all(shown):  # ERK's largest-remainder rounding is not quite monotone
        shown += 10**-digits
    return shown


def validate(p: Any, errors: list[str] | None = None) -> dict:
    """Return `p` if it is valid; else raise ParamsError listing `errors` (found while parsing) and every
    problem of `p`."""
    errors = list(errors or [])
    _check(SCHEMA, p, "", errors)
    if isinstance(p, dict):
        _check_cross(p, errors)
    if errors:
        raise ParamsError("invalid params.yaml:\n  " + "\n  ".join(errors))
    return p


def load(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: file not found (run from the repository root)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ParamsError(f"invalid params.yaml: {path} is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); "
                          f"save it as UTF-8") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        duplicates: list[str] = []
        _find_duplicate_keys(node, "", duplicates)
        p = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        raise ParamsError(f"invalid params.yaml: {path} is not valid YAML:\n  {e}") from None
    finally:
        loader.dispose()
    return validate(p, duplicates)


def _find_duplicate_keys(node: yaml.Node, prefix: str, errors: list[str]) -> None:
    """YAML keeps only the last of two equal keys, silently: a domain defined twice would lose one."""
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value in node.value:
            key = f"{prefix}{key_node.value}"
            line = key_node.start_mark.line + 1
            if key in lines:
                errors.append(f"{key}: duplicate key (lines {lines[key]} and {line}), allowed once per mapping")
            lines.setdefault(key, line)
            _find_duplicate_keys(value, key + ".", errors)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _find_duplicate_keys(item, f"{prefix.rstrip('.')}[{i}].", errors)
