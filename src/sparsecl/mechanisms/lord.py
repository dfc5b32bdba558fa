"""`lord`: Low-Redundancy Distillation (Liu et al. 2025; code EMLS-ICTCAS/LoRD), for a language
model. DER++ (same buffer, `alpha` and `beta` terms) with its three redundancies removed:

1. Student: LoRD's network grows in width over the tasks. In phase k only a fraction f_k of each layer's MLP
   units and attention heads takes part in the forward pass, on a cosine ramp from `start_fraction` at
   phase 1 to 1 at phase `full_at_phase`; the units and heads kept are the ones with the largest outgoing
   weights in the pretrained model (OFA's channel order, fixed for the run, so each stage contains the
   last). With `student: grow` (LoRD) the others are removed: their weights are held by the mechanism and
   are 0 in the model, so they contribute nothing, get no gradient, and every checkpoint is the stage's
   network; they rejoin with their held values when the stage reaches them. `student: freeze` (an
   ablation, not LoRD) keeps every unit in the forward pass and holds those beyond the stage at their
   values (parameter isolation of pretrained units).
2. Teacher: at the end of each phase (pretraining included), `teacher_candidates` structured subnetworks
   of the stage's network (per layer a random share of its units, in eighths, and of its heads, keeping
   those with the largest outgoing weights) are scored on `probe_tokens` tokens of the finished domain by
   MSE(subnetwork logits, model logits) * exp(-occupancy), occupancy = the subnetwork's share of the
   attention and MLP weights of the whole (pretrained) width (the tied embedding, kept whole, is 40% of the
   dense model and 90% of the 5%-dense one: counting it would leave no sparse candidate under the limit);
   the best one with occupancy < `max_occupancy` becomes the frozen teacher. Every step adds `distill` *
   MSE(logits of the student's same subnetwork, teacher logits) on the current batch.
3. Rehearsal: a domain enters the buffer at the rate exp(-insert_decay * occupancy) (LoRD's per-sample
   coin): of ceil(buffer_size * exp(insert_decay)) candidate windows, round(that rate x their number),
   drawn at random, are offered, at least buffer_size, so the buffer is full after the pretraining phase;
   the replay terms are added on every `replay_every`-th optimizer step only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sparsecl.checks import choice, number
from sparsecl.mechanisms.common import FrozenEntries, probe_windows, restore_snapshot, snapshot, snapshot_state
from sparsecl.cost import block_weights, forward_flops, matmul_weights, param_bytes
from sparsecl.mechanisms.derpp import DERPP_SCHEMA, DarkExperienceReplay
from sparsecl.names import phase_label

STUDENTS = ("grow", "freeze")


def outgoing_l1(block) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 norms of the outgoing weights of a block's MLP units and of its heads (attention-output columns)."""
    proj = block.attn.c_proj.effective_weight.abs()
    return (block.mlp.c_proj.effective_weight.abs().sum(0),
            proj.view(proj.shape[0], block.attn.n_head, -1).sum((0, 2)))


@torch.no_grad()
def unit_order(model) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, its MLP units and its heads from the largest L1 norm of outgoing weights to the smallest
    (OFA's channel ordering); units and heads without any outgoing weight (removed ones) come last."""
    return [tuple(n.argsort(descending=True, stable=True) for n in outgoing_l1(b)) for b in model.transformer.h]


def first_of(order: torch.Tensor, n: int) -> torch.Tensor:
    """A 0/1 float vector over len(order) units (or heads) with the first n of `order` set."""
    return torch.zeros(len(order), device=order.device).index_fill_(0, order[:n], 1.0)


def stage(order, fraction: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The first round(fraction * n) MLP units and heads (at least one) of every layer in `order`, as 0/1
    vectors per layer (units, heads)."""
    units = [first_of(u, max(1, round(fraction * len(u)))) for u, _ in order]
    heads = [first_of(h, max(1, round(fraction * len(h)))) for _, h in order]
    return units, heads


def subnetwork_entries(model, units, heads) -> dict[str, torch.Tensor]:
    """The entries of every attention and MLP matrix (and bias) that belong to the given units and heads:
    a unit's row of fc and column of proj, a head's q, k, v rows and attention-output columns."""
    entries = {}
    for i, (block, u, h) in enumerate(zip(model.transformer.h, units, heads)):
        C, n_units = block.attn.c_proj.in_features, block.mlp.c_fc.out_features
        u, rows = u.bool(), h.bool().repeat_interleave(C // block.attn.n_head)  # one per q (k, v) row
        masks = {"mlp.c_fc.weight": u[:, None].expand(n_units, C), "mlp.c_proj.weight": u[None, :].expand(C, n_units),
                 "attn.c_attn.weight": rows.repeat(3)[:, None].expand(3 * C, C),
                 "attn.c_proj.weight": rows[None, :].expand(C, C), "mlp.c_fc.bias": u,
                 "attn.c_attn.bias": rows.repeat(3)}
        params = dict(block.named_parameters())
        entries.update({f"transformer.h.{i}.{k}": m.contiguous() for k, m in masks.items() if k in params})
    return entries


class LowRedundancyDistillation(DarkExperienceReplay):
    sparse_kernel_ok = False  # its teachers and frozen units read weights by shape
    SCHEMA = {**DERPP_SCHEMA, "distill": number(0), "student": choice(STUDENTS),
              "start_fraction": number(0, 1, lo_open=True), "full_at_phase": number(1, integer=True),
              "teacher_candidates": number(1, integer=True), "max_occupancy": number(0, 1, lo_open=True),
              "insert_decay": number(0), "replay_every": number(1, integer=True),
              "probe_tokens": number(1, integer=True)}

    def __init__(self, settings: dict, seed: int = 0):
        super().__init__(settings, seed)
        self.teacher = None
        self.units = self.heads = None  # the teacher's subnetwork
        self.occupancy = 1.0
        self.order = None  # units and heads in the order the stages take them (set on the pretrained model)
        self.full_weights = 0.0  # attention and MLP weights of the whole width, occupancy's denominator
        # Entries of the units and heads beyond the stage: removed from the model (grow) or frozen (freeze).
        self.outside: FrozenEntries | None = None
        self.step = 0  # optimizer steps done this phase, for the replay frequency
        self.history: dict[str, dict[str, float]] = {"trainable_fraction": {}, "teacher_occupancy": {}}

    @property
    def grows(self) -> bool:
        return self.settings["student"] == "grow"

    def trainable_fraction(self, phase: int) -> float:
        start, full = self.settings["start_fraction"], self.settings["full_at_phase"]
        if phase >= full:
            return 1.0
        return start + (1 - start) * (1 - math.cos(math.pi * (phase - 1) / (full - 1))) / 2

    def begin_phase(self, phase, domain, model) -> None:
        fraction = self.trainable_fraction(phase)
        device = next(model.parameters()).device
        self.order = [(u.to(device), h.to(device)) for u, h in self.order]
        units, heads = stage(self.order, fraction)
        if self.grows and self.outside is not None:
            self.outside.restore(model)  # the units removed so far rejoin; those still beyond leave again
        self.outside = FrozenEntries(model, subnetwork_entries(model, units, heads))
        if self.grows:
            self.outside.remove(model)
        super().begin_phase(phase, domain, model)
        if self.grows:  # the stage's network: removed heads' attention is not computed either
            self.train_flops_per_token = 3 * forward_flops(model, units, heads)
        else:  # frozen units need no weight gradients: backward costs 2x forward minus their share
            self.train_flops_per_token -= 2 * (matmul_weights(model) - matmul_weights(model, units, heads))
        self.teacher.to(device)
        self.units, self.heads = [u.to(device) for u in self.units], [h.to(device) for h in self.heads]
        self.teacher_flops_per_token = forward_flops(self.teacher, self.units, self.heads)
        self.subnet_train_flops_per_token = 3 * forward_flops(model, self.units, self.heads)
        self.step = 0
        self.student = model  # for its subnetwork switch: `loss` may receive it wrapped (DDP, torch.compile)
        self.history["trainable_fraction"][phase_label(phase, domain)] = fraction

    def loss(self, model, x, y):
        s = self.settings
        loss = self.next_token_loss(model, x, y)
        with self.student.subnetwork(self.units, self.heads):
            student = model(x)[0]
        with torch.no_grad(), self.teacher.subnetwork(self.units, self.heads):
            teacher = self.teacher(x)[0]
        self.flops += (self.subnet_train_flops_per_token + self.teacher_flops_per_token) * self.batch_tokens(x)
        loss = loss + s["distill"] * F.mse_loss(student.float(), teacher.float())
        if self.step % s["replay_every"] == 0:  # every micro-batch of such a step replays
            loss = loss + self.replay_loss(model)
        return loss

    def before_step(self, model) -> None:
        if not self.grows:  # removed units get no gradient: they are 0 and so is everything they feed
            self.outside.zero_grads(model)

    def after_step(self, model, step, steps) -> None:
        self.step = step
        if not self.grows:
            self.outside.restore(model)

    def end_phase(self, phase, domain, model, train_tokens) -> None:
        s = self.settings
        if phase == 0:
            self.order, self.full_weights = unit_order(model), block_weights(model)
        self.teacher = snapshot(model)
        self.units, self.heads, self.occupancy = self.search(
            self.teacher, probe_windows(train_tokens, s["probe_tokens"], model)[:, :-1])
        self.history["teacher_occupancy"][phase_label(phase, domain)] = self.occupancy
        n = math.ceil(s["buffer_size"] * math.exp(s["insert_decay"]))  # at the least rate, buffer_size enter
        candidates = self.candidates(domain, n, model, train_tokens)
        admitted = torch.randperm(n, generator=self.rng)[: round(n * self.insert_probability())].sort().values
        self.insert(model, candidates[admitted.to(candidates.device)])

    def insert_probability(self) -> float:
        return math.exp(-self.settings["insert_decay"] * self.occupancy)

    @torch.no_grad()
    def search(self, teacher, x: torch.Tensor):
        """The candidate subnetwork of the stage's network with the lowest MSE(sub logits, full logits) *
        exp(-occupancy) below max_occupancy: (units, heads, occupancy)."""
        s = self.settings
        full = teacher(x)[0].float()
        # The stage's units and heads, those with outgoing weights, come first in unit_order.
        active = [tuple(int((n > 0).sum()) for n in outgoing_l1(b)) for b in teacher.transformer.h]
        order = unit_order(teacher)
        best = None
        self.flops += forward_flops(teacher) * x.numel()
        for _ in range(s["teacher_candidates"]):
            units, heads = [], []
            for (ur, hr), (n_units, n_heads) in zip(order, active):
                units.append(first_of(ur, n_units * int(torch.randint(1, 9, (), generator=self.rng)) // 8))
                heads.append(first_of(hr, int(torch.randint(1, max(1, n_heads) + 1, (), generator=self.rng))))
            occupancy = block_weights(teacher, units, heads) / self.full_weights
            if occupancy >= s["max_occupancy"]:
                continue
            with teacher.subnetwork(units, heads):
                score = F.mse_loss(teacher(x)[0].float(), full).item() * math.exp(-occupancy)
            self.flops += forward_flops(teacher, units, heads) * x.numel()
            if best is None or score < best[0]:
                best = (score, units, heads, occupancy)
        if best is None:
            raise ValueError(f"mechanism.lord.max_occupancy={s['max_occupancy']}: none of the "
                             f"{s['teacher_candidates']} candidate teachers is that small; raise it")
        return best[1], best[2], best[3]

    def extra_memory_bytes(self) -> int:
        teacher = 0 if self.teacher is None else param_bytes(self.teacher, self.units, self.heads)
        removed = self.outside.nbytes() if self.grows and self.outside is not None else 0
        return super().extra_memory_bytes() + teacher + removed

    def metrics(self) -> dict:
        return {**super().metrics(), **self.history}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "teacher": None if self.teacher is None else snapshot_state(self.teacher),
                "units": self.units, "heads": self.heads, "occupancy": self.occupancy, "order": self.order,
                "full_weights": self.full_weights, "step": self.step,
                "outside": None if self.outside is None else self.outside.state_dict(), "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.teacher = None if state["teacher"] is None else restore_snapshot(state["teacher"])
        self.units, self.heads, self.occupancy = state["units"], state["heads"], state["occupancy"]
        self.order, self.full_weights, self.step = state["order"], state["full_weights"], state["step"]
        self.history = state["history"]
        self.outside = None if state["outside"] is None else FrozenEntries.from_state(state["outside"])
