import itertools
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc.utils.cli_parse import to_path_overrides
from dvc.utils.hydra import apply_overrides, get_hydra_sweeps

from sparsecl.params import validate
from sparsecl.presets import flatten, load, merged, overlay_of, preset_flags, set_flags, sweep_of

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "presets").glob("*.yaml"))
SWEEPS = [p for p in PRESETS if sweep_of(yaml.safe_load(p.read_text()) or {})]


def doc(preset: Path) -> dict:
    return yaml.safe_load(preset.read_text()) or {}


def test_flags_are_dotted_keys_with_yaml_values():
    assert set_flags({"density": 0.1, "train": {"lr": 0.001}, "topologies": ["dense", "random"]}) == [
        "-Sdensity=0.1", "-Strain.lr=0.001", '-Stopologies=["dense","random"]']
    assert flatten({"mechanism": {"none": {}}}) == {"mechanism.none": {}}
    assert preset_flags({"seeds": [1], "sweep": {"mechanism.ewc.lambda": [0.1, 10.0], "x.y": ["a", "b"]}}) == [
        "-Sseeds=[1]", "-Smechanism.ewc.lambda=0.1,10.0", '-Sx.y="a","b"']


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_gives_valid_params(preset):
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    validate(merged(base, overlay_of(doc(preset))))


@pytest.mark.parametrize("preset", SWEEPS, ids=lambda p: p.stem)
def test_every_point_of_a_sweep_is_what_dvc_queues_and_valid(preset, tmp_path):
    """DVC's own parser expands the printed flags into the grid of the swept values, and each experiment's
    params.yaml (DVC's own override of a copy, which refuses a key params.yaml lacks) validates."""
    sweep = sweep_of(doc(preset))
    points = get_hydra_sweeps(to_path_overrides([f.removeprefix("-S") for f in preset_flags(doc(preset))]))
    assert len(points) == math.prod(map(len, sweep.values()))
    seen = set()
    for point in points:
        params = tmp_path / "params.yaml"
        shutil.copy(REPO / "params.yaml", params)
        apply_overrides(params, point["params.yaml"])
        p = validate(yaml.safe_load(params.read_text()))
        assert merged(p, overlay_of(doc(preset))) == p
        seen.add(tuple(flatten(p)[k] for k in sweep))
    assert seen == set(itertools.product(*sweep.values()))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_flags_reach_dvc_intact_through_the_shell(preset):
    """`dvc exp run $(python -m sparsecl.presets NAME)`: the words the shell passes on are the flags."""
    out = subprocess.run(["bash", "-c", f'printf "%s\\n" $("{sys.executable}" -m sparsecl.presets {preset.stem})'],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == preset_flags(doc(preset))


def test_a_bad_sweep_section_fails_naming_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "bad.yaml").write_text("sweep:\n  mechanism.ewc.lambda: 10.0\n")
    with pytest.raises(SystemExit, match=r"bad\.yaml: sweep\.mechanism\.ewc\.lambda must list at least two"):
        load("bad")
