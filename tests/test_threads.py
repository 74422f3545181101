"""The thread policy (common/threads.py): one compute thread per library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ncnn
import numpy as np
import pytest

from common.threads import configure_ncnn, onnxruntime_options
from parity.runners.ncnn_runner import NcnnRunner

# Runs torch and OpenCV work big enough for their thread pools; prints how many
# threads the process gained doing it, and the settings a child process would see.
# torch has already computed when the policy is applied (as in `convert`, which
# loads the checkpoint first): the environment alone would come too late for it.
PROBE = """
import json, os, sys
import cv2, numpy as np, torch
torch.ones(64, 64) @ torch.ones(64, 64)
if sys.argv[1] == "limited":
    from common.threads import limit_threads
    limit_threads()
before = len(os.listdir("/proc/self/task"))
with torch.no_grad():
    torch.nn.functional.conv2d(torch.ones(1, 32, 160, 128), torch.ones(32, 32, 3, 3))
image = np.ones((2000, 2000, 3), np.float32)
cv2.resize(image, (1000, 800))
cv2.GaussianBlur(image, (5, 5), 0)
print(json.dumps({"new_threads": len(os.listdir("/proc/self/task")) - before,
                  "torch": torch.get_num_threads(), "cv2": cv2.getNumThreads(),
                  "omp_env": os.environ.get("OMP_NUM_THREADS")}))
"""


def probe(policy: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, policy], capture_output=True,
                          text=True, check=True, timeout=300)
    return json.loads(done.stdout)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_limited_process_computes_on_its_own_thread_only():
    limited = probe("limited")
    assert limited == {"new_threads": 0, "torch": 1, "cv2": 1, "omp_env": "1"}
    if (os.cpu_count() or 1) > 1 and "OMP_NUM_THREADS" not in os.environ:
        # the probe sees the pools the policy avoids: torch's and OpenCV's start threads
        assert probe("as-is")["new_threads"] > 0


def test_ncnn_option_gets_one_thread_and_no_spinning():
    option = ncnn.Option()
    option.num_threads, option.openmp_blocktime = 4, 20
    configure_ncnn(option)
    assert (option.num_threads, option.openmp_blocktime) == (1, 0)


def test_onnxruntime_options_one_thread_not_spinning():
    options = onnxruntime_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_ncnn_runner_uses_the_policy(tmp_path):
    param, weights = tmp_path / "relu.param", tmp_path / "relu.bin"
    param.write_text("7767517\n2 2\nInput data 0 1 data 0=4 1=4 2=3\nReLU relu 1 1 data out\n")
    weights.write_bytes(b"")
    runner = NcnnRunner(param, weights, "data", ["out"])
    assert (runner.net.opt.num_threads, runner.net.opt.openmp_blocktime) == (1, 0)
    out = runner.infer(-np.ones((1, 3, 4, 4), np.float32))["out"]
    assert out.shape == (3, 4, 4) and not out.any()
