"""Names of the pipeline's units, built and taken apart here only (file names, dvc.yaml's matrix keys, the
loss matrix's row labels and the report all use them).

- base `<topology>-s<seed>`: what a topology and seed share: masks, pretraining, references.
- arm `<topology>-<mechanism>-s<seed>`: one run of the later phases with one mechanism. Topology and
  mechanism names hold no "-" (the registries' names), so an arm name parses back unambiguously.
- phase label `phase<k>_<domain>`: phase k's row of the loss matrix, its step-log folder and its entries in
  the mechanisms' histories (a domain met twice gets two labels); `early<k>_<domain>` is the evaluation
  `phase.speed_steps` into phase k (learning speed).
- checkpoint files of the later phases: `phase<k>.pt` at a phase's end, `phase<k>_early.pt` after its first
  `phase.speed_steps` steps.
"""
from __future__ import annotations

from typing import NamedTuple


PRETRAINED = "pretrained"  # the loss-matrix row of the pretrained model where an arm starts from a changed one


class ArmName(NamedTuple):
    topology: str
    mechanism: str
    seed: int


def base_name(topology: str, seed: int) -> str:
    return f"{topology}-s{seed}"


def arm_name(topology: str, mechanism: str, seed: int) -> str:
    return f"{topology}-{mechanism}-s{seed}"


def parse_arm(name: str) -> ArmName:
    """`random-none-s0` -> ArmName('random', 'none', 0)."""
    topology, mechanism, seed = name.rsplit("-", 2)
    return ArmName(topology, mechanism, int(seed.removeprefix("s")))


def phase_label(phase: int, domain: str) -> str:
    return f"phase{phase}_{domain}"


def early_label(phase: int, domain: str) -> str:
    return f"early{phase}_{domain}"


def phase_checkpoint(phase: int) -> str:
    return f"phase{phase}.pt"


def early_checkpoint(phase: int) -> str:
    """The checkpoint taken `phase.speed_steps` steps into a phase (its loss on that phase's domain is the
    arm's learning speed there)."""
    return f"phase{phase}_early.pt"
