"""The training stages: a topology's lr grid on domain A, pretraining one (topology, seed) arm on domain A,
learning the later domains one phase each with a mechanism, and the arm's references (joint training on all
domains, each later domain from scratch). Every arm trains at its topology's chosen lr. Work in progress lives
in a resume folder outside DVC's outputs, so a killed stage picks up where it stopped when rerun; finished
files are then published into the stage's outputs. The folder is stamped with everything the result depends on
(settings, input hashes, this package's code), so work from other settings or other code is never resumed.

Under torchrun (train/distributed.py) every rank trains; only rank 0 touches the resume folder and the
outputs, and the others wait for it where they read what it wrote.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sparsecl import cost
from sparsecl.data.batches import Mixture, eval_windows, selection_windows
from sparsecl.data.tokens import TokenData
from sparsecl.device import resolve_device
from sparsecl.errors import NonFiniteLossError
from sparsecl.io import atomic_path, read_json, sha256_file, write_json, write_text
from sparsecl.mechanisms import make as make_mechanism
from sparsecl.metrics.evaluate import mean_nll
from sparsecl.model import GPT, config_from_params
from sparsecl.model.checkpoint import load_checkpoint, save_checkpoint
from sparsecl.names import arm_name, base_name, early_checkpoint, phase_checkpoint, phase_label
from sparsecl.model.masks import mask_hash
from sparsecl.topology.store import load_masks, make_masks
from sparsecl.train import distributed
from sparsecl.train.loop import train_phase

RESUME_ROOT = Path("runs/resume")
# Batch streams of the reference runs, apart from the arms' phases 0..T (a batch depends on seed, phase, step).
JOINT_PHASE, SCRATCH_PHASE = 10_000, 20_000


def train_settings(params: dict, lr_file: str | Path) -> dict:
    """params.train with the lr the lr_search stage chose for this arm's topology."""
    return {**params["train"], "lr": read_json(lr_file)["lr"]}


def _fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps([_code_hash(), *parts], sort_keys=True, default=str).encode()).hexdigest()


def _code_hash() -> str:
    """This package's source: after a code change DVC reruns the stage, and old work must not be resumed."""
    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        h.update(f"{f.relative_to(package)}\0".encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _resume_dir(arm: str, fingerprint: str) -> Path:
    """A folder for this arm's unfinished work; stale work from other settings is discarded."""
    folder = RESUME_ROOT / arm
    stamp = folder / "fingerprint"
    if distributed.is_main():
        if folder.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
            print(f"[{arm}] discarding unfinished work from different settings in {folder}", flush=True)
            shutil.rmtree(folder)
        write_text(stamp, fingerprint)
    distributed.barrier()
    return folder


def _step_log(live_dir: str, history: Path) -> StepLog | None:
    """Rank 0's step log; the other ranks log nothing."""
    return StepLog(live_dir, history) if distributed.is_main() else None


def _publish(resume: Path, out_dir: Path, names: list[str]) -> None:
    """Link the finished files into the stage's outputs, then drop the resume folder: a kill on the way
    leaves the folder whole, and the rerun (DVC deletes the partial outputs first) publishes again."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (out_dir / name).unlink(missing_ok=True)
        try:
            os.link(resume / name, out_dir / name)
        except OSError:  # another file system: copy instead
            with atomic_path(out_dir / name) as tmp:
                shutil.copyfile(resume / name, tmp)
    shutil.rmtree(resume)


class StepLog:
    """DVCLive step logs (for `dvc plots show`), one folder per arm; the pipeline declares the plots.

    DVC deletes that folder before it reruns a stage, so every row is also appended to `history` in the
    resume folder. A resumed run replays the rows logged before the point it resumes from (known from its
    first new row), so its step logs equal an uninterrupted run's, the measured tokens/s aside. Without a
    folder only the history is kept (an lr grid point's, replayed if pretraining reuses that point).
    """

    def __init__(self, folder: str | Path | None, history: Path):
        from dvclive import Live

        self.live = Live(str(folder), save_dvc_exp=False, dvcyaml=None, report=None) if folder else None
        self.history = history
        self.earlier = _read_rows(history)
        self.phase, self.prefix = 0, ""

    def __call__(self, row: dict) -> None:
        row = {"phase": self.phase, "prefix": self.prefix, **row}
        if self.earlier is not None:
            kept = [r for r in self.earlier if (r["phase"], r["step"]) < (row["phase"], row["step"])]
            self._replay(kept)
            write_text(self.history, "".join(json.dumps(r) + "\n" for r in kept))
        self._log(row)
        with open(self.history, "a") as f:  # a torn last line from a kill is skipped when read
            f.write(json.dumps(row) + "\n")

    def _replay(self, rows: list[dict]) -> None:
        for r in rows:
            self._log(r)
        self.earlier = None

    def _log(self, row: dict) -> None:
        if self.live is None:
            return
        for key in ("loss", "lr", "tokens_per_s"):
            if key in row:  # an lr grid point's published log has no wall-clock figure
                self.live.log_metric(f"{row['prefix']}{key}", row[key])
        self.live.next_step()

    def close(self) -> None:
        if self.earlier is not None:  # nothing was left to train: the history is the whole log
            self._replay(self.earlier)
        if self.live is not None:
            self.live.end()


def _read_rows(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def _train_from_scratch(params: dict, topology: str, seed: int, masks: dict, mask_sha: str, tcfg: dict,
                        n_tokens: int, data: TokenData, resume: Path, log: StepLog | None, arm: str, device):
    """Domain A from the seed's untrained model: init.pt and model.pt in `resume` (what pretrain publishes),
    the same bytes whether the pretrain stage or an lr grid point trains it."""
    domain = params["data"]["order"][0]
    torch.manual_seed(seed)
    model = GPT(config_from_params(params, data.vocab_size), masks=masks).to(device)
    distributed.check_identical("masks", mask_sha)  # load_masks checked it against the contents
    meta = dict(topology=topology, seed=seed)
    main = distributed.is_main()
    if main and not (resume / "init.pt").exists():
        save_checkpoint(resume / "init.pt", model, phase=-1, domain="untrained", **meta)
    distributed.print_main(f"[{arm}] {model.param_counts()}")
    result = train_phase(model, data.array(domain, "train"), n_tokens, tcfg, seed=seed, phase=0,
                         mechanism=make_mechanism("none", {}), device=device, resume_file=resume / "inphase.pt",
                         label=arm, log=log)
    if main:
        save_checkpoint(resume / "model.pt", model, phase=0, domain=domain, **meta)
    return model, result


@dataclass
class PretrainResult:
    """What `pretrain` returns: `summary` (train_summary.json: tokens, steps, loss, lr, parameter counts and
    the pretraining's FLOPs) and, apart as it differs every run, `timing` (wall-clock)."""
    summary: dict
    timing: dict


def pretrain_cost(model: GPT, tokens: int) -> dict[str, float]:
    """The pretraining's FLOPs (sparsecl.cost), written once in the pretrain stage's summary: every arm of the
    (topology, seed) reads them from there, and the report reads the per-token figure from the arms."""
    per_token = cost.pretrain_flops_per_token(model)
    return {"pretrain_flops_per_token": per_token, "pretrain_flops": per_token * tokens}


def arm_metrics(mechanism, model: GPT, pretrained: dict) -> dict:
    """What a sequential arm cost and what it left: its metrics file (numbers only, deterministic).
    train_flops covers the later phases only; pretrain_flops (from the pretrain stage's summary,
    `pretrained`) the pretraining every mechanism of the (topology, seed) shares."""
    return {"train_flops": mechanism.flops, "pretrain_flops": pretrained["pretrain_flops"],
            "pretrain_flops_per_token": pretrained["pretrain_flops_per_token"],
            "extra_memory_bytes": mechanism.extra_memory_bytes(),
            "inference_flops_per_token": cost.forward_flops(model), "params_active": cost.param_count(model),
            **mechanism.metrics()}


def grid_pretrains(params: dict, seed: int) -> bool:
    """Whether the lr grid's chosen point is this arm's pretraining: same seed, same budget, one process."""
    search = params["lr_search"]
    return (seed == search["seed"] and search["tokens"] == params["pretrain"]["tokens"]
            and params["distributed"]["nproc_per_node"] == 1)


def pretrain(params: dict, topology: str, seed: int, tokens_dir: str, masks_file: str, lr_dir: str, out_dir: str,
             live_dir: str) -> PretrainResult:
    """Pretrain one arm on domain A at its topology's chosen lr; where the lr grid already trained exactly
    this (`grid_pretrains`), publish the chosen point's model and step log instead of training it again."""
    device = resolve_device(params["device"])
    data, blob = TokenData(tokens_dir), load_masks(masks_file)
    domain = params["data"]["order"][0]
    data.require(params["data"]["order"], params["model"]["block_size"])  # every domain, not just this one
    arm = f"pretrain-{base_name(topology, seed)}"
    tcfg = train_settings(params, Path(lr_dir) / "chosen.json")
    if grid_pretrains(params, seed):
        chosen = read_json(Path(lr_dir) / "chosen.json")
        model, _ = load_checkpoint(Path(lr_dir) / "model.pt", blob)  # checks its masks are this arm's
        print(f"[{arm}] the lr grid trained this arm at lr {chosen['lr']:g}: publishing its model", flush=True)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("init.pt", "model.pt"):
            with atomic_path(out / name) as tmp:
                shutil.copyfile(Path(lr_dir) / name, tmp)
        StepLog(live_dir, Path(lr_dir) / "steplog.jsonl").close()  # replays the grid run's step log
        return PretrainResult({"tokens": chosen["tokens"], "steps": chosen["steps"],
                               "final_train_loss": chosen["final_train_loss"], "lr": chosen["lr"], "from_lr_grid": 1,
                               **model.param_counts(), **pretrain_cost(model, chosen["tokens"])}, {"seconds": 0.0})
    resume = _resume_dir(arm, _fingerprint(params["model"], tcfg, params["distributed"],
                                           params["pretrain"], domain,
                                           blob["sha256"], data.meta(domain, "train")["sha256"]))
    log = _step_log(live_dir, resume / "steplog.jsonl")
    model, result = _train_from_scratch(params, topology, seed, blob["masks"], blob["sha256"], tcfg,
                                        params["pretrain"]["tokens"], data, resume, log, arm, device)
    if distributed.is_main():
        log.close()
        _publish(resume, Path(out_dir), ["init.pt", "model.pt"])
    # Wall-clock figures apart ("timing"): they differ every run, the rest is reproducible.
    return PretrainResult({"tokens": result.tokens, "steps": result.steps, "final_train_loss": result.final_loss,
                           "lr": tcfg["lr"], "from_lr_grid": 0, **model.param_counts(),
                           **pretrain_cost(model, result.tokens)},
                          {"seconds": round(result.seconds, 2),
                           "tokens_per_s": round(result.tokens / max(result.seconds, 1e-9))})


@dataclass
class SequentialResult:
    """What `sequential` returns, one field per output file: `phases`, per phase label its tokens, steps and
    final training loss (train_summary.json); `seconds`, per phase label its wall-clock seconds (timing, apart
    as it differs every run); `metrics`, the arm's cost and mechanism figures (metrics/mechanism/<arm>.json)."""
    phases: dict[str, dict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def timing(self) -> dict[str, float]:
        return {f"{label}_seconds": s for label, s in self.seconds.items()}


@dataclass
class ArmRun:
    """One sequential arm's fixed inputs, as the phases of `sequential` need them."""
    params: dict
    topology: str
    mechanism: str
    seed: int
    data: TokenData
    tcfg: dict
    resume: Path
    device: torch.device

    @property
    def name(self) -> str:
        return arm_name(self.topology, self.mechanism, self.seed)

    @property
    def order(self) -> list[str]:
        return self.params["data"]["order"]

    def save(self, path: Path, model: GPT, k: int, **meta) -> None:
        save_checkpoint(path, model, phase=k, domain=self.order[k], topology=self.topology, seed=self.seed,
                        mechanism=self.mechanism, **meta)


@dataclass
class Start:
    """Where a sequential run starts: the model after the last finished phase (the pretrained one at first),
    the checkpoint it came from and the first phase left to train."""
    model: GPT
    checkpoint: dict
    first: int

    @property
    def resumed(self) -> bool:
        return self.first > 1


def sequential_fingerprint(params: dict, tcfg: dict, settings: dict, blob: dict, start_ckpt: Path,
                           data: TokenData) -> str:
    """Everything a sequential arm's result depends on: its resume folder is stamped with it."""
    order = params["data"]["order"]
    return _fingerprint(tcfg, params["distributed"], params["phase"], order, settings, blob["sha256"],
                        sha256_file(start_ckpt), [data.meta(d, "train")["sha256"] for d in order])


def resume_point(run: ArmRun, start_ckpt: Path, blob: dict) -> Start:
    """Continue from the last finished phase if an earlier run was killed, else from the pretrained model."""
    done = [k for k in range(1, len(run.order)) if (run.resume / phase_checkpoint(k)).exists()]
    first = max(done, default=0) + 1
    model, ck = load_checkpoint(run.resume / phase_checkpoint(first - 1) if done else start_ckpt, blob, run.device)
    distributed.check_identical("masks", blob["sha256"])  # load_checkpoint checked the model's masks against it
    return Start(model, ck, first)


def bootstrap(run: ArmRun, mech, start: Start) -> None:
    """The mechanism's state before the first phase left: restored from the checkpoint of a resumed run, or
    what it keeps of the pretraining domain (a Fisher, a teacher, buffer entries), and the changed pretrained
    model where the mechanism changes it (postprune)."""
    if start.resumed:
        mech.load_state_dict(start.checkpoint["mechanism_state"])
        distributed.print_main(f"[{run.name}] resuming after finished phase {start.first - 1}")
        return
    domain = run.order[0]
    mech.end_phase(0, domain, start.model, run.data.array(domain, "train"))
    if distributed.is_main() and mech.modifies_pretrained:
        run.save(run.resume / phase_checkpoint(0), start.model, 0)


def _read_result(resume: Path) -> SequentialResult:
    """The phases an earlier run finished (written before the checkpoint that marks each finished)."""
    return SequentialResult(**read_json(resume / "summary.json"))


def train_later_phase(run: ArmRun, k: int, model: GPT, mech, log: StepLog | None, result: SequentialResult) -> None:
    """Phase k: the mechanism's begin, training with the checkpoint after phase.speed_steps steps (learning
    speed), its end, then the phase's summary and checkpoint (with the mechanism's state), which mark it done."""
    domain, main = run.order[k], distributed.is_main()
    speed_steps = run.params["phase"]["speed_steps"]
    label = phase_label(k, domain)
    if log:
        log.phase, log.prefix = k, f"{label}/"
    distributed.print_main(f"[{run.name}] phase {k}/{len(run.order) - 1}: {domain}")
    # Seeded per phase, so that a run resumed after a finished phase draws what an uninterrupted one does.
    torch.manual_seed(1000 * run.seed + k)
    mech.begin_phase(k, domain, model)
    t0 = time.perf_counter()
    early = run.resume / early_checkpoint(k)

    def save_early(done: int, masked=nullcontext) -> None:
        if done == speed_steps and main:
            with masked():  # the model in its masked form, whatever kernel the phase trains with
                run.save(early, model, k, step=done)

    trained = train_phase(model, run.data.array(domain, "train"), run.params["phase"]["tokens"], run.tcfg,
                          seed=run.seed, phase=k, mechanism=mech, device=run.device,
                          resume_file=run.resume / "inphase.pt", label=f"{run.name} {domain}", log=log,
                          on_step=save_early)
    if main and not early.exists():  # a phase shorter than speed_steps: its end is the early point
        save_early(speed_steps)
    mech.end_phase(k, domain, model, run.data.array(domain, "train"))
    result.phases[label] = {"tokens": trained.tokens, "steps": trained.steps, "final_train_loss": trained.final_loss,
                            "kernel": trained.kernel}
    result.seconds[label] = round(time.perf_counter() - t0, 2)
    if main:
        write_json(run.resume / "summary.json", {"phases": result.phases, "seconds": result.seconds})
        run.save(run.resume / phase_checkpoint(k), model, k, mechanism_state=mech.state_dict())
        (run.resume / "inphase.pt").unlink(missing_ok=True)
    distributed.barrier()  # the next phase looks for an in-phase checkpoint: this one must be gone


def publish_arm(run: ArmRun, mech, out_dir: Path) -> None:
    """The arm's finished checkpoints into the stage's outputs: every phase's end and early point, and the
    changed pretrained model where the mechanism made one."""
    _publish(run.resume, out_dir, [phase_checkpoint(0)] * mech.modifies_pretrained
             + [name for k in range(1, len(run.order)) for name in (phase_checkpoint(k), early_checkpoint(k))])


def sequential(params: dict, topology: str, mechanism: str, seed: int, tokens_dir: str, masks_file: str,
               lr_file: str, pretrain_dir: str, out_dir: str, live_dir: str) -> SequentialResult:
    """Learn the later domains one phase each from the pretrained arm with one mechanism, resuming a killed run
    after its last finished phase."""
    device = resolve_device(params["device"])
    data, blob = TokenData(tokens_dir), load_masks(masks_file)
    settings = params["mechanism"].get(mechanism, {})
    order = params["data"]["order"]
    data.verify(order)  # before any work: a refused run leaves the resume folder and step logs as they are
    start_ckpt = Path(pretrain_dir) / "model.pt"
    tcfg = train_settings(params, lr_file)
    resume = _resume_dir(arm_name(topology, mechanism, seed),
                         sequential_fingerprint(params, tcfg, settings, blob, start_ckpt, data))
    run = ArmRun(params, topology, mechanism, seed, data, tcfg, resume, device)
    mech = make_mechanism(mechanism, settings, seed)
    start = resume_point(run, start_ckpt, blob)
    data.require(order, start.model.cfg.block_size)  # before the mechanism's work on the pretrained model
    bootstrap(run, mech, start)
    log = _step_log(live_dir, resume / "steplog.jsonl")
    result = _read_result(resume) if start.resumed else SequentialResult()
    for k in range(start.first, len(order)):
        train_later_phase(run, k, start.model, mech, log, result)
    result.metrics = arm_metrics(mech, start.model, read_json(Path(pretrain_dir) / "train_summary.json"))
    if distributed.is_main():
        log.close()
        publish_arm(run, mech, Path(out_dir))
    return result


def lr_grid_point(params: dict, topology: str, factor: float, tokens_dir: str, out_dir: str) -> dict:
    """One point of a topology's lr grid: pretraining on domain A at train.lr x factor for lr_search.tokens
    from the grid's seed, scored on A's val split only (`selection_windows`, beside the windows the
    comparison reports). Its model and step log go to `out_dir` (the chosen point's become pretraining's
    when the budgets match: `grid_pretrains`). A run that diverges is a result (`diverged`), not an error."""
    search, domain = params["lr_search"], params["data"]["order"][0]
    device = resolve_device(params["device"])
    data = TokenData(tokens_dir)
    data.require([domain], params["model"]["block_size"])
    tcfg = {**params["train"], "lr": params["train"]["lr"] * factor}
    masks = make_masks(params, topology, search["seed"])
    arm = f"lr_search-{topology}-x{factor}"
    resume = _resume_dir(arm, _fingerprint(params["model"], tcfg, search, domain, mask_hash(masks),
                                           data.meta(domain, "train")["sha256"]))
    out = {"factor": factor, "lr": tcfg["lr"]}
    try:
        model, result = _train_from_scratch(params, topology, search["seed"], masks, mask_hash(masks), tcfg,
                                            search["tokens"], data, resume, StepLog(None, resume / "steplog.jsonl"),
                                            arm, device)
    except NonFiniteLossError as e:
        print(f"[{arm}] diverged: {e}", flush=True)
        out["diverged"] = 1
    else:
        windows = selection_windows(data.array(domain, "val"), data.manifest["domains"][domain]["eval_tokens"],
                                    model.cfg.block_size)
        out |= {"diverged": 0, "tokens": result.tokens, "steps": result.steps, "final_train_loss": result.final_loss,
                "val_loss": mean_nll(model, windows, device)}
        # The published step log without tokens/s (wall-clock): a rerun gives the same bytes, so a stage
        # downstream of this one is not rerun for nothing.
        history = resume / "steplog.jsonl"
        write_text(history, "".join(json.dumps({k: v for k, v in r.items() if k != "tokens_per_s"}) + "\n"
                                    for r in _read_rows(history)))
        _publish(resume, Path(out_dir), ["init.pt", "model.pt", "steplog.jsonl"])
    shutil.rmtree(resume, ignore_errors=True)
    return out


def references(params: dict, topology: str, seed: int, tokens_dir: str, masks_file: str, lr_file: str,
               init_file: str) -> dict:
    """The arm's two references, both from its untrained model and at its chosen lr, scored on the
    evaluation windows: `joint`, trained on all domains at once with the sequence's whole budget (pretraining
    plus every phase, each domain weighted by its share of it), the multitask upper bound; `scratch`, each
    later domain trained alone for one phase's budget (forward transfer against it)."""
    device = resolve_device(params["device"])
    data, blob = TokenData(tokens_dir), load_masks(masks_file)
    order = params["data"]["order"]
    domains = list(dict.fromkeys(order))
    data.verify(order)  # before the joint run: a corrupted array is refused before hours of training
    data.require(order, params["model"]["block_size"])
    tcfg = train_settings(params, lr_file)
    arm = f"reference-{base_name(topology, seed)}"
    resume = _resume_dir(arm, _fingerprint(tcfg, params["pretrain"], params["phase"], order, blob["sha256"],
                                           sha256_file(init_file), [data.meta(d, "train")["sha256"] for d in order]))
    budget = {d: 0 for d in domains}
    for k, d in enumerate(order):
        budget[d] += params["pretrain"]["tokens"] if k == 0 else params["phase"]["tokens"]
    runs = {"joint": (Mixture(tuple(data.array(d, "train") for d in domains), tuple(budget[d] for d in domains)),
                      sum(budget.values()), JOINT_PHASE, domains)}
    for i, d in enumerate(domains[1:], start=1):
        runs[f"scratch_{d}"] = (data.array(d, "train"), params["phase"]["tokens"], SCRATCH_PHASE + i, [d])
    done = read_json(resume / "done.json") if (resume / "done.json").exists() else {}
    for name, (tokens, n_tokens, phase, scored) in runs.items():
        if name in done:
            continue
        model, _ = load_checkpoint(init_file, blob, device)
        torch.manual_seed(1000 * seed + phase)
        train_phase(model, tokens, n_tokens, tcfg, seed=seed, phase=phase, mechanism=make_mechanism("none", {}),
                    device=device, resume_file=resume / "inphase.pt", label=f"{arm} {name}")
        done[name] = {d: mean_nll(model, eval_windows(data.array(d, "val"), data.manifest["domains"][d]["eval_tokens"],
                                                      model.cfg.block_size), device) for d in scored}
        write_json(resume / "done.json", done)
        (resume / "inphase.pt").unlink(missing_ok=True)
    shutil.rmtree(resume)
    return {"joint": done["joint"], "scratch": {d: done[f"scratch_{d}"][d] for d in domains[1:]},
            "tokens": {"joint": sum(budget.values()), "scratch": params["phase"]["tokens"]}}

