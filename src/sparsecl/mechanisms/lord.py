"""`lord`: Low-Redundancy Distillation (Liu et al. 2025, seed 002; code EMLS-ICTCAS/LoRD), for a language
model. DER++ (same buffer, `alpha` and `beta` terms) with its three redundancies removed:

1. Student: in phase k only a fraction f_k of each layer's MLP units and attention heads is trainable (the
   first ones by index; the rest keep their values), on a cosine ramp from `start_fraction` at phase 1 to 1
   at phase `full_at_phase`. Their frozen weights need no weight gradients, which the FLOP count credits.
2. Teacher: at the end of each phase (pretraining included), `teacher_candidates` structured subnetworks
   (per layer a random share of MLP units, in eighths, and of heads, keeping those with the largest
   outgoing weights) are scored on `probe_tokens` tokens of the finished domain by
   MSE(subnetwork logits, model logits) * exp(-occupancy), occupancy = the subnetwork's share of the
   attention and MLP weights (the tied embedding, kept whole, is 40% of the dense model and 90% of the
   5%-dense one: counting it would leave no sparse candidate under the limit);
   the best one with occupancy < `max_occupancy` becomes the frozen teacher. Every step adds `distill` *
   MSE(logits of the student's same subnetwork, teacher logits) on the current batch.
3. Rehearsal: each candidate sequence is offered to the buffer with probability
   exp(-insert_decay * occupancy), and the replay terms are added on every `replay_every`-th batch only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sparsecl.checks import number
from sparsecl.mechanisms.common import FrozenEntries, probe_windows, restore_snapshot, snapshot, snapshot_state
from sparsecl.mechanisms.cost import block_weights, forward_flops, matmul_weights, param_bytes
from sparsecl.mechanisms.derpp import DERPP_SCHEMA, DarkExperienceReplay


def trainable_entries(model, fraction: float):
    """The first round(fraction * n) MLP units and heads (at least one) of every layer: the trainable
    entries of each of their matrices, and the subnetwork as 0/1 vectors (units, heads) per layer."""
    trainable, units, heads = {}, [], []
    device = next(model.parameters()).device
    for i, block in enumerate(model.transformer.h):
        n_units, n_head = block.mlp.c_fc.out_features, block.attn.n_head
        C = block.attn.c_proj.in_features
        u = torch.arange(n_units, device=device) < max(1, round(fraction * n_units))
        h = torch.arange(n_head, device=device) < max(1, round(fraction * n_head))
        rows = h.repeat_interleave(C // n_head)  # one entry per q (or k, v) row / attention-output column
        entries = {"mlp.c_fc.weight": u[:, None].expand(n_units, C), "mlp.c_proj.weight": u[None, :].expand(C, n_units),
                   "attn.c_attn.weight": rows.repeat(3)[:, None].expand(3 * C, C),
                   "attn.c_proj.weight": rows[None, :].expand(C, C), "mlp.c_fc.bias": u,
                   "attn.c_attn.bias": rows.repeat(3)}
        params = dict(block.named_parameters())
        trainable.update({f"transformer.h.{i}.{k}": m.contiguous() for k, m in entries.items() if k in params})
        units.append(u.float())
        heads.append(h.float())
    return trainable, units, heads


class LowRedundancyDistillation(DarkExperienceReplay):
    SCHEMA = {**DERPP_SCHEMA, "distill": number(0), "start_fraction": number(0, 1, lo_open=True),
              "full_at_phase": number(1, integer=True), "teacher_candidates": number(1, integer=True),
              "max_occupancy": number(0, 1, lo_open=True), "insert_decay": number(0),
              "replay_every": number(1, integer=True), "probe_tokens": number(1, integer=True)}

    def __init__(self, settings: dict, seed: int = 0):
        super().__init__(settings, seed)
        self.teacher = None
        self.units = self.heads = None  # the teacher's subnetwork
        self.occupancy = 1.0
        self.frozen: FrozenEntries | None = None
        self.batches = 0  # loss calls this phase, for the replay frequency
        self.history: dict[str, dict[str, float]] = {"trainable_fraction": {}, "teacher_occupancy": {}}

    def trainable_fraction(self, phase: int) -> float:
        start, full = self.settings["start_fraction"], self.settings["full_at_phase"]
        if phase >= full:
            return 1.0
        return start + (1 - start) * (1 - math.cos(math.pi * (phase - 1) / (full - 1))) / 2

    def begin_phase(self, phase, domain, model) -> None:
        super().begin_phase(phase, domain, model)
        fraction = self.trainable_fraction(phase)
        trainable, units, heads = trainable_entries(model, fraction)
        self.frozen = FrozenEntries(model, trainable)
        # Frozen units need no weight gradients: backward costs 2x forward minus their share.
        self.train_flops_per_token -= 2 * (matmul_weights(model) - matmul_weights(model, units, heads))
        device = next(model.parameters()).device
        self.teacher.to(device)
        self.units, self.heads = [u.to(device) for u in self.units], [h.to(device) for h in self.heads]
        self.teacher_flops_per_token = forward_flops(self.teacher, self.units, self.heads)
        self.subnet_train_flops_per_token = 3 * forward_flops(model, self.units, self.heads)
        self.batches = 0
        self.student = model  # for its subnetwork switch: `loss` may receive it wrapped (DDP, torch.compile)
        self.history["trainable_fraction"][f"phase{phase}_{domain}"] = fraction

    def loss(self, model, x, y):
        s = self.settings
        loss = self.next_token_loss(model, x, y)
        with self.student.subnetwork(self.units, self.heads):
            student = model(x)[0]
        with torch.no_grad(), self.teacher.subnetwork(self.units, self.heads):
            teacher = self.teacher(x)[0]
        self.flops += (self.subnet_train_flops_per_token + self.teacher_flops_per_token) * self.batch_tokens(x)
        loss = loss + s["distill"] * F.mse_loss(student.float(), teacher.float())
        self.batches += 1
        if (self.batches - 1) % s["replay_every"] == 0:
            loss = loss + self.replay_loss(model)
        return loss

    def before_step(self, model) -> None:
        self.frozen.zero_grads(model)

    def after_step(self, model, step, steps) -> None:
        self.frozen.restore(model)

    def end_phase(self, phase, domain, model, train_tokens) -> None:
        s = self.settings
        self.teacher = snapshot(model)
        self.units, self.heads, self.occupancy = self.search(
            self.teacher, probe_windows(train_tokens, s["probe_tokens"], model)[:, :-1])
        self.history["teacher_occupancy"][f"phase{phase}_{domain}"] = self.occupancy
        candidates = probe_windows(train_tokens, s["buffer_size"] * model.cfg.block_size, model)
        admit = torch.rand(len(candidates), generator=self.rng) < self.insert_probability()
        self.insert(model, candidates[admit.to(candidates.device)])

    def insert_probability(self) -> float:
        return math.exp(-self.settings["insert_decay"] * self.occupancy)

    @torch.no_grad()
    def search(self, teacher, x: torch.Tensor):
        """The candidate subnetwork with the lowest MSE(sub logits, full logits) * exp(-occupancy) below
        max_occupancy: (units, heads, occupancy)."""
        s = self.settings
        full = teacher(x)[0].float()
        total = block_weights(teacher)
        # Units and heads ranked by the L1 norm of their outgoing weights (OFA's channel ordering).
        unit_rank = [b.mlp.c_proj.weight.abs().sum(0).argsort(descending=True, stable=True) for b in teacher.transformer.h]
        head_rank = [b.attn.c_proj.weight.abs().view(b.attn.c_proj.out_features, b.attn.n_head, -1).sum((0, 2))
                     .argsort(descending=True, stable=True) for b in teacher.transformer.h]
        best = None
        self.flops += forward_flops(teacher) * x.numel()
        for _ in range(s["teacher_candidates"]):
            units, heads = [], []
            for ur, hr in zip(unit_rank, head_rank):
                keep_u = len(ur) * int(torch.randint(1, 9, (), generator=self.rng)) // 8
                keep_h = int(torch.randint(1, len(hr) + 1, (), generator=self.rng))
                units.append(torch.zeros(len(ur), device=x.device).index_fill_(0, ur[:keep_u], 1.0))
                heads.append(torch.zeros(len(hr), device=x.device).index_fill_(0, hr[:keep_h], 1.0))
            occupancy = block_weights(teacher, units, heads) / total
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
        return super().extra_memory_bytes() + teacher

    def metrics(self) -> dict:
        return {**super().metrics(), **self.history}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "teacher": None if self.teacher is None else snapshot_state(self.teacher),
                "units": self.units, "heads": self.heads, "occupancy": self.occupancy, "batches": self.batches,
                "frozen": None if self.frozen is None else self.frozen.state_dict(), "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.teacher = None if state["teacher"] is None else restore_snapshot(state["teacher"])
        self.units, self.heads, self.occupancy = state["units"], state["heads"], state["occupancy"]
        self.batches, self.history = state["batches"], state["history"]
        self.frozen = None if state["frozen"] is None else FrozenEntries.from_state(state["frozen"])
