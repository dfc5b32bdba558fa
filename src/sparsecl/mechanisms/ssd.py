"""`ssd`: Selective Subnetwork Distillation (Xue et al. 2025), for a language model.

SSD distils the Top-K subnetworks of an SDMLP-style network, so its arms run on model.mlp_activation =
topk (SDMLP's activation, `model.gpt.kwta`) with k = model.topk_k: the mechanisms preset sets it, and a
`k` other than the activation's is refused by the params check. The teacher is a frozen snapshot of the model at the end of the
previous phase (the pretrained model for phase 1). On `freq_tokens` tokens of the previous domain, the
teacher gives every MLP unit an activation frequency p_i: the fraction of tokens on which the unit fires,
i.e. is among its layer's k largest activations and positive (on GELU, which SSD does not assume, simply
the k largest). The n = round(n_ratio * k) most frequent units of each layer are selected. The loss, on current-domain
batches only (no replay, no domain labels), is

    alpha * CE + (1 - alpha) * [lambda * T^2 * KL_units + (1 - lambda) * T^2 * KL_logits]

with KL(teacher || student) of temperature-T softmaxes: KL_logits over the vocabulary, KL_units over each
layer's n selected units (their activations at a token read as logits over those units), mean over layers.

Reported: representation coverage (the fraction of units among the top k on at least
`coverage_threshold` of some domain's tokens) and the Jaccard overlap of the selected sets of domains.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sparsecl.checks import number
from sparsecl.mechanisms.base import Mechanism
from sparsecl.mechanisms.common import probe_windows, restore_snapshot, snapshot, snapshot_state
from sparsecl.cost import forward_flops, param_bytes
from sparsecl.names import phase_label


class SoftenedKL(torch.autograd.Function):
    """Mean over positions of KL(softmax(teacher / T) || softmax(student / T)) over the last dim, with its
    gradient (softmax(student / T) - softmax(teacher / T)) / T made in the forward pass: forward and backward
    over (16, 128, 4096) take 0.7x the time of autograd through log_softmax and kl_div (84 vs 121 ms, 2-core
    CPU, side by side; same gradient to 1e-14)."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
        ctx.shape, ctx.dtype = student.shape, student.dtype
        student, teacher = student.float().flatten(0, -2), teacher.float().flatten(0, -2)
        log_s = F.log_softmax(student / temperature, -1)
        log_t = F.log_softmax(teacher / temperature, -1)
        p_t = log_t.exp()
        n = student.shape[0]
        loss = torch.dot(p_t.view(-1), (log_t - log_s).view(-1)) / n
        ctx.save_for_backward(log_s.exp_().sub_(p_t).div_(temperature * n))
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (g,) = ctx.saved_tensors
        return (grad * g).view(ctx.shape).to(ctx.dtype), None, None


def softened_kl(teacher: torch.Tensor, student: torch.Tensor, temperature: float) -> torch.Tensor:
    return SoftenedKL.apply(student, teacher, temperature)


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over layers of |A & B| / |A | B| for two (layers, n) index sets."""
    scores = []
    for x, y in zip(a.tolist(), b.tolist()):
        x, y = set(x), set(y)
        scores.append(len(x & y) / len(x | y))
    return sum(scores) / len(scores)


class SelectiveSubnetworkDistillation(Mechanism):
    SCHEMA = {"alpha": number(0, 1), "lambda": number(0, 1), "temperature": number(0, lo_open=True),
              "k": number(1, integer=True), "n_ratio": number(0, lo_open=True),
              "freq_tokens": number(1, integer=True), "coverage_threshold": number(0, 1)}

    def __init__(self, settings: dict, seed: int = 0):
        super().__init__(settings, seed)
        self.teacher = None
        self.labels: list[str] = []               # every finished phase, "phase<k>_<domain>"
        self.freqs: list[torch.Tensor] = []       # its domain's (layers, units) activation frequencies
        self.selected: list[torch.Tensor] = []    # its (layers, n) selected units

    def begin_phase(self, phase, domain, model) -> None:
        super().begin_phase(phase, domain, model)
        device = next(model.parameters()).device
        self.teacher.to(device)
        self.teacher_flops_per_token = forward_flops(self.teacher)
        self.distilled_units = self.selected[-1].to(device)  # once, not a host-to-device copy per batch

    def end_phase(self, phase, domain, model, train_tokens) -> None:
        self.teacher = snapshot(model)
        freq = self.frequencies(self.teacher, probe_windows(train_tokens, self.settings["freq_tokens"], model))
        n = max(1, round(self.settings["n_ratio"] * self.settings["k"]))
        self.labels.append(phase_label(phase, domain))
        self.freqs.append(freq)
        self.selected.append(freq.topk(n, dim=1).indices.sort(dim=1).values)

    @torch.no_grad()
    def frequencies(self, teacher, windows: torch.Tensor) -> torch.Tensor:
        k = self.settings["k"]
        counts = None
        for w in windows.split(32):
            acts: list[torch.Tensor] = []
            teacher(w[:, :-1], acts=acts)
            top = [a.topk(k, dim=-1) for a in acts]
            wins = torch.stack([t.indices.flatten() for t in top])  # (layers, tokens * k)
            fired = torch.stack([(t.values > 0).flatten().float() for t in top])  # Top-K may fire fewer than k
            hits = torch.zeros(len(acts), acts[0].shape[-1], device=wins.device).scatter_add_(1, wins, fired)
            counts = hits if counts is None else counts + hits
        tokens = windows[:, :-1].numel()
        self.flops += forward_flops(teacher) * tokens
        return (counts / tokens).cpu()

    def terms(self, model, x, y) -> dict[str, torch.Tensor]:
        """The loss's three weighted terms on one batch: next-token loss, unit KL, logit KL (their gradients
        apart are how much each one steers training: tests/test_ssd.py, docs/MECHANISMS.md)."""
        s, T = self.settings, self.settings["temperature"]
        acts: list[torch.Tensor] = []
        logits, ce = self.lm_loss(model, x, y, acts=acts)
        with torch.no_grad():
            teacher_acts: list[torch.Tensor] = []
            teacher_logits = self.teacher(x, acts=teacher_acts)[0]
        self.flops += self.teacher_flops_per_token * self.batch_tokens(x)
        units = sum(softened_kl(ta[..., sel], sa[..., sel], T)
                    for ta, sa, sel in zip(teacher_acts, acts, self.distilled_units)) / len(acts)
        outputs = softened_kl(teacher_logits, logits, T)
        distill = (1 - s["alpha"]) * T * T
        return {"ce": s["alpha"] * ce, "units": distill * s["lambda"] * units,
                "logits": distill * (1 - s["lambda"]) * outputs}

    def loss(self, model, x, y):
        t = self.terms(model, x, y)
        return t["ce"] + t["units"] + t["logits"]

    def extra_memory_bytes(self) -> int:
        return param_bytes(self.teacher) if self.teacher is not None else 0

    def metrics(self) -> dict:
        threshold = self.settings["coverage_threshold"]
        used = [f >= threshold for f in self.freqs]
        pairs = {f"{self.labels[i]}-{self.labels[j]}": jaccard(self.selected[i], self.selected[j])
                 for i in range(len(self.labels)) for j in range(i + 1, len(self.labels))}
        consecutive = [pairs[f"{a}-{b}"] for a, b in zip(self.labels, self.labels[1:])]
        return {"coverage": float(torch.stack(used).any(0).float().mean()),
                "coverage_per_phase": {k: float(u.float().mean()) for k, u in zip(self.labels, used)},
                "jaccard_consecutive_mean": sum(consecutive) / max(1, len(consecutive)),
                "jaccard": pairs}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "teacher": None if self.teacher is None else snapshot_state(self.teacher),
                "labels": self.labels, "freqs": self.freqs, "selected": self.selected}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.teacher = None if state["teacher"] is None else restore_snapshot(state["teacher"])
        self.labels, self.freqs, self.selected = state["labels"], state["freqs"], state["selected"]
