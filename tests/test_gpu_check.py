"""benchmarks/gpu_check.py, the check a GPU machine starts with: its CPU pieces run here, its CUDA
pieces run on the fake devices of tests/fake_cuda.py, and without a GPU it exits with a message."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from fake_cuda import fake_faiss_gpu

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(path) -> dict[str, dict]:
    return {row["check"]: row for row in json.loads(path.read_text())["rows"]}


def test_without_a_gpu_it_says_so_and_checks_nothing():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no CUDA device" in proc.stdout and "nothing checked" in proc.stdout and "check" not in proc.stderr


def test_cpu_pieces_run_small_and_pass(tmp_path, capsys):
    assert gpu_check.main(["--device", "cpu", "--tiny", "--json", str(tmp_path / "out.json")]) == 0
    rows = _rows(tmp_path / "out.json")
    assert {name for name, row in rows.items() if row["status"] == "skipped"} == {"pixelfade float32", "eval faiss-gpu"}
    assert all(row["status"] == "ok" for name, row in rows.items() if row["status"] != "skipped")
    assert "byte-identical" in rows["pixelfade re-run"]["result"] and "identical" in rows["train re-run"]["result"]
    table = capsys.readouterr().out
    assert table.count("\n") >= len(rows) + 3 and "versions" in table and "seed 0" in table


def test_cuda_pieces_run_on_fake_gpus(tmp_path, fake_gpu, monkeypatch):
    fake_faiss_gpu(monkeypatch, fake_gpu)
    code = gpu_check.main(["--device", "cuda:0", "--tiny", "--json", str(tmp_path / "out.json")])
    rows = _rows(tmp_path / "out.json")
    # a CPU is no GPU: the speed target (30 img/s, a GPU's) fails, and with it the exit status
    assert code == 1 and {name for name, row in rows.items() if row["status"] == "FAIL"} <= {"pixelfade fp32",
                                                                                             "pixelfade amp+cl"}
    float32 = rows["pixelfade float32"]
    assert "rel. error to float64" in float32["result"] and float32["status"] == "ok"
    assert "restored" in float32["result"]
    assert rows["eval faiss cuda:0"]["status"] == rows["eval faiss cuda:1"]["status"] == "ok"  # two fake GPUs
    assert "faiss-gpu" in rows["eval faiss cuda:1"]["result"] and fake_gpu.created[1] > 0
    assert all(rows[name]["status"] == "ok" for name in ("pixelfade re-run", "generator re-run", "attack re-run",
                                                         "train re-run", "eval torch cuda:0"))
