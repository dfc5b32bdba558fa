"""Stage `evaluate`: the loss matrix of one arm (untrained, after pretraining, after every phase)."""
from pathlib import Path

from sparsecl import stage
from sparsecl.data.tokens import TokenData
from sparsecl.device import resolve_device
from sparsecl.io import write_json
from sparsecl.metrics.evaluate import loss_matrix
from sparsecl.model.sparse_export import export_sparse, inference_complexity, latency
from sparsecl.names import PRETRAINED, arm_name, base_name, early_checkpoint, early_label, phase_checkpoint, phase_label
from sparsecl.topology.store import load_masks


def main(params, args):
    base, arm = base_name(args.topology, args.seed), arm_name(args.topology, args.mechanism, args.seed)
    order = params["data"]["order"]
    pre, seq = Path(f"models/pretrain/{base}"), Path(f"models/sequential/{arm}")
    domains = list(dict.fromkeys(order))  # every checkpoint on every distinct domain, once each
    # A mechanism that changes the pretrained model before phase 1 (postprune prunes it) saved its own
    # phase-0 checkpoint: the loss matrix starts there, and the pretrained model is scored beside it
    # ("pretrained"), so the change's damage is reported apart from forgetting.
    start = seq / phase_checkpoint(0)
    before = {PRETRAINED: (pre / "model.pt", domains)} if start.exists() else {}
    # Learning speed: a phase's early checkpoint on the domain it is learning, first (the last one evaluated
    # is the final model).
    later = range(1, len(order))
    checkpoints = {**{early_label(k, order[k]): (seq / early_checkpoint(k), [order[k]]) for k in later},
                   "untrained": (pre / "init.pt", domains), **before,
                   phase_label(0, order[0]): (start if before else pre / "model.pt", domains),
                   **{phase_label(k, order[k]): (seq / phase_checkpoint(k), domains) for k in later}}
    masks = load_masks(f"data/masks/{base}.pt")
    losses, final = loss_matrix(checkpoints, masks, TokenData("data/tokens"), resolve_device(params["device"]))
    early = {label: losses.pop(label) for label in list(losses) if label.startswith("early")}
    # The final model's inference complexity: counts in the metrics (deterministic), the
    # measured CPU latency of its exported sparse form in a file of its own (wall-clock, differs every run).
    sparse = export_sparse(final)
    write_json(f"metrics/eval/{arm}.json", {"loss": losses, "early": early,
                                            "inference": inference_complexity(final, sparse)})
    write_json(f"inference/{arm}.json", latency(final, sparse, repeats=10))


if __name__ == "__main__":
    stage.run(main, "topology", "mechanism", "seed")
