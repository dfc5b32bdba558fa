import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from sparsecl.data.tokens import build

TOY_PARAMS = yaml.safe_load((Path(__file__).parent / "toy_params.yaml").read_text())


def chosen_lr(ws: Path, topology: str, lr: float) -> None:
    """What select_lr leaves for the training stages, without running the lr grid (not under test there)."""
    (ws / "lr_search" / topology).mkdir(parents=True, exist_ok=True)
    (ws / "lr_search" / topology / "chosen.json").write_text(json.dumps({"lr": lr}))


@pytest.fixture
def toy_params():
    """A fresh, valid copy of the toy params (tiny model, synthetic domains) for each test."""
    return copy.deepcopy(TOY_PARAMS)


@pytest.fixture
def one_thread():
    """Tiny models: one thread is faster, and far faster on a busy machine (no oversubscription). Modules of
    tiny-model tests use it for every test (pytestmark)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory, params):
    """Token arrays built once per test module from that module's `params` fixture."""
    folder = tmp_path_factory.mktemp("tokens")
    build(params, folder)
    return folder
