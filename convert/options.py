"""What the user asks of a conversion: `ConvertOptions`, checked when constructed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import InputError
from parity.targets import Target, target_named

STRIDE64_CHOICES = ("fold", "drop")
MAX_INPUT_SIDE = 2048


def parse_input_size(text: str) -> tuple[int, int]:
    """'320x256' -> (320, 256); both multiples of 32, at most MAX_INPUT_SIDE."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError("--input-size", f"{text!r} is not WxH, e.g. 320x256") from None
    check_input_size(width, height)
    return width, height


def check_input_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0 or width % 32 or height % 32:
        raise InputError("--input-size", f"{width}x{height}: width and height must be positive "
                         "multiples of 32")
    if max(width, height) > MAX_INPUT_SIDE:
        raise InputError("--input-size", f"{width}x{height}: width and height must be at most "
                         f"{MAX_INPUT_SIDE}")


@dataclass(frozen=True)
class ConvertOptions:
    """The `convert` command's options (see README); bad values are InputErrors naming the
    option, raised here, before any work."""

    config: str | Path | None = None
    class_names: str | Path | None = None
    legacy_head: bool = False
    output: str | Path | None = None  # default: ./<checkpoint stem>-unitv2
    input_size: tuple[int, int] | None = None  # default: the target's net size
    target: str = "unitv2"  # a name in parity.targets.TARGETS
    fp16: bool = True
    stride64: str = "fold"
    tar: bool = False
    force: bool = False
    verify: bool = True
    opset: int = 11
    frames: list[tuple[str, Any]] | None = field(default=None, compare=False)  # verify's photos

    def __post_init__(self) -> None:
        if self.input_size is None:
            object.__setattr__(self, "input_size", target_named(self.target).net_size)
        check_input_size(*self.input_size)
        if self.stride64 not in STRIDE64_CHOICES:
            raise InputError("--stride64", f"{self.stride64!r}: choose fold or drop")
        target_named(self.target)

    @property
    def firmware_target(self) -> Target:
        """The registered target the folder is made for."""
        return target_named(self.target)

    def output_folder(self, checkpoint: Path) -> str | Path:
        """-o as given, or ./<checkpoint stem>-unitv2."""
        return self.output if self.output else Path.cwd() / f"{checkpoint.stem}-unitv2"
