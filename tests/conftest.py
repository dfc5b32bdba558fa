import copy
from pathlib import Path

import pytest
import torch
import yaml

from sparsecl.data.tokens import build

TOY_PARAMS = yaml.safe_load((Path(__file__).parent / "toy_params.yaml").read_text())


@pytest.fixture
def toy_params():
    """A fresh, valid copy of the toy params (tiny model, synthetic domains) for each test."""
    return copy.deepcopy(TOY_PARAMS)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory, params):
    """Token arrays built once per test module from that module's `params` fixture."""
    folder = tmp_path_factory.mktemp("tokens")
    build(params, folder)
    return folder
