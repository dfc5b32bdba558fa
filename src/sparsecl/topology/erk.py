"""`random` with RigL's ERK layer allocation, under its own name so one run can hold both random arms
(`random` keeps its own `allocation` setting; this one is always ERK)."""
from sparsecl.topology import random_er

SCHEMA: dict = {}


def build(blocks, density, settings, rng):
    return random_er.build(blocks, density, {"allocation": "erk"}, rng)
