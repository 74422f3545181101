"""The thread policy: every numeric library runs on one thread, in this process and its children.

torch (its libgomp), ncnn (a second libgomp of its own), OpenCV and onnxruntime
each keep a pool of threads sized to the cores, whose threads spin (or
sched_yield) while they wait for work or for each other. On a busy machine one
of a pool's threads is often descheduled while the others spin for it: torch's
forward passes in `convert`'s verify stage were measured 10x slower beside a
single other busy process on 2 cores. One thread per library costs little when
the machine is idle (these models are small) and lets a run slow down only by
its fair share when it is not.
"""

from __future__ import annotations

import os
from typing import Any

# Read by OpenMP, MKL and OpenBLAS when a child process (pnnx, a spawned worker) starts.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def limit_threads(threads: int = 1) -> None:
    """Run torch, ncnn, OpenCV and the children started from now on on `threads` threads each.

    torch's intra-op pool is resized at once; its inter-op pool can only be sized
    before it is first used, and is left as it is after that.
    """
    import torch

    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already started or already set: only torch.jit.fork uses it
        pass
    import cv2
    import ncnn

    cv2.setNumThreads(threads)  # 1: OpenCV runs on the calling thread, no pool
    # ncnn's OpenMP runtime, for work outside a net's options; in the pip wheels
    # this was seen to resize torch's OpenMP pool too (they share the symbols).
    ncnn.set_omp_num_threads(threads)


def configure_ncnn(option: Any, threads: int = 1) -> None:
    """Set an `ncnn.Option` (e.g. `net.opt`, before loading) to compute on `threads` threads.

    `openmp_blocktime = 0` makes idle OpenMP threads sleep at once instead of
    spinning; ncnn applies it only where it is built with LLVM's OpenMP (the
    x86 Linux wheel uses libgomp, where one thread leaves nothing to spin).
    """
    option.num_threads = threads
    option.openmp_blocktime = 0


def onnxruntime_options(threads: int = 1) -> Any:
    """`onnxruntime.SessionOptions` computing on `threads` threads, idle threads not spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
