"""A real `dvc repro` of the whole pipeline on toy domains in a temporary git repository."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@localhost", "DVC_NO_ANALYTICS": "1"}


def sh(cwd, *cmd) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def dvc(cwd, *args) -> str:
    return sh(cwd, sys.executable, "-m", "dvc", *args)


@pytest.fixture(scope="module")
def toy_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_repo")
    for item in ("dvc.yaml", "pipeline", "src"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / item)
    shutil.copy(REPO / "tests" / "toy_params.yaml", root / "params.yaml")
    sh(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # the offline plots page
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "toy")
    log = dvc(root, "repro")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "toy run")
    return root, log


def finite_numbers(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from finite_numbers(v)
    else:
        assert isinstance(node, (int, float)), f"metrics must hold numbers only, got {node!r}"
        yield node


def test_repro_runs_every_stage_and_writes_finite_metrics(toy_repo):
    root, log = toy_repo
    for stage in ("tokenize", "init_topologies@random-0", "pretrain@dense-0", "sequential@random-none-0",
                  "evaluate@dense-none-0", "analyze"):
        assert f"Running stage '{stage}'" in log
    # Every metrics file holds finite numbers only (write_json refuses NaN and infinity).
    files = sorted((root / "metrics").rglob("*.json"))
    assert {"summary.json", "crossover.json", "stats.json", "dense-none-s0.json", "random-s0.json", "H1_random.json",
            "H1n_random.json", "H2_random.json"} <= {f.name for f in files}
    for f in files:
        values = list(finite_numbers(json.loads(f.read_text())))
        assert values and all(math.isfinite(v) for v in values), f
        assert "NaN" not in f.read_text() and "Infinity" not in f.read_text(), f
    summary = json.loads((root / "metrics" / "summary.json").read_text())
    assert set(summary) == {"dense-none-s0", "narrow-none-s0", "random-none-s0"}
    for arm in summary.values():  # plasticity beside forgetting, against the arm's references
        assert {"plasticity", "learning_speed", "intransigence", "joint_avg_loss", "joint_gap", "fwt_vs_scratch",
                "forgetting_per_visit", "bwt_per_visit", "core_forgetting_per_visit"} <= set(arm)
    for topology in ("dense", "narrow", "random"):
        refs = json.loads((root / "references" / f"{topology}-s0.json").read_text())
        assert set(refs["joint"]) == {"alpha", "beta", "gamma"} and set(refs["scratch"]) == {"beta", "gamma"}
        chosen = json.loads((root / "lr_search" / topology / "chosen.json").read_text())
        assert chosen["lr"] in (0.0015, 0.003) and chosen["grid_points"] == 2
        # the grid's budget is pretraining's: the chosen point is seed 0's pretrained model, not trained twice
        assert (root / "lr_search" / topology / "model.pt").read_bytes() == (
            root / "models" / "pretrain" / f"{topology}-s0" / "model.pt").read_bytes()
    assert "the lr grid trained this arm at lr" in log
    assert (root / "plots" / "lr_search.png").stat().st_size > 1000
    for png in ("domain_loss.png", "loss_matrix.png", "dense_vs_sparse.png"):
        assert (root / "plots" / png).stat().st_size > 1000
    report = (root / "report.md").read_text()
    assert "| random-none-s0 |" in report and "## Learning rates" in report and "against narrow@0.25" in report
    assert (root / "dvclive" / "sequential" / "random-none-s0" / "plots" / "metrics").is_dir()
    assert "Data and pipelines are up to date" in dvc(root, "status")


def test_declared_metrics_are_the_headline_one_row_per_arm_and_test(toy_repo):
    """`dvc metrics show` lists the headline only (a few figures per arm, the difference and p of each H test),
    one file per arm and per test; the detail (loss matrices, every test) is in cached outputs."""
    root, _ = toy_repo
    shown = json.loads(dvc(root, "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    assert set(files) == {f"metrics/headline/{t}-none-s0.json" for t in ("dense", "narrow", "random")} | {
        f"metrics/verdicts/{h}_random.json" for h in ("H1", "H1n", "H2")} | {"metrics/verdicts/family.json"}
    for path, entry in files.items():
        keys = set(entry["data"])
        assert keys == ({"tests"} if path.endswith("family.json") else {"diff"} if "verdicts" in path else  # no p
                        {"final_avg_loss", "forgetting", "bwt", "core_forgetting", "plasticity", "total_tflops"})
    table = dvc(root, "metrics", "show")
    assert len(table.splitlines()) == 8 and max(map(len, table.splitlines())) < 160


def test_plots_show_draws_the_first_look_plots_first_one_line_per_arm_and_no_per_arm_step_logs(toy_repo):
    root, _ = toy_repo
    plots = json.loads(dvc(root, "plots", "show", "--json"))["data"]
    assert list(plots)[:3] == ["plots/data/seen_mean_loss.csv", "plots/data/core_loss.csv", "plots/dense_vs_sparse.png"]
    assert len(plots) == 11 and not any(p.startswith("dvclive") for p in plots)  # step logs: two grouped plots
    for name in ("seen_mean_loss", "phase_steps"):
        spec = plots[f"plots/data/{name}.csv"][0]["content"]
        assert spec["encoding"]["color"]["field"] == "arm"
        assert {v["arm"] for v in spec["data"]["values"]} == {"dense-none-s0", "narrow-none-s0", "random-none-s0"}


def test_plots_show_writes_a_page_that_loads_nothing_from_the_network(toy_repo):
    """Plain `dvc plots show` fills the project's page (.dvc/config): Vega inside it, no script, style or
    image fetched from anywhere but the page's own folder."""
    root, _ = toy_repo
    dvc(root, "plots", "show", "-o", "offline_plots")
    page = (root / "offline_plots" / "index.html").read_text()
    assert "window.vegaEmbed=" in page and page.count("vegaEmbed('#") >= 2
    assert not re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "cdn.jsdelivr" not in page and "@import" not in page


def test_the_run_cache_restores_every_stage_without_its_lock(toy_repo):
    """Every stage's outputs are cached or declared metrics/plots, so DVC keeps a run-cache entry for each:
    with dvc.lock gone, `dvc repro` checks every output out of the cache and runs no stage script."""
    root, _ = toy_repo
    before = {f: f.read_bytes() for f in (root / "metrics").rglob("*.json")}
    lock = (root / "dvc.lock").read_text()
    (root / "dvc.lock").unlink()
    log = dvc(root, "repro")
    assert "Running stage" not in log
    stages = dvc(root, "stage", "list", "--name-only").split()
    assert len(stages) > 10 and all(f"Stage '{s}' is cached - skipping run" in log for s in stages), log
    assert {f: f.read_bytes() for f in (root / "metrics").rglob("*.json")} == before
    assert (root / "dvc.lock").read_text() == lock


def test_a_kill_torn_lock_and_rwlock_are_repaired_and_the_rerun_gives_the_same_metrics(toy_repo):
    """What a kill during DVC's in-place rewrite leaves (an empty dvc.lock and .dvc/tmp/rwlock): the repair
    command restores the lock from git and removes the rwlock; then `dvc repro` runs nothing."""
    root, _ = toy_repo
    before = {f: f.read_bytes() for f in (root / "metrics").rglob("*.json")}
    lock = (root / "dvc.lock").read_text()
    (root / "dvc.lock").write_text("")
    (root / ".dvc" / "tmp" / "rwlock").write_text("")
    out = subprocess.run([sys.executable, "-m", "sparsecl.repair"], cwd=root, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root / "src")})
    assert out.returncode == 0 and "dvc.lock" in out.stdout + out.stderr and "rwlock" in out.stdout + out.stderr
    log = dvc(root, "repro")
    assert "Running stage" not in log
    assert {f: f.read_bytes() for f in (root / "metrics").rglob("*.json")} == before
    assert (root / "dvc.lock").read_text() == lock


def test_the_lr_search_does_not_depend_on_later_phases(toy_repo):
    """Changing phase.tokens leaves every lr_search and select_lr stage as it is (dvc status, nothing run)."""
    root, _ = toy_repo
    params = (root / "params.yaml").read_text()
    try:
        (root / "params.yaml").write_text(params.replace("  tokens: 4000\n", "  tokens: 3000\n"))
        status = dvc(root, "status")
    finally:
        (root / "params.yaml").write_text(params)
    assert "sequential@random-none-0:" in status and "reference@random-0:" in status
    assert "lr_search@" not in status and "select_lr@" not in status and "pretrain@" not in status


def test_changing_density_reruns_topologies_but_never_tokenize(toy_repo):
    root, _ = toy_repo
    log = dvc(root, "exp", "run", "-S", "density=0.1")
    assert "Stage 'tokenize' didn't change, skipping" in log
    for stage in ("init_topologies@random-0", "pretrain@random-0", "sequential@random-none-0",
                  "evaluate@random-none-0", "analyze"):
        assert f"Running stage '{stage}'" in log
    # The dense mask does not depend on density, so the dense arm is not retrained.
    assert "Stage 'pretrain@dense-0' didn't change, skipping" in log
    diagnostics = json.loads((root / "metrics" / "topology" / "random-s0.json").read_text())
    assert diagnostics["summary"]["density"] == pytest.approx(0.1, abs=0.002)
    # The documented experiments table fits 160 columns and holds every arm's forgetting, both records.
    table = sh(root, sys.executable, "-m", "sparsecl.report.exps")
    assert "…" not in table and max(map(len, table.splitlines())) <= 160
    assert "forgetting: dense" in table and " narrow " in table and " random " in table
    records = table.splitlines()[2:]
    assert any(" 0.1 " in line for line in records) and any(" 0.25 " in line for line in records)
    # `dvc metrics diff` against the committed run: the headline of the arms the density touched, no more.
    diff = json.loads(dvc(root, "metrics", "diff", "HEAD", "--json"))
    rows = [(path, key) for path, changes in diff.items() for key in changes]
    assert 6 <= len(rows) <= 30 and all("dense-none" not in path for path, _ in rows), rows
    # Back to the committed density: every stage comes out of the run-cache, none runs.
    log = dvc(root, "exp", "run", "-S", "density=0.25")
    assert "Running stage" not in log and "Stage 'pretrain@random-0' is cached - skipping run" in log


def test_sweep_gathers_density_vs_forgetting_from_dvc_records(toy_repo):
    """Two finished records: the committed baseline (density 0.25) and an experiment at 0.1 (the one the
    test above ran; DVC restores it from its cache if it ran already)."""
    root, _ = toy_repo
    dvc(root, "exp", "run", "-S", "density=0.1")
    sh(root, sys.executable, "-m", "sparsecl.report.sweep", "--out", "sweep")
    rows = (root / "sweep" / "density_forgetting.csv").read_text().splitlines()
    assert {(r.split(",")[2], r.split(",")[3]) for r in rows[1:]} >= {
        ("0.1", "dense"), ("0.1", "random"), ("0.25", "dense"), ("0.25", "random")}
    table = (root / "sweep" / "density_forgetting.md").read_text()
    assert "dense-none" in table and "random-none" in table and "| 0.1 |" in table and "| 0.25 |" in table
    assert (root / "sweep" / "density_forgetting.png").stat().st_size > 1000
    # Experiment 2's comparison and the per-layer topology detail come with every run.
    assert "## Topology comparison" in (root / "report.md").read_text()
    assert (root / "plots" / "topologies.png").stat().st_size > 1000
    layers = json.loads((root / "metrics" / "topology" / "layers" / "random-s0.json").read_text())
    assert all(v["sigma2"] > 0 for v in layers.values())


def test_changing_an_ssd_setting_reruns_only_the_ssd_arms(toy_repo):
    root, _ = toy_repo
    dvc(root, "exp", "run", "-S", "topologies=[dense]", "-S", "references=[dense]", "-S", "mechanisms=[none,ssd]")
    for arm in ("dense-none-s0", "dense-ssd-s0"):
        cost = json.loads((root / "metrics" / "mechanism" / f"{arm}.json").read_text())
        assert all(math.isfinite(v) for v in finite_numbers(cost)) and cost["train_flops"] > 0
    log = dvc(root, "exp", "run", "-S", "mechanism.ssd.temperature=4.0")
    for stage in ("sequential@dense-ssd-0", "evaluate@dense-ssd-0", "analyze"):
        assert f"Running stage '{stage}'" in log
    for stage in ("tokenize", "pretrain@dense-0", "sequential@dense-none-0", "evaluate@dense-none-0"):
        assert f"Stage '{stage}' didn't change, skipping" in log
    report = (root / "report.md").read_text()
    assert "## Mechanisms: forgetting against cost" in report and "| dense-ssd-s0 |" in report
    assert (root / "plots" / "mechanism_compare.png").stat().st_size > 1000
