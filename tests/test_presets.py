import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sparsecl.params import validate
from sparsecl.presets import flatten, merged, set_flags

REPO = Path(__file__).resolve().parents[1]


def test_flags_are_dotted_keys_with_yaml_values():
    assert set_flags({"density": 0.1, "train": {"lr": 0.001}, "topologies": ["dense", "random"]}) == [
        "-Sdensity=0.1", "-Strain.lr=0.001", '-Stopologies=["dense","random"]']
    assert flatten({"mechanism": {"none": {}}}) == {"mechanism.none": {}}


@pytest.mark.parametrize("preset", sorted((REPO / "presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_gives_valid_params(preset):
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    validate(merged(base, yaml.safe_load(preset.read_text()) or {}))


@pytest.mark.parametrize("preset", sorted((REPO / "presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_flags_reach_dvc_intact_through_the_shell(preset):
    """`dvc exp run $(python -m sparsecl.presets NAME)`: the words the shell passes on are the flags."""
    out = subprocess.run(["bash", "-c", f'printf "%s\\n" $("{sys.executable}" -m sparsecl.presets {preset.stem})'],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == set_flags(yaml.safe_load(preset.read_text()) or {})
