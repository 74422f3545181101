"""Benchmark of `convert`: wall time per stage, and NCNN latency of what it produces.

Latency: 1 thread, 320x256 input, median of repeated runs after warm-up, for
each converted model against the public reference NCNN model of the same
architecture, and for the legacy (rewritten) NanoDet-Plus against the native
4-level export of the same weights (target: at most +2%). That overhead is
given twice: paired whole-model rounds, and isolated: the two graphs share
every layer up to the head's last convolutions, so the added latency is the
difference of the layers after them, timed alone, over the native model's
latency. Whole-model figures move by about 2 % even between loaded instances of
identical layers (given as `same_layers_up_to_head_percent`), which is as large
as the target; the isolated figure moves by a few tenths of a percent.

    python benchmarks/bench_convert.py [--runs 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import ncnn
import numpy as np

from convert import convert_checkpoint
from parity.ncnn_param import Param

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
REFERENCE = FIXTURES / "reference-ncnn"


def _net(param: Path, weights: Path, fp16: bool) -> ncnn.Net:
    net = ncnn.Net()
    net.opt.num_threads = 1
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = fp16
    net.load_param(str(param))
    net.load_model(str(weights))
    return net


def _timer(net: ncnn.Net, feeds: dict[str, ncnn.Mat], outputs: list[str],
           keep: object) -> Callable[[], float]:
    """ms of one extraction of `outputs` with `feeds` as the net's inputs."""

    def once() -> float:
        start = time.perf_counter()
        ex = net.create_extractor()
        for name, mat in feeds.items():
            ex.input(name, mat)
        for name in outputs:
            ex.extract(name)
        return (time.perf_counter() - start) * 1000

    once._keep = (net, feeds, keep)  # Mats may borrow numpy memory
    return once


def _input(shape: tuple[int, ...] = (3, 256, 320)) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _runner(param: Path, weights: Path, input_name: str, outputs: list[str], fp16: bool):
    """The whole model, from the input image tensor."""
    data = _input()
    return _timer(_net(param, weights, fp16), {input_name: ncnn.Mat(data)}, outputs, data)


def head_blobs(param: Path, channels: int) -> list[str]:
    """Tops of the head's last convolutions (`channels` = classes + distance bins)."""
    return [layer.tops[0] for layer in Param.read(param).layers
            if layer.type == "Convolution" and layer.get(0) == str(channels)]


def tail_runner(param: Path, weights: Path, input_name: str, outputs: list[str], fp16: bool,
                 channels: int) -> Callable[[], float]:
    """ms of only the layers after the head's last convolutions, their outputs fed in.

    Native and legacy graphs share every layer up to those convs, so the latency the
    rewrite adds is the difference of these tails. Timed alone (~0.3 ms), the tails
    escape the noise of the ~10 ms before them, which moves whole-model figures by
    about 2 % even between loaded instances of identical layers. The feeds keep
    ncnn's packed layout (extract type 1), as the tail sees them in a whole run.
    """
    net = _net(param, weights, fp16)
    data = _input()  # alive while the Mat that borrows it is cloned
    ex = net.create_extractor()
    ex.input(input_name, ncnn.Mat(data).clone())
    feeds = {name: ex.extract(name, 1)[1].clone() for name in head_blobs(param, channels)}
    return _timer(net, feeds, outputs, None)


def interleaved_rounds(runners: dict[str, Callable[[], float]], runs: int
                       ) -> dict[str, list[float]]:
    """Per runner, the median ms of each round of 10 runs; rounds interleave the runners so
    drifting load on the machine hits all of them alike."""
    for once in runners.values():
        for _ in range(10):
            once()
    rounds: dict[str, list[float]] = {label: [] for label in runners}
    for _ in range(max(1, runs // 10)):
        for label, once in runners.items():
            rounds[label].append(statistics.median(once() for _ in range(10)))
    return rounds


def latency_rounds(models: dict[str, tuple], runs: int, fp16: bool) -> dict[str, list[float]]:
    """`interleaved_rounds` of whole models (param, bin, input name, output names)."""
    return interleaved_rounds({label: _runner(*spec, fp16) for label, spec in models.items()},
                              runs)


def fresh_latency_rounds(models: dict[str, tuple], runs: int, fp16: bool
                         ) -> dict[str, list[float]]:
    """`latency_rounds` in a new interpreter, as an application would run the models.

    The conversions before leave this process's heap fragmented, which slows the small
    allocations each ncnn layer makes; a graph of more small layers pays that more
    often. Measured: with 100 000 small blocks freed at random beforehand, the legacy
    NanoDet-Plus-m ran 12 % over its native export instead of about 1 %.
    """
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(latency_rounds, models, runs, fp16).result()


def paired_overhead_percent(rounds: dict[str, list[float]], model: str, base: str) -> float:
    """Median over rounds of model/base - 1: robust to load that changes between rounds."""
    ratios = [a / b for a, b in zip(rounds[model], rounds[base])]
    return round(100 * (statistics.median(ratios) - 1), 2)


def head_channels(manifest: dict) -> int:
    head = manifest["architecture"]["head"]
    return head["num_classes"] + 4 * (head["reg_max"] + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    legacy_names = [f"{k}_pred_stride_{s}" for s in (8, 16, 32) for k in ("cls", "dis")]
    report: dict = {"stage_seconds": {}, "latency_ms": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        jobs = {
            "nanodet-m legacy": (FIXTURES / "nanodet-m_coco.pth", FIXTURES / "nanodet-m.yml",
                                 True),
            "nanodet-plus-m legacy (fold)": (FIXTURES / "nanodet-plus-m_416_coco.pth",
                                             FIXTURES / "nanodet-plus-m_416.yml", True),
            "nanodet-plus-m native": (FIXTURES / "nanodet-plus-m_416_coco.pth",
                                      FIXTURES / "nanodet-plus-m_416.yml", False),
        }
        folders = {}
        for label, (ckpt, cfg, legacy) in jobs.items():
            for weights in ("fp32", "fp16"):
                out = work / f"{label.replace(' ', '_')}-{weights}"
                start = time.perf_counter()
                result = convert_checkpoint(ckpt, config=cfg, legacy_head=legacy, output=out,
                                            fp16=weights == "fp16")
                total = time.perf_counter() - start
                folders[(label, weights)] = (out, result.manifest)
                if weights == "fp16":
                    report["stage_seconds"][label] = {**result.manifest["stage_seconds"],
                                                      "total": round(total, 2)}
        models = {
            "reference nanodet_m": (REFERENCE / "nanodet_m.param", REFERENCE / "nanodet_m.bin",
                                    "input.1", ["792", "795", "814", "817", "836", "839"]),
            "reference nanodet-plus-m_416": (REFERENCE / "nanodet-plus-m_416.param",
                                             REFERENCE / "nanodet-plus-m_416.bin", "data",
                                             ["output"]),
        }
        for (label, weights), (out, manifest) in folders.items():
            names = legacy_names if manifest["layout"] == "legacy" else ["output"]
            models[f"{label} [{weights} weights]"] = (out / "model.param", out / "model.bin",
                                                      manifest["input"]["name"], names)
            if label.startswith("nanodet-plus-m"):  # identical layers: the instance spread
                models[f"{label} [{weights} weights] up to head"] = (
                    out / "model.param", out / "model.bin", manifest["input"]["name"],
                    head_blobs(out / "model.param", head_channels(manifest)))
        for mode in ("fp32", "fp16"):
            rounds = fresh_latency_rounds(models, args.runs, mode == "fp16")
            for label, per_round in rounds.items():
                report["latency_ms"].setdefault(label, {})[mode] = round(min(per_round), 3)
            for weights in ("fp32", "fp16"):
                legacy = f"nanodet-plus-m legacy (fold) [{weights} weights]"
                native = f"nanodet-plus-m native [{weights} weights]"
                report.setdefault("legacy_over_native_percent", {}).setdefault(
                    f"{weights} weights", {})[mode] = paired_overhead_percent(rounds, legacy,
                                                                               native)
                report.setdefault("same_layers_up_to_head_percent", {}).setdefault(
                    f"{weights} weights", {})[mode] = paired_overhead_percent(
                        rounds, f"{legacy} up to head", f"{native} up to head")
                tails = interleaved_rounds(
                    {label: tail_runner(*models[label], mode == "fp16", head_channels(
                        folders[(label.split(" [")[0], weights)][1])) for label in (legacy, native)},
                    args.runs)
                tail = {label: statistics.median(t) for label, t in tails.items()}
                report.setdefault("after_head_ms", {})[f"{weights} weights, {mode}"] = {
                    label: round(value, 4) for label, value in tail.items()}
                report.setdefault("legacy_over_native_isolated_percent", {}).setdefault(
                    f"{weights} weights", {})[mode] = round(
                        100 * (tail[legacy] - tail[native]) / statistics.median(rounds[native]), 2)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
