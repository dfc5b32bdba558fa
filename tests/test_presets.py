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
