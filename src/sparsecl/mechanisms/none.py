"""`none`: plain sequential training, the core ablation (no freezing, regularizer or replay)."""
from sparsecl.mechanisms.base import Mechanism


class NoMechanism(Mechanism):
    SCHEMA: dict = {}
    sparse_kernel_ok = True
