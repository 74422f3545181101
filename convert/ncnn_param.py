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

    def unbake_cell_reshape(self, output_blob: str) -> bool:
        """Make the Reshape feeding `output_blob` (via a Permute) infer the cell count.

        pnnx resolves `reshape(1, C, -1)` to the export size; -1 keeps the
        model usable at any input size. Returns whether a Reshape was changed.
        """
        layer = self.producer(output_blob)
        if layer.type == "Permute":
            layer = self.producer(layer.bottoms[0])
        if layer.type != "Reshape" or layer.get(0) is None or layer.get(2) is not None:
            return False
        layer.set(0, "-1")
        return True
