"""model.json as the UnitV2 firmware reads it: writer, reader (shape check) and pool fit.

Source: m5stack UnitV2Framework ``main/object_recognition.cpp`` ``loadModelConfig``: the
file is read into a ``std::string`` and parsed by ``deserializeJson`` into a
``DynamicJsonDocument(1024 * 8)`` (so every key and string is copied into that pool; see
``arduinojson``); ``modelType`` "nanodet", ``modelParamName`` / ``modelBinName`` (files of
the model folder), ``numOfClass``, ``className`` and ``model.modelOutputNodes``, of which
the firmware uses the first one per level (``cls_pred`` and ``dis_pred`` blob names).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parity.json_shape import ShapeError, conform, integer, list_of, obj, refine, string
from parity.unitv2.arduinojson import SLOT_BYTES, MemoryPool, parse_usage

_NODE = obj({"cls_pred": string(nonempty=True), "dis_pred": string(nonempty=True)})


@dataclass(frozen=True)
class ModelJsonFormat:
    """The model.json a firmware reads: ``levels`` output nodes, parsed into ``pool_bytes``."""

    levels: int
    pool_bytes: int
    slot_bytes: int = SLOT_BYTES

    def document(self, class_names: list[str], output_names: list[str], param_file: str,
                 bin_file: str) -> dict[str, Any]:
        """The file's content; ``output_names`` are cls, dis per level, in the firmware's order."""
        nodes = [{"cls_pred": output_names[2 * i], "dis_pred": output_names[2 * i + 1]}
                 for i in range(self.levels)]
        return {"modelType": "nanodet", "modelParamName": param_file, "modelBinName": bin_file,
                "numOfClass": len(class_names), "className": list(class_names),
                "model": {"modelOutputNodes": nodes}}

    def parse_bytes(self, doc: dict[str, Any]) -> int:
        """Pool bytes the firmware's ``deserializeJson`` needs for ``doc``."""
        return parse_usage(doc, MemoryPool(None, self.slot_bytes))

    def fits(self, doc: dict[str, Any]) -> bool:
        return self.parse_bytes(doc) <= self.pool_bytes

    def read(self, where: str | Path, doc: Any) -> dict[str, Any]:
        """``doc`` checked as the firmware reads it, or an InputError naming ``where`` and key."""
        return conform(where, doc, refine(self._shape(), self._rule))

    def output_names(self, doc: dict[str, Any]) -> list[str]:
        """cls, dis blob names of the nodes the firmware uses (the first ``levels``)."""
        nodes = doc["model"]["modelOutputNodes"][:self.levels]
        return [name for node in nodes for name in (node["cls_pred"], node["dis_pred"])]

    def _shape(self):
        return obj({
            "modelType": string(("nanodet",)),
            "modelParamName": string(nonempty=True),
            "modelBinName": string(nonempty=True),
            "numOfClass": integer(minimum=1),
            "className": list_of(string(), min_items=1),
            "model": obj({"modelOutputNodes": list_of(_NODE, min_items=self.levels)}),
        })

    def _rule(self, doc: dict[str, Any], at: str) -> None:
        if doc["numOfClass"] != len(doc["className"]):
            raise ShapeError("numOfClass", f"is {doc['numOfClass']} but className holds "
                             f"{len(doc['className'])} names")
        need = self.parse_bytes(doc)
        if need > self.pool_bytes:
            raise ShapeError(at, f"needs ~{need} bytes to parse but the firmware reads it "
                             f"into {self.pool_bytes}")
