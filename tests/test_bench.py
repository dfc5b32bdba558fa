"""Benchmarks run in CI only as a smoke test on tiny shapes: they must print their figures (no timing asserts)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_train_throughput_bench_smoke():
    out = subprocess.run([sys.executable, "bench/train_throughput.py", "--tiny", "--steps", "2"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "tokens/s" in out and "masked sparse" in out and "of matmul" in out


def test_sparse_inference_bench_smoke():
    out = subprocess.run([sys.executable, "bench/sparse_inference.py", "--tiny", "--repeats", "1",
                          "--densities", "0.05,0.3", "--batches", "1"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "speedup vs dense" in out and "rho 0.3" in out


def test_eval_fraction_bench_smoke():
    out = subprocess.run([sys.executable, "bench/eval_fraction.py", "--tiny", "--steps", "1"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "evaluation / (training + evaluation)" in out


def test_lm_head_loss_bench_smoke():
    out = subprocess.run([sys.executable, "bench/lm_head_loss.py", "--tiny", "--repeats", "1"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "one pass" in out and "of a training step" in out


def test_profile_step_bench_smoke():
    out = subprocess.run([sys.executable, "bench/profile_step.py", "--tiny", "--steps", "1", "--topology", "random"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "aten::mm" in out and "Self CPU" in out


def test_train_throughput_bench_takes_a_preset():
    out = subprocess.run([sys.executable, "bench/train_throughput.py", "--tiny", "--steps", "1", "--preset", "gpu-100m"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "compile True" in out and "of matmul" in out  # the preset's settings, on CPU (compile is CUDA-only)
