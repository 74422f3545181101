"""The converter: checkpoint -> ONNX -> NCNN model folder for the UnitV2 (top layer).

`convert_checkpoint(...)` is the Python API of the `convert` command.
"""

from convert.pipeline import ConvertResult, convert_checkpoint

__all__ = ["ConvertResult", "convert_checkpoint"]
