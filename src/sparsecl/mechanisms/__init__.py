"""Continual-learning mechanisms, found by name. Each is one module with one Mechanism subclass;
to add one, write the module and register its class here (and give it settings in params.yaml).
Shared pieces: `buffer.py` (reservoir replay buffer), `common.py` (teacher snapshot, probe windows,
frozen parameter entries); their FLOPs and parameters are counted by `sparsecl.cost`."""
from sparsecl.mechanisms.base import Mechanism
from sparsecl.mechanisms.derpp import DarkExperienceReplay
from sparsecl.mechanisms.er import ExperienceReplay
from sparsecl.mechanisms.ewc import OnlineEWC
from sparsecl.mechanisms.lord import LowRedundancyDistillation
from sparsecl.mechanisms.none import NoMechanism
from sparsecl.mechanisms.postprune import PostPrune
from sparsecl.mechanisms.ssd import SelectiveSubnetworkDistillation

MECHANISMS: dict[str, type[Mechanism]] = {
    "none": NoMechanism,
    "ewc": OnlineEWC,
    "er": ExperienceReplay,
    "derpp": DarkExperienceReplay,
    "ssd": SelectiveSubnetworkDistillation,
    "lord": LowRedundancyDistillation,
    "postprune": PostPrune,
}


def make(name: str, settings: dict, seed: int = 0) -> Mechanism:
    return MECHANISMS[name](settings, seed)
