"""Read, edit and write NCNN text `.param` files (the converter's last touches)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PARAM_MAGIC = "7767517"


@dataclass
class Layer:
    type: str
    name: str
    bottoms: list[str]
    tops: list[str]
    params: list[str] = field(default_factory=list)  # raw "k=v" tokens, order kept

    def line(self) -> str:
        head = f"{self.type:<24} {self.name:<24} {len(self.bottoms)} {len(self.tops)}"
        return " ".join([head, *self.bottoms, *self.tops, *self.params])

    def get(self, key: int) -> str | None:
        for token in self.params:
            k, _, v = token.partition("=")
            if int(k) == key:
                return v
        return None

    def set(self, key: int, value: str) -> None:
        for i, token in enumerate(self.params):
            if int(token.partition("=")[0]) == key:
                self.params[i] = f"{key}={value}"
                return
        self.params.append(f"{key}={value}")


@dataclass
class Param:
    layers: list[Layer]

    @classmethod
    def read(cls, path: Path) -> Param:
        lines = path.read_text().splitlines()
        if not lines or lines[0].strip() != PARAM_MAGIC:
            raise ValueError(f"{path}: not an NCNN text param (first line is not {PARAM_MAGIC})")
        layers = []
        for line in lines[2:]:
            parts = line.split()
            if not parts:
                continue
            n_in, n_out = int(parts[2]), int(parts[3])
            layers.append(Layer(parts[0], parts[1], parts[4:4 + n_in],
                                parts[4 + n_in:4 + n_in + n_out], parts[4 + n_in + n_out:]))
        return cls(layers)

    def blob_count(self) -> int:
        return len({top for layer in self.layers for top in layer.tops})

    def text(self) -> str:
        body = "\n".join(layer.line() for layer in self.layers)
        return f"{PARAM_MAGIC}\n{len(self.layers)} {self.blob_count()}\n{body}\n"

    def write(self, path: Path) -> None:
        path.write_text(self.text())

    def producer(self, blob: str) -> Layer:
        for layer in self.layers:
            if blob in layer.tops:
                return layer
        raise KeyError(blob)

    def rename_blob(self, old: str, new: str) -> None:
        for layer in self.layers:
            layer.bottoms = [new if b == old else b for b in layer.bottoms]
            layer.tops = [new if t == old else t for t in layer.tops]
            if layer.type == "Input" and layer.name == old:
                layer.name = new

    def unbake_cell_counts(self, cell_counts: set[int]) -> int:
        """Let Reshapes infer the cell count instead of holding the export size's.

        pnnx resolves `reshape(..., -1)` to numbers; in the graphs this tool
        exports, cells are always the innermost (w) axis, so a Reshape whose w is
        one of the levels' cell counts gets w = -1 back. Returns how many changed.
        """
        changed = 0
        for layer in self.layers:
            if layer.type != "Reshape" or "-1" in (layer.get(1), layer.get(2)):
                continue
            w = layer.get(0)
            if w is not None and w.lstrip("-").isdigit() and int(w) in cell_counts:
                layer.set(0, "-1")
                changed += 1
        return changed
