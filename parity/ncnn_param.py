"""Read, edit and write NCNN text `.param` files (the converter's last touches)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from common.errors import InputError

PARAM_MAGIC = "7767517"
_COUNT = re.compile(r"[0-9]{1,9}")
_PARAM_TOKEN = re.compile(r"-?[0-9]{1,9}=\S+")


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


def _parse_layer(number: int, line: str, where: str | Path) -> Layer:
    """`type name n_in n_out bottoms... tops... k=v...` of line `number`."""
    parts = line.split()
    if len(parts) < 4 or not (_COUNT.fullmatch(parts[2]) and _COUNT.fullmatch(parts[3])):
        raise InputError(where, f"line {number}: not 'type name inputs outputs blobs... "
                         "params...'")
    n_in, n_out = int(parts[2]), int(parts[3])
    blobs_end = 4 + n_in + n_out
    if len(parts) < blobs_end:
        raise InputError(where, f"line {number}: names fewer than its {n_in} + {n_out} blobs")
    params = parts[blobs_end:]
    bad = next((token for token in params if not _PARAM_TOKEN.fullmatch(token)), None)
    if bad is not None:
        raise InputError(where, f"line {number}: {bad[:40]!r} is not a key=value param")
    return Layer(parts[0], parts[1], parts[4:4 + n_in], parts[4 + n_in:blobs_end], params)


@dataclass
class Param:
    layers: list[Layer]

    @classmethod
    def read(cls, path: Path) -> Param:
        """The param file at `path`; InputError naming it when it is not a text param."""
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise InputError(path, f"cannot be read: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise InputError(path, "not an NCNN text param (not UTF-8 text)") from None
        return cls.parse(text, path)

    @classmethod
    def parse(cls, text: str, where: str | Path = "<param>") -> Param:
        """Layers of a text param, checked enough that every field has its type."""
        lines = text.splitlines()
        if not lines or lines[0].strip() != PARAM_MAGIC:
            raise InputError(where, f"not an NCNN text param (line 1 is not {PARAM_MAGIC})")
        counts = lines[1].split() if len(lines) > 1 else []
        if len(counts) != 2 or not all(_COUNT.fullmatch(c) for c in counts):
            raise InputError(where, "line 2: must be the layer count and the blob count")
        layers = [_parse_layer(number, line, where)
                  for number, line in enumerate(lines[2:], 3) if line.split()]
        if len(layers) != int(counts[0]):
            raise InputError(where, f"line 2: declares {int(counts[0])} layers but the file "
                             f"has {len(layers)}")
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
