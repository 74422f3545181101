"""What one ncnn version accepts: its layer types, their params, and its behaviours.

Each version is one JSON file in ``parity/data/`` plus one line in ``TABLE_FILES``.
The two tables of the UnitV2 firmware (``ncnn-20210222``: master at commit 6afc736,
the library it links; ``ncnn-20201208``: the release whose headers it was built
with) list every layer with its param ids, defaults and array ids; ``ncnn-latest``
lists current master's layer types only (its param ids are not checked).

Behaviours that differ between versions are capability flags (``CAPABILITIES``
says what each means): a table ``supports`` a flag when that version behaves the
newer way.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

TABLE_FILES: dict[str, str | Path] = {
    "ncnn-20201208": "ncnn-20201208.json",
    "ncnn-20210222": "ncnn-20210222.json",
    "ncnn-latest": "ncnn-latest.json",
}
"""The registry: table name -> its data file (a name in ``parity/data/``, or a path)."""

CAPABILITIES: Mapping[str, str] = MappingProxyType({
    "param_id_bound_check": "ParamDict rejects param ids of 32 and over (older ncnn writes "
                            "past its 32-entry table)",
    "load_param_returns_error": "a layer that fails to load makes Net::load_param return an "
                                "error (older ncnn drops the layer, and its error paths "
                                "segfault)",
    "custom_layers": "an unknown layer type may be a registered custom layer",
    "string_params": "quoted or alphabetic string param values",
    "list_params": "the 'id=a,b,c' array syntax",
    "four_d_blobs": "4-D Mat: shape hints with dims 4, Permute orders beyond 0..5, "
                    "MemoryData 11=d",
    "dynamic_weights": "Convolution 19=1 / Deconvolution 28=1 take weights from a blob "
                       "instead of the .bin",
    "int8_scale_variants": "int8_scale_term above 100 also reads top blob scales "
                           "(ConvolutionDepthWise 101 / 102)",
    "memorydata_load_type": "MemoryData 21=load_type",
    "embed_int8": "Embed 18=int8_scale_term reads a weight scale",
    "layernorm_affine_flag": "LayerNorm 2=affine decides whether gamma/beta are read",
    "interp_no_resize_is_warning": "Interp 0=0 (no resize) is reported as a warning, "
                                   "not an error",
    "reduction_axes_without_batch": "Reduction axes count without the batch axis when 5=1; "
                                    "axes without 5=1 are rejected",
})


@dataclass(frozen=True)
class LayerSpec:
    """One layer type of one ncnn version.

    ``params`` (id -> name) is None when the table does not list the layer's params.
    """

    type: str
    enabled: bool = True
    params: Mapping[int, str] | None = None
    defaults: Mapping[int, str] = field(default_factory=dict)
    array_ids: frozenset[int] = frozenset()
    reads_weights: bool = False
    load_param_can_fail: bool = False


@dataclass(frozen=True)
class NcnnTables:
    """What one ncnn version accepts (see the module docstring)."""

    name: str
    version: str
    label: str  # how messages name this ncnn, e.g. "current ncnn"
    layers: Mapping[str, LayerSpec]
    capabilities: frozenset[str] = frozenset()
    enum_limits: Mapping[str, Any] = field(default_factory=dict)
    unmodelled_weight_layouts: frozenset[str] = frozenset()

    def layer(self, layer_type: str) -> LayerSpec | None:
        """The registered layer type (possibly with a null creator), None if unknown."""
        return self.layers.get(layer_type)

    def supports(self, capability: str) -> bool:
        """Whether this version has ``capability`` (a key of ``CAPABILITIES``)."""
        if capability not in CAPABILITIES:
            raise KeyError(f"unknown ncnn capability {capability!r}")
        return capability in self.capabilities


def ncnn_tables(name: str) -> NcnnTables:
    """The registered tables called ``name``; KeyError naming the known ones otherwise."""
    if name not in TABLE_FILES:
        raise KeyError(f"unknown ncnn tables {name!r} (known: {', '.join(TABLE_FILES)})")
    return _load(name, TABLE_FILES[name])


@functools.cache
def _load(name: str, source: str | Path) -> NcnnTables:
    resource = source if isinstance(source, Path) else \
        importlib.resources.files("parity").joinpath("data", source)
    return _from_json(name, json.loads(resource.read_text(encoding="utf-8")))


def _from_json(name: str, data: Mapping[str, Any]) -> NcnnTables:
    """Tables from the parsed JSON of one data file."""
    unknown = set(data.get("capabilities", [])) - set(CAPABILITIES)
    if unknown:
        raise ValueError(f"{name}: unknown capabilities {sorted(unknown)}")
    version = str(data["version"])
    return NcnnTables(
        name=name, version=version, label=data.get("label", "this ncnn"),
        layers=MappingProxyType({layer_type: _layer_spec(layer_type, entry)
                                 for layer_type, entry in data["layers"].items()}),
        capabilities=frozenset(data.get("capabilities", [])),
        enum_limits=MappingProxyType(dict(data.get("enum_limits", {}))),
        unmodelled_weight_layouts=frozenset(data.get("unmodelled_weight_layouts", [])))


def _layer_spec(layer_type: str, entry: Mapping[str, Any]) -> LayerSpec:
    params = entry.get("params")
    return LayerSpec(
        type=layer_type, enabled=entry.get("enabled", True),
        params=None if params is None else MappingProxyType(
            {int(key): value for key, value in params.items()}),
        defaults=MappingProxyType({int(k): v for k, v in entry.get("defaults", {}).items()}),
        array_ids=frozenset(entry.get("array_ids", [])),
        reads_weights=bool(entry.get("reads_weights", False)),
        load_param_can_fail=bool(entry.get("load_param_can_fail", False)))
