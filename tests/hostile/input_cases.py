"""Hostile cases: untrusted checkpoints, configs and class-name files (see harness.py).

Each bad checkpoint and config runs through `convert --info`, `convert -o` and
`parity check` (against the `unitv2` folder, which `plus.pth` matches): exit 2,
one line naming the file and the key or problem, nothing written. Every refusal
happens while loading, before any work, so the cases are fast.
"""

from __future__ import annotations

import io
import os
import random
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from tests.hostile.harness import Case, Workspace


@dataclass(frozen=True)
class Input:
    """A hostile input: `name` below the workspace (or an absolute path), made by `make`."""

    name: str
    make: Callable[[Workspace, Path], None] | None = None

    def path(self, ws: Workspace) -> Path:
        return Path(self.name) if self.name.startswith("/") else ws.root / self.name

    def setup(self, ws: Workspace) -> None:
        if self.make is not None:
            self.make(ws, self.path(ws))


def content(name: str, data: bytes | Callable[[Workspace], bytes]) -> Input:
    return Input(name, lambda ws, path: path.write_bytes(data(ws) if callable(data) else data))


def fifo(name: str) -> Input:
    return Input(name, lambda ws, path: os.mkfifo(path))


def folder(name: str) -> Input:
    return Input(name, lambda ws, path: path.mkdir())


def state_dict(ws: Workspace) -> dict[str, torch.Tensor]:
    return torch.load(ws["plus.pth"], weights_only=True)["state_dict"]


def saved(edit: Callable[[dict[str, torch.Tensor]], object], zipped: bool = True
          ) -> Callable[[Workspace], bytes]:
    """Bytes of plus.pth's weights after `edit`, saved by torch."""

    def make(ws: Workspace) -> bytes:
        buffer = io.BytesIO()
        torch.save(edit(state_dict(ws)), buffer, _use_new_zipfile_serialization=zipped)
        return buffer.getvalue()

    return make


def replaced(key: str, value: torch.Tensor) -> Callable[[dict], object]:
    return lambda sd: {"state_dict": {**sd, key: value}}


def foreign_zip(ws: Workspace) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "not weights")
    return buffer.getvalue()


def code_pickle(ws: Workspace) -> bytes:
    """A protocol-0 pickle that would create ws.root/pwned (the harness sees new files)."""
    return f"cos\nsystem\n(S'touch {ws.root / 'pwned'}'\ntR.".encode()


def truncated(ws: Workspace) -> bytes:
    whole = ws["plus.pth"].read_bytes()
    return whole[: len(whole) // 2]


BAD_CHECKPOINTS: list[tuple[str, Input, tuple[str, ...]]] = [
    ("text", content("notes.pth", b"hello world\n"), ("not a PyTorch checkpoint",)),
    ("random-bytes", content("random.pth", random.Random(1).randbytes(4000)),
     ("not a PyTorch checkpoint",)),
    ("yaml-config", content("config.pth", lambda ws: ws["plus.yml"].read_bytes()),
     ("not a PyTorch checkpoint",)),
    ("dev-zero", Input("/dev/zero"), ("is a character device",)),
    ("fifo", fifo("pipe.pth"), ("is a FIFO",)),
    ("directory", folder("weights.pth"), ("is a directory",)),
    ("empty", content("empty.pth", b""), ("empty file",)),
    ("truncated-zip", content("half.pth", truncated), ("truncated or corrupt",)),
    ("foreign-zip", content("foreign.pth", foreign_zip), ("zip archive without the data.pkl",)),
    ("code-pickle", content("evil.pth", code_pickle), ("refused", "nothing was executed")),
    ("int-weights", content("int.pth", saved(lambda sd: {"state_dict": {
        k: v.to(torch.int32) if v.is_floating_point() else v for k, v in sd.items()}})),
     ("holds torch.int32 values",)),
    ("empty-state-dict", content("nothing.pth", saved(lambda sd: {"state_dict": {}})),
     ("state_dict is empty",)),
    ("nested-dict", content("nested.pth", saved(lambda sd: {"state_dict": {"head": sd}})),
     ("'head' is a dict, not a tensor",)),
    ("0d-weight", content("zero-d.pth", saved(replaced("head.gfl_cls.0.weight",
                                                      torch.tensor(1.0)))),
     ("head.gfl_cls.0.weight", "()")),
    ("meta-tensor", content("meta.pth", saved(replaced("head.gfl_cls.0.bias",
                                                      torch.zeros(35, device="meta")))),
     ("head.gfl_cls.0.bias", "meta device")),
    ("expanded-view", content("view.pth", saved(replaced("head.gfl_cls.0.bias",
                                                        torch.zeros(1).expand(10**8)))),
     ("head.gfl_cls.0.bias", "over a storage of 4 bytes")),
]


def edited_config(dotted: str, value: object) -> Input:
    """plus.yml with the value at `dotted` replaced ('' replaces the whole document)."""

    def make(ws: Workspace) -> bytes:
        cfg = yaml.safe_load(ws["plus.yml"].read_text())
        if not dotted:
            return yaml.safe_dump(value).encode()
        node = cfg
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
        return yaml.safe_dump(cfg).encode()

    return content("config.yml", make)


def alias_bomb(ws: Workspace) -> bytes:
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    text = ws["plus.yml"].read_text().replace("name: ShuffleNetV2", "name: *l8", 1)
    return ("\n".join(lines) + "\n" + text).encode()


BAD_CONFIGS: list[tuple[str, Input, tuple[str, ...]]] = [
    ("backbone-string", edited_config("model.arch.backbone", "ShuffleNetV2"),
     ("model.arch.backbone: expected a mapping",)),
    ("num-classes-word", edited_config("model.arch.head.num_classes", "eighty"),
     ("model.arch.head.num_classes: expected an integer",)),
    ("class-names-number", edited_config("class_names", 5),
     ("class_names: expected a list",)),
    ("normalize-one-row", edited_config("data.val.pipeline.normalize", [[1, 2, 3]]),
     ("data.val.pipeline.normalize: expected",)),
    ("strides-words", edited_config("model.arch.head.strides", ["a", "b"]),
     ("model.arch.head.strides: expected a list",)),
    ("input-size-word", edited_config("data.val.input_size", "huge"),
     ("data.val.input_size: expected a list of 2 integers",)),
    ("model-null", edited_config("model", None), ("model: expected a mapping", "null")),
    ("top-level-list", edited_config("", ["a", "b"]), ("the top level: expected a mapping",)),
    ("empty", content("config.yml", b""), ("empty config",)),
    ("alias-bomb", content("config.yml", alias_bomb), ("aliases expand to more than",)),
    ("python-tag", content("config.yml", b"model: !!python/object/apply:os.system [ls]\n"),
     ("not valid YAML",)),
    ("unsupported-backbone", edited_config("model.arch.backbone.name", "FooNet"),
     ("backbone 'FooNet' is not supported",)),
    ("fifo", fifo("config.yml"), ("is a FIFO",)),
    ("directory", folder("config.yml"), ("is a directory",)),
    ("oversized", content("config.yml", lambda ws: ws["plus.yml"].read_bytes() + b"#" * (2 << 20)),
     ("too large",)),
]

BAD_NAMES: list[tuple[str, Input, tuple[str, ...]]] = [
    ("not-utf8", content("names.txt", b"cat\n\xff\xfedog\nbird\n"), ("is not UTF-8 text",)),
    ("empty", content("names.txt", b"\n\n"), ("holds no class names",)),
    ("directory", folder("names.txt"), ("is a directory",)),
    ("fifo", fifo("names.txt"), ("is a FIFO",)),
    ("control-character", content("names.txt", b"cat\nd\x1bog\nbird\n"), ("control character",)),
    ("wrong-count", content("names.txt", b"cat\ndog\n"), ("has 2 class names",)),
]


def checkpoint_cases(name: str, given: Input, phrases: tuple[str, ...]) -> list[Case]:
    def mentions(ws: Workspace) -> list:
        return [given.path(ws), *phrases]

    return [
        Case(f"input-checkpoint-{name}-info", "convert", lambda ws: [given.path(ws), "--info"],
             setup=given.setup, mentions=mentions),
        Case(f"input-checkpoint-{name}-convert", "convert",
             lambda ws: [given.path(ws), "-o", ws.root / "out", "--no-verify", "-q"],
             setup=given.setup, mentions=mentions),
        Case(f"input-checkpoint-{name}-parity", "parity",
             lambda ws: ["check", given.path(ws), ws["unitv2"], "--synthetic", "0", "-q"],
             setup=given.setup, mentions=mentions),
    ]


def config_cases(name: str, given: Input, phrases: tuple[str, ...]) -> list[Case]:
    def mentions(ws: Workspace) -> list:
        return [given.path(ws), *phrases]

    return [
        Case(f"input-config-{name}-info", "convert",
             lambda ws: [ws["plus.pth"], "--config", given.path(ws), "--info"],
             setup=given.setup, mentions=mentions),
        Case(f"input-config-{name}-convert", "convert",
             lambda ws: [ws["plus.pth"], "--config", given.path(ws), "-o", ws.root / "out",
                         "--no-verify", "-q"], setup=given.setup, mentions=mentions),
        Case(f"input-config-{name}-parity", "parity",
             lambda ws: ["check", ws["plus.pth"], ws["unitv2"], "--config", given.path(ws),
                         "--synthetic", "0", "-q"], setup=given.setup, mentions=mentions),
    ]


def names_case(name: str, given: Input, phrases: tuple[str, ...]) -> Case:
    return Case(f"input-class-names-{name}", "convert",
                lambda ws: [ws["plus.pth"], "--class-names", given.path(ws), "--info"],
                setup=given.setup, mentions=lambda ws: [given.path(ws), *phrases])


LEGACY_FORMAT = content("legacy-format.pth", saved(lambda sd: {"state_dict": sd}, zipped=False))
DUPLICATE_NAMES = content("names.txt", b"cat\ncat\ndog\n")

CASES: list[Case] = [
    *[case for entry in BAD_CHECKPOINTS for case in checkpoint_cases(*entry)],
    *[case for entry in BAD_CONFIGS for case in config_cases(*entry)],
    *[names_case(*entry) for entry in BAD_NAMES],
    # valid but unusual: a legacy (non-zip) torch pickle, duplicate class names
    Case("input-checkpoint-legacy-format-info", "convert",
         lambda ws: [LEGACY_FORMAT.path(ws), "--info"], setup=LEGACY_FORMAT.setup, exit_code=0),
    Case("input-class-names-duplicates-info", "convert",
         lambda ws: [ws["plus.pth"], "--class-names", DUPLICATE_NAMES.path(ws), "--info"],
         setup=DUPLICATE_NAMES.setup, exit_code=0),
]
