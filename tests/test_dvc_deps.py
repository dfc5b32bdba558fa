"""Every source file a stage's work runs is a dependency of that stage in dvc.yaml, so editing it reruns the
stage: the stage script's imports are followed through src/sparsecl (statically, by the AST)."""
import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

# Imports that do not shape a stage's outputs, not followed:
NOT_FOLLOWED = {
    "sparsecl.stage", "sparsecl.params", "sparsecl.checks",  # params validation, before any work
    # building token arrays: later stages read them through data/tokens (tracked)
    "sparsecl.data.sources", "sparsecl.data.corpus",
}
# Registries import every member; a stage's deps name the members it runs (or the whole folder).
REGISTRIES = {"sparsecl.mechanisms", "sparsecl.topology"}
# Members a stage runs through a registry, by name.
PLAIN = {"sparsecl.mechanisms.none", "sparsecl.mechanisms.base"}  # plain training: the `none` mechanism
RUNS = {"pretrain": PLAIN, "lr_search": PLAIN, "reference": PLAIN}


def module_file(name: str) -> Path | None:
    path = SRC / Path(*name.split("."))
    if path.is_dir():
        return path / "__init__.py" if (path / "__init__.py").exists() else None
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.startswith("sparsecl.") and module_file(n)}


def source_files(stage: str) -> set[str]:
    script = REPO / STAGES[stage]["cmd"].split()[1]
    seen, todo = set(), [*imports(script), *RUNS.get(stage, ())]
    while todo:
        name = todo.pop()
        if name in seen or name in NOT_FOLLOWED:
            continue
        seen.add(name)
        if name not in REGISTRIES:
            todo += imports(module_file(name))
        parts = name.split(".")  # importing a module runs its package's __init__ too
        todo += [p for i in range(2, len(parts)) if module_file(p := ".".join(parts[:i]))]
    files = (module_file(n) for n in seen)
    return {str(f.relative_to(REPO)) for f in files if f.stat().st_size}  # an empty __init__ runs nothing


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_depends_on_the_source_files_it_runs(stage):
    deps = [d.split()[0] for d in STAGES[stage]["deps"]]
    missing = {f for f in source_files(stage) if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)}
    assert not missing, f"dvc.yaml stage {stage!r} does not list {sorted(missing)}"

