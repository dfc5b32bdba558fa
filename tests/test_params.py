import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparsecl.params import ParamsError, validate

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
    assert "topologies[1]" in msg and "'smallworld'" in msg and "brf, dense, erk, expander, random" in msg


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
