import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparsecl.errors import ParamsError
from sparsecl.params import validate

REPO = Path(__file__).resolve().parents[1]


def error_of(params) -> str:
    with pytest.raises(ParamsError) as e:
        validate(params)
    return str(e.value)


def test_default_and_toy_params_are_valid(toy_params):
    validate(yaml.safe_load((REPO / "params.yaml").read_text()))
    validate(toy_params)


@pytest.mark.parametrize("density", [0, 1.5, -0.1, "half"])
def test_density_out_of_range(toy_params, density):
    toy_params["density"] = density
    msg = error_of(toy_params)
    assert "density:" in msg and repr(density) in msg


def test_density_one_is_allowed(toy_params):
    toy_params["density"] = 1
    validate(toy_params)


def test_unknown_topology_lists_allowed(toy_params):
    toy_params["topologies"] = ["dense", "smallworld"]
    msg = error_of(toy_params)
    assert "topologies[1]" in msg and "'smallworld'" in msg and "brf, dense, erk, expander, narrow, random" in msg


def test_unknown_mechanism_lists_allowed(toy_params):
    toy_params["mechanisms"] = ["magic"]
    msg = error_of(toy_params)
    assert "mechanisms[0]" in msg and "'magic'" in msg and "none" in msg


def test_unknown_domain_source(toy_params):
    toy_params["data"]["domains"]["beta"] = {"source": "ftp"}
    msg = error_of(toy_params)
    assert "data.domains.beta.source" in msg and "'ftp'" in msg and "builtin, files, hf, toy" in msg


def test_missing_key(toy_params):
    del toy_params["train"]["lr"]
    assert "train.lr: missing key" in error_of(toy_params)


def test_misspelled_key_suggests(toy_params):
    toy_params["train"]["learning_rate"] = toy_params["train"].pop("lr")
    msg = error_of(toy_params)
    assert "train.learning_rate: unknown key (did you mean 'lr'?)" in msg
    assert "train.lr: missing key" in msg


def test_order_names_undefined_domain(toy_params):
    toy_params["data"]["order"].append("delta")
    assert "data.order[3]: domain 'delta' is not defined" in error_of(toy_params)


def test_builtin_needs_known_name(toy_params):
    toy_params["data"]["domains"]["alpha"] = {"source": "builtin"}
    assert "no builtin domain named 'alpha'" in error_of(toy_params)


def test_selected_topology_needs_settings(toy_params):
    del toy_params["topology"]["random"]
    assert "topology.random: missing settings" in error_of(toy_params)


def test_stage_refuses_bad_params_before_any_work(tmp_path, toy_params):
    """A real stage script with density 0: exit code 2, a message naming the key, no output written."""
    toy_params["density"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(toy_params))
    proc = subprocess.run([sys.executable, str(REPO / "pipeline" / "tokenize_domains.py")], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "density: 0 is out of range" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def _set(p: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    for key in parents:
        p = p[key]
    p[last] = value


def with_value(path: str, value):
    def make(p):
        _set(p, path, value)
        return yaml.safe_dump(p)
    return make


def with_text(old: str, new: str):
    """Edit the YAML text itself: what a hand-written params.yaml holds and a dict cannot (duplicate keys)."""
    def make(p):
        text = yaml.safe_dump(p)
        assert old in text
        return text.replace(old, new, 1)
    return make


# (how to break the toy params.yaml, what the message must say, how many problems it lists)
INVALID = {
    "misspelled key": (with_text("  lr: ", "  learning_rate: "),
                       "train.learning_rate: unknown key (did you mean 'lr'?)", 2),
    "wrong type": (with_value("model.n_layer", "four"), "model.n_layer: 'four' is not an integer", 1),
    "float for an integer": (with_value("train.batch_size", 8.5), "train.batch_size: 8.5 is not an integer", 1),
    "text for a bool": (with_value("train.compile", "no"), "train.compile: 'no' is not true/false", 1),
    "batch that does not split over the processes": (
        with_value("distributed.nproc_per_node", 3),
        "train.batch_size: 8 does not split evenly over distributed.nproc_per_node=3 processes", 1),
    "zero processes": (with_value("distributed.nproc_per_node", 0), "distributed.nproc_per_node: 0 is out of range", 1),
    "number YAML reads as text": (with_text("  lr: 0.003", "  lr: 3e-3"),
                                  "train.lr: '3e-3' is not a number (YAML read it as text", 1),
    "density above 1": (with_value("density", 1.5), "density: 1.5 is out of range, allowed > 0 and <= 1", 1),
    "density 0": (with_value("density", 0), "density: 0 is out of range, allowed > 0 and <= 1", 1),
    "negative pretraining budget": (with_value("pretrain.tokens", -1000), "pretrain.tokens: -1000 is out of range", 1),
    "zero phase budget": (with_value("phase.tokens", 0), "phase.tokens: 0 is out of range, allowed >= 1", 1),
    "negative learning rate": (with_value("train.lr", -0.1), "train.lr: -0.1 is out of range, allowed > 0", 1),
    "evaluation shorter than the context": (with_value("data.eval_tokens", 16),
                                            "data.eval_tokens: 16 is less than model.block_size=32", 1),
    "vocab beyond uint32 token ids": (with_value("tokenizer.vocab_size", 2**32 + 1),
                                      "tokenizer.vocab_size: 4294967297 is out of range, allowed >= 260 and "
                                      "<= 4294967296 (token ids are stored as uint32 arrays)", 1),
    "unknown topology": (with_value("topologies", ["dense", "smallworld"]),
                         "topologies[1]: unknown value 'smallworld', allowed: ", 1),
    "unknown mechanism": (with_value("mechanisms", ["magic"]), "mechanisms[0]: unknown value 'magic', allowed: ", 1),
    "unknown domain source": (with_value("data.domains.beta", {"source": "ftp"}),
                              "data.domains.beta.source: unknown domain source 'ftp', allowed: builtin, files, hf, toy",
                              1),
    "unknown text split": (with_value("data.domains.beta", {"source": "files", "paths": ["a/*.txt"], "document": "words"}),
                           "data.domains.beta.document: unknown value 'words', allowed: file, paragraphs, lines", 1),
    "a text split for rows": (with_value("data.domains.beta", {"source": "files", "paths": ["a/*.jsonl"],
                                                               "format": "json", "document": "lines"}),
                              "data.domains.beta.document: 'lines' applies to format 'text' only", 1),
    "a zero read budget": (with_value("data.domains.beta", {"source": "hf", "dataset": "d", "split": "train",
                                                            "max_documents": 0}),
                           "data.domains.beta.max_documents: 0 is out of range, allowed >= 1", 1),
    "duplicate domain name": (with_text("  domains:\n", "  domains:\n    beta: {source: toy, docs: 20}\n"),
                              "data.domains.beta: duplicate key (lines ", 1),
    "duplicate top-level key": (with_text("density: 0.25\n", "density: 0.25\ndensity: 0.5\n"),
                                "density: duplicate key (lines ", 1),
    "phase order names a missing domain": (with_value("data.order", ["alpha", "beta", "delta"]),
                                           "data.order[2]: domain 'delta' is not defined in data.domains", 1),
    "domain name that is not a file name": (with_text("    beta:\n", "    ../beta:\n"),
                                            "data.domains.../beta: domain name '../beta' is not allowed", 2),
    "section of the wrong type": (with_value("train", 5), "train: expected a mapping, got 5", 1),
    "missing key": (with_text("  lr: 0.003\n", ""), "train.lr: missing key", 1),
    "not YAML": (lambda p: "density: [0.25\n", "is not valid YAML", 1),
    "not UTF-8": (lambda p: yaml.safe_dump(p).replace("lr: 0.003", "lr: 0.003  # \xe9").encode("latin-1"),
                  "params.yaml is not UTF-8 text (byte 0xe9 on line ", 0),
    "a bool for an integer": (with_value("seeds", [True]),
                              "seeds[0]: True is not an integer (YAML reads true/false, yes/no and on/off as a bool)",
                              1),
    # Non-finite numbers pass every range comparison (NaN) or every lower bound (inf): each is named.
    "NaN density": (with_text("density: 0.25", "density: .nan"), "density: nan is not a finite number", 1),
    "NaN learning rate": (with_text("  lr: 0.003", "  lr: .nan"), "train.lr: nan is not a finite number", 1),
    "NaN validation share": (with_value("data.val_fraction", float("nan")),
                             "data.val_fraction: nan is not a finite number, allowed > 0 and <= 0.5", 1),
    "NaN dropout": (with_value("model.dropout", float("nan")), "model.dropout: nan is not a finite number", 1),
    "infinite weight decay": (with_value("train.weight_decay", float("inf")),
                              "train.weight_decay: inf is not a finite number, allowed >= 0", 1),
    "infinite SSD temperature": (with_value("mechanism.ssd.temperature", float("inf")),
                                 "mechanism.ssd.temperature: inf is not a finite number, allowed > 0", 1),
    "infinite lr grid factor": (with_value("lr_search.factors", [0.5, float("-inf")]),
                                "lr_search.factors[1]: -inf is not a finite number", 1),
    # A density that keeps no weight in some matrix (the toy's smallest: 32 x 32, round(1e-9 * 1024) = 0).
    "density that keeps no weights": (
        with_value("density", 1e-9),
        "density: 1e-09 keeps 0 weights in transformer.h.0.attn.c_attn (32 x 32 per logical matrix) for topology "
        "'random' (uniform allocation), a matrix without weights; allowed >= 0.000489 at this model shape "
        "(model.n_embd=32)", 1),
    "post-pruning to no weights": (
        lambda p: yaml.safe_dump({**p, "mechanisms": ["postprune"],
                                  "mechanism": {**p["mechanism"], "postprune": {"rho": 1e-4, "finetune_fraction": 0.5}}}),
        "mechanism.postprune.rho: 0.0001 keeps 0 weights in transformer.h.0.attn.c_attn", 1),
}


@pytest.mark.parametrize("case", INVALID)
def test_stage_refuses_invalid_params_naming_the_key_and_writes_nothing(tmp_path, monkeypatch, capsys, toy_params,
                                                                       case):
    """Each fault through a stage's entry point: exit code 2, the key named, nothing written."""
    from sparsecl import stage

    make, expected, problems = INVALID[case]
    text = make(toy_params)
    (tmp_path / "params.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["stage"])
    with pytest.raises(SystemExit) as e:
        stage.run(lambda params, args: pytest.fail("the stage did work with invalid params"))
    err = capsys.readouterr().err
    assert e.value.code == 2 and expected in err, err
    assert err.startswith("error: invalid params.yaml") and "Traceback" not in err
    if case != "not YAML":
        assert err.count("\n  ") == problems, err
    assert [p.name for p in tmp_path.iterdir()] == ["params.yaml"]


def _paths(node, prefix=""):
    """Every key and list item of a params tree, as the message names it: `train.lr`, `seeds[0]`."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        path = f"{prefix}[{key}]" if isinstance(node, list) else f"{prefix}{'.' if prefix else ''}{key}"
        yield path, node, key
        yield from _paths(value, path)


def _error_with(toy_params, parent, key, bad) -> str:
    """The validation error of the toy params with parent[key] set to `bad` (restored after)."""
    original, parent[key] = parent[key], bad
    try:
        with pytest.raises(ParamsError) as e:
            validate(copy.deepcopy(toy_params))
    finally:
        parent[key] = original
    return str(e.value)


@pytest.mark.parametrize("bad", [None, "?", {"x": 1}], ids=["null", "text", "mapping"])
def test_any_key_given_a_wrong_value_is_named_never_a_crash(toy_params, bad):
    """Every key of the toy params in turn gets a value of the wrong kind: validation names that key (or a
    key below it) and never fails with anything but ParamsError."""
    for path, parent, key in list(_paths(toy_params)):
        msg = _error_with(toy_params, parent, key, bad)
        assert f"\n  {path}" in msg, f"{path} = {bad!r}: {msg}"


def test_a_mechanism_setting_yaml_read_as_text_gets_the_hint(toy_params):
    toy_params["mechanisms"] = ["ewc"]
    toy_params["mechanism"]["ewc"] = {"lambda": "1e-3", "gamma": 1.0, "fisher_tokens": 256}
    with pytest.raises(ParamsError, match=r"mechanism\.ewc\.lambda: '1e-3' is not a number \(YAML read it as text"):
        validate(toy_params)


def test_references_must_be_topologies_of_the_run_and_may_be_empty(toy_params):
    assert validate({**toy_params, "references": []})["references"] == []
    with pytest.raises(ParamsError, match=r"references\[1\]: 'erk' is not one of topologies \(dense, narrow, random\)"):
        validate({**toy_params, "references": ["dense", "erk"]})
    with pytest.raises(ParamsError, match=r"references: 'dense' is not a list"):
        validate({**toy_params, "references": "dense"})


def test_every_number_refuses_nan_and_infinity_naming_its_key(toy_params):
    """Every numeric key of the toy params (mechanism and topology settings included) and every number in a
    list, given NaN, inf or -inf: the message names that key; a float key says it is not finite."""
    numeric = [(path, parent, key) for path, parent, key in _paths(toy_params)
               if isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool)]
    assert {"density", "train.lr", "model.dropout", "mechanism.ssd.temperature", "lr_search.factors[0]"} <= {
        path for path, _, _ in numeric}
    for path, parent, key in numeric:
        for bad in (float("nan"), float("inf"), float("-inf")):
            msg = _error_with(toy_params, parent, key, bad)
            expected = "is not a finite number" if isinstance(parent[key], float) else "is not an integer"
            assert f"\n  {path}: {bad!r} {expected}" in msg, f"{path} = {bad!r}: {msg}"


@pytest.mark.parametrize("topology, n_embd, smallest", [("random", 32, 0.000489), ("erk", 32, 0.000489),
                                                         ("random", 128, 3.06e-05)])
def test_the_smallest_density_said_is_the_smallest_that_keeps_a_weight_everywhere(toy_params, topology, n_embd,
                                                                                   smallest):
    """The smallest matrix is n_embd x n_embd: round(d * n_embd**2) reaches 1 just above 0.5 / n_embd**2
    (0.000488 at 32, 3.05e-05 at 128), said rounded up to 3 digits; that value passes, a hair below fails."""
    toy_params["topologies"] = toy_params["references"] = ["dense", "narrow", topology]
    toy_params["model"].update(n_embd=n_embd, n_head=2)
    validate({**toy_params, "density": smallest})
    msg = error_of({**toy_params, "density": 0.5 / n_embd**2})
    assert f"density: {0.5 / n_embd**2!r} keeps 0 weights" in msg and f"allowed >= {smallest:.3g}" in msg
    assert f"({'erk' if topology == 'erk' else 'uniform'} allocation)" in msg


def test_dense_and_narrow_arms_accept_any_positive_density(toy_params):
    """Neither can end without weights (narrow keeps at least one inner dimension and unit per layer)."""
    validate({**toy_params, "topologies": ["dense", "narrow"], "references": [], "density": 1e-9})
