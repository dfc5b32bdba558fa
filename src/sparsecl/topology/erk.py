"""`random` with RigL's ERK layer allocation, under its own name so one run can hold both random arms
(`random` keeps its own settings; this one is always ERK, plain Erdos-Renyi, a new mask in every layer)."""
from sparsecl.topology import random_er
from sparsecl.topology.allocation import allocate

SCHEMA: dict = {}


def kept(blocks, density, settings):
    return allocate(blocks, density, "erk")


def build(blocks, density, settings, rng):
    return random_er.build(blocks, density, {"allocation": "erk", "no_dead_units": False,
                                             "same_mask_every_layer": False}, rng)
