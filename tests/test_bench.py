"""Benchmarks run in CI only as a smoke test on tiny shapes: each must run and print figures that make sense
(finite, in range; the sparse export's outputs equal the masked model's). No timing asserts."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

from sparsecl.data.tokens import build

REPO = Path(__file__).resolve().parents[1]


def bench(script: str, *args: str) -> str:
    return subprocess.run([sys.executable, f"bench/{script}.py", *args], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


def numbers_after(label: str, text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(rf"{re.escape(label)}\s*([-+0-9.,e]+)", text)]


def test_train_throughput_bench_with_a_preset():
    out = bench("train_throughput", "--tiny", "--steps", "2", "--preset", "gpu-100m")
    assert "compile True" in out  # the preset's settings, run on CPU (compile is CUDA-only)
    rates = re.findall(r"^\s*(dense|random):\s+([0-9,]+) tokens/s", out, re.M)
    assert [r[0] for r in rates] == ["dense", "random"] and all(int(r[1].replace(",", "")) > 0 for r in rates)
    assert float(re.search(r"/ dense throughput: ([0-9.]+)", out).group(1)) > 0
    assert float(re.search(r"= ([0-9.]+)% of matmul", out).group(1)) > 0


def test_sparse_inference_bench_exports_models_with_the_masked_outputs():
    out = bench("sparse_inference", "--tiny", "--repeats", "1", "--densities", "0.05,0.3", "--batches", "1")
    diffs = numbers_after("max |logit diff| vs masked", out)
    assert len(diffs) == 2 and max(diffs) < 1e-4
    assert all(s > 0 for s in numbers_after("speedup vs dense", out))


def test_eval_fraction_bench_gives_a_share():
    out = bench("eval_fraction", "--tiny", "--steps", "1")
    assert 0 < float(re.search(r"evaluation / \(training \+ evaluation\): ([0-9.e+-]+)%", out).group(1)) < 100


def test_lm_head_loss_bench_compares_both_ways():
    out = bench("lm_head_loss", "--tiny", "--repeats", "1")
    assert all(len(numbers_after(name, out)) == 1 for name in ("one pass", "training step"))
    assert 0 < float(re.search(r"it is (\d+)% of a training step", out).group(1)) < 100


def test_profile_step_bench_lists_the_matmuls():
    out = bench("profile_step", "--tiny", "--steps", "1", "--topology", "random")
    assert "aten::mm" in out and "Self CPU" in out


def test_mechanism_throughput_bench_runs_every_mechanism(tmp_path):
    params = yaml.safe_load((REPO / "tests" / "toy_params.yaml").read_text())
    build(params, tmp_path / "tokens")
    out = bench("mechanism_throughput", "--params", "tests/toy_params.yaml", "--tokens", str(tmp_path / "tokens"),
                "--steps", "2")
    rows = re.findall(r"^\s*(\w+):\s+([0-9,]+) tokens/s \(([0-9.]+) x none\)", out, re.M)
    assert [r[0] for r in rows][0] == "none" and len(rows) == len(params["mechanism"])
    assert float(rows[0][2]) == 1.0 and all(float(r[1].replace(",", "")) > 0 for r in rows)


def test_spectral_bench_smoke_agrees_with_the_dense_svd():
    """bench/spectral.py on its tiny shape (it times; this asserts only the values)."""
    diffs = [float(x) for x in re.findall(r"\|diff\| ([0-9.e+-]+)", bench("spectral", "--tiny", "--repeats", "1"))]
    assert len(diffs) == 3 and max(diffs) < 1e-6


def test_generate_bench_gives_rates_and_the_same_tokens():
    out = bench("generate", "--tiny", "--widths", "32", "--densities", "0.05", "--batches", "1,2", "--repeats", "1",
                "--new", "4")
    rows = re.findall(r"^\s*32\s+\d\s+0.05\s+(.*)$", out, re.M)
    assert len(rows) == 2 and all(r.rstrip().endswith("yes") for r in rows)  # masked and sparse: the same tokens
    assert all(float(v.replace(",", "").rstrip("x%")) > 0 for r in rows for v in r.split()[:-1])


def test_train_kernel_bench_steps_both_kernels_alike():
    out = bench("train_kernel", "--tiny", "--widths", "32", "--steps", "1")
    assert numbers_after("masked", out)[0] > 0 and numbers_after("sparse", out)[0] > 0
    assert numbers_after("max |weight diff| after 2 steps", out)[0] < 1e-4


def test_tokenize_corpus_bench_reports_tokens_and_peak_memory():
    out = bench("tokenize_corpus", "--tiny")
    (tokens,) = numbers_after("tokenize:", out)
    (peak,) = numbers_after("peak RSS of the tokenize process:", out)
    assert tokens > 100_000 and 0 < peak < 2
