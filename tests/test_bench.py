"""Benchmarks run in CI only as a smoke test on tiny shapes: they must print their figures (no timing asserts)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_train_throughput_bench_smoke():
    out = subprocess.run([sys.executable, "bench/train_throughput.py", "--tiny", "--steps", "2"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "tokens/s" in out and "masked sparse" in out and "of matmul" in out
