"""Find the first NCNN layer whose output departs from the ONNX model (`parity check --blame`).

The idea of Polygraphy's `--onnx-outputs mark all`: run the ONNX model once with
every intermediate tensor exposed as an output, run NCNN once keeping every blob,
then walk the NCNN layers in `.param` order and compare each top blob with the
ONNX tensor it matches best. pnnx renames every blob and fuses layers (conv + BN,
conv + activation, ShuffleChannel, ...), so there is no name mapping: a blob is
matched by value among the ONNX tensors holding as many elements (a fused
Convolution's output equals the ONNX tensor after its activation, a Permute's the
matching Transpose's, ...). The first layer whose best match still exceeds
`atol + rtol * |onnx|` somewhere is where NCNN departs from ONNX.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import ncnn
import numpy as np
import onnx
import onnxruntime as ort

from common.errors import InputError
from common.threads import configure_ncnn
from parity.ncnn_param import Layer
from parity.runners.ncnn_runner import net_layers

# Layers not checked: Input is the feed itself, Split's tops are copies of its bottom.
_SKIPPED_LAYERS = {"Input", "Split"}
_WORST = 5
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


@dataclass(frozen=True)
class LayerBlame:
    """One NCNN layer's top blob against its best-matching ONNX tensor.

    `max_rel` is the largest |ncnn - onnx| / |onnx| over elements with |onnx| > atol;
    `tolerance` is `atol + rtol * |onnx|` at the element exceeding it the most and
    `ratio` the largest |ncnn - onnx| / (atol + rtol * |onnx|): above 1 is a departure.
    `index` is the layer's position in the `.param` (0 = the Input layer).
    """

    layer_type: str
    layer_name: str
    blob: str
    onnx_tensor: str | None
    max_abs: float
    max_rel: float
    tolerance: float
    index: int
    ratio: float = 0.0

    @property
    def departs(self) -> bool:
        return self.ratio > 1.0

    def __str__(self) -> str:
        verdict = "DEPARTS" if self.departs else "ok"
        return (f"#{self.index} {self.layer_type} {self.layer_name} -> blob {self.blob} "
                f"vs ONNX {self.onnx_tensor}: max_abs={self.max_abs:.3g} "
                f"max_rel={self.max_rel:.3g}, worst element {self.ratio:.3g}x its "
                f"tolerance {self.tolerance:.3g}: {verdict}")


@dataclass(frozen=True)
class BlameResult:
    first_departure: LayerBlame | None  # None: every matched layer within tolerance
    layers_checked: int  # NCNN top blobs compared with some ONNX tensor
    layers_unmatched: int  # NCNN top blobs with no ONNX tensor of as many elements
    worst: list[LayerBlame]  # the few largest departures relative to tolerance

    def to_dict(self) -> dict:
        return {
            "first_departure": _blame_dict(self.first_departure),
            "layers_checked": self.layers_checked,
            "layers_unmatched": self.layers_unmatched,
            "worst": [_blame_dict(b) for b in self.worst],
        }


def _blame_dict(blame: LayerBlame | None) -> dict | None:
    if blame is None:
        return None
    return {**asdict(blame), "departs": blame.departs}


def blame_ncnn_against_onnx(onnx_path: Path, param: Path, weights: Path, input_name: str,
                            feed: np.ndarray, atol: float = 1e-3,
                            rtol: float = 1e-3) -> BlameResult:
    """Compare every NCNN top blob with the ONNX intermediates on one `feed` (1xCxHxW)."""
    feed = np.ascontiguousarray(feed, dtype=np.float32)
    onnx_tensors = _onnx_intermediates(Path(onnx_path), input_name, feed)
    pool = _TensorPool(onnx_tensors)
    net = _load_net(Path(param), Path(weights))
    layers = net_layers(net)
    blobs = _ncnn_blobs(net, input_name, feed, layers)

    checked: list[LayerBlame] = []
    unmatched = 0
    first: LayerBlame | None = None
    for index, layer in enumerate(layers):
        if layer.type in _SKIPPED_LAYERS:
            continue
        for top in layer.tops:
            match = pool.best_match(top, blobs[top], atol, rtol)
            if match is None:
                unmatched += 1
                continue
            name, ratio, max_abs, max_rel, tolerance = match
            blame = LayerBlame(layer.type, layer.name, top, name, max_abs, max_rel,
                               tolerance, index, ratio)
            checked.append(blame)
            if first is None and blame.departs:
                first = blame
    worst = sorted(checked, key=lambda b: -b.ratio)[:_WORST]
    return BlameResult(first, len(checked), unmatched, worst)


def _onnx_intermediates(path: Path, input_name: str, feed: np.ndarray) -> dict[str, np.ndarray]:
    """Every float tensor the ONNX graph computes on `feed`, in graph order."""
    model = onnx.load(str(path))
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - types only save work: untyped outputs run as well
        model = onnx.load(str(path))
    graph = model.graph
    if input_name not in {i.name for i in graph.input}:
        raise InputError(path, f"has no input named {input_name!r}")
    types = {vi.name: vi for vi in [*graph.value_info, *graph.output]}
    skip = {init.name for init in graph.initializer}
    existing = {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type == "Constant":
            skip.update(node.output)
            continue
        for name in node.output:
            if not name or name in skip or name in existing:
                continue
            info = types.get(name)
            if info is None:  # not inferred: onnxruntime takes an untyped output too
                info = onnx.ValueInfoProto(name=name)
            elif info.type.tensor_type.elem_type not in _FLOAT_TYPES:
                continue
            graph.output.append(info)
            existing.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {input_name: feed})
    order = {name: i for i, name in enumerate(o for n in graph.node for o in n.output)}
    tensors = {name: np.asarray(v, dtype=np.float32) for name, v in zip(names, values)
               if np.issubdtype(np.asarray(v).dtype, np.floating)}
    return dict(sorted(tensors.items(), key=lambda kv: order.get(kv[0], len(order))))


def _load_net(param: Path, weights: Path) -> ncnn.Net:
    """The net in fp32, keeping every intermediate blob."""
    net = ncnn.Net()
    configure_ncnn(net.opt)
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_arithmetic = False
    net.opt.lightmode = False  # keep intermediates, and no in-place layers overwriting them
    if net.load_param(str(param)) != 0:
        raise InputError(param, "ncnn cannot load this param file")
    if net.load_model(str(weights)) != 0:
        raise InputError(weights, "ncnn cannot load these weights (too short for the param?)")
    return net


def _ncnn_blobs(net: ncnn.Net, input_name: str, feed: np.ndarray,
                layers: list[Layer]) -> dict[str, np.ndarray]:
    """Every top blob of every layer, computed by one extractor that keeps them all."""
    array = np.ascontiguousarray(feed[0], dtype=np.float32)  # ncnn.Mat borrows this memory
    extractor = net.create_extractor()
    extractor.set_light_mode(False)
    extractor.input(input_name, ncnn.Mat(array))
    blobs: dict[str, np.ndarray] = {}
    for layer in layers:
        if layer.type in _SKIPPED_LAYERS:
            continue
        for top in layer.tops:
            status, mat = extractor.extract(top)
            if status != 0:
                raise InputError(top, f"ncnn could not compute blob {top!r} ({layer.name})")
            blobs[top] = np.array(mat, dtype=np.float32, copy=True)
    del array
    return blobs


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1) or (1,)


class _TensorPool:
    """ONNX tensors bucketed by element count, matched to NCNN blobs by value."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.buckets: dict[int, list[tuple[str, np.ndarray]]] = defaultdict(list)
        self.named: dict[str, np.ndarray] = {}
        for name, value in tensors.items():
            if value.size:
                squeezed = value.reshape(_squeezed(value.shape))
                self.buckets[value.size].append((name, squeezed))
                self.named[name] = squeezed

    def best_match(self, blob_name: str, blob: np.ndarray, atol: float,
                   rtol: float) -> tuple[str, float, float, float, float] | None:
        """(name, ratio, max_abs, max_rel, tolerance) of the best candidate, None if none.

        ratio = max |ncnn - onnx| / (atol + rtol * |onnx|): above 1 means a departure.
        Candidates within tolerance come first, then the smallest max_abs wins, then
        (for ties such as a Transpose's input and output) the most natural layout.
        A blob named like an ONNX tensor (the outputs the firmware reads) is compared
        with that tensor alone, in its own layout: a transposed output is a departure.
        """
        if blob_name in self.named:
            value = self.named[blob_name]
            target = blob.reshape(_squeezed(blob.shape))
            if value.shape != target.shape:
                return blob_name, float("inf"), float("inf"), float("inf"), atol
            return blob_name, *_compare(target, value, atol, rtol)
        candidates = self.buckets.get(blob.size)
        if not candidates:
            return None
        target = blob.reshape(_squeezed(blob.shape))
        # a few elements spread over the blob: their differences bound a candidate from below
        flat = np.linspace(0, target.size - 1, min(target.size, 64)).astype(np.int64)
        sample = np.unravel_index(flat, target.shape)
        target_sample = target[sample]
        best: tuple | None = None
        for name, value in candidates:
            for rank, view in _layouts(value, target.shape):
                if best is not None:
                    onnx_sample = view[sample]
                    part = np.abs(target_sample - onnx_sample)
                    # worse than the best so far whatever the other elements hold (NaN: compare)
                    if part.max() > best[0][1] and (
                            not best[0][0] or (part > atol + rtol * np.abs(onnx_sample)).any()):
                        continue
                stats = _compare(target, view, atol, rtol)
                key = (stats[0] > 1.0, stats[1], rank)
                if best is None or key < best[0]:
                    best = (key, name, *stats)
        assert best is not None
        return best[1:]


def _layouts(value: np.ndarray, shape: tuple[int, ...]):
    """(rank, `value` seen in `shape`): 0 as is, 1 transposed (e.g. a final Permute), 2 reshaped."""
    if value.shape == shape:
        yield 0, value
        return
    if sorted(value.shape) == sorted(shape):
        seen = False
        for perm in itertools.permutations(range(value.ndim)):
            if tuple(value.shape[p] for p in perm) == shape:
                seen = True
                yield 1, value.transpose(perm)
        if seen:
            return
    yield 2, value.reshape(shape)  # same element count: a flatten / reshape in between


def _compare(ncnn_value: np.ndarray, onnx_value: np.ndarray, atol: float,
             rtol: float) -> tuple[float, float, float, float]:
    """(ratio, max_abs, max_rel, tolerance at the worst element)."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(ncnn_value - onnx_value)
        diff[np.isnan(diff)] = np.inf  # NaN on either side (not both alike) is a departure
        diff[(ncnn_value == onnx_value) | (np.isnan(ncnn_value) & np.isnan(onnx_value))] = 0.0
        magnitude = np.nan_to_num(np.abs(onnx_value), nan=0.0)
        allowed = atol + rtol * magnitude
        ratios = diff / allowed
    worst = int(np.argmax(ratios))
    ratio = float(ratios.flat[worst])
    max_abs = float(diff.max())
    big = magnitude > atol
    max_rel = float((diff[big] / magnitude[big]).max()) if big.any() else 0.0
    return ratio, max_abs, max_rel, float(allowed.flat[worst])
