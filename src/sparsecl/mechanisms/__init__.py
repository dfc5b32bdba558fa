"""Continual-learning mechanisms, found by name. Each is one module with one Mechanism subclass;
to add one, write the module and register its class here (and give it settings in params.yaml)."""
from sparsecl.mechanisms.base import Mechanism
from sparsecl.mechanisms.none import NoMechanism

MECHANISMS: dict[str, type[Mechanism]] = {"none": NoMechanism}


def make(name: str, settings: dict) -> Mechanism:
    return MECHANISMS[name](settings)
