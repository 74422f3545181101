"""The .bin layout of a linted param: what each layer reads, and whether it is there.

``ModelBin::load`` reads a layer's weights in order; a read model per layer type
lists them (name, element count, tagged or raw fp32) from the layer's params.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

from convert.lint_findings import CheckedLayer, FindingCollector
from parity.ncnn_tables import NcnnTables

# ModelBin::load(w, type=0) tags (first 4 bytes, little endian)
TAG_FP16 = 0x01306B47  # fp16 data, padded to 4 bytes
TAG_INT8 = 0x000D4B38  # int8 data, padded to 4 bytes
TAG_FP32_RAW = 0x0002C056  # fp32 data ("raw data with extra scaling")
QUANT_TABLE_BYTES = 256 * 4  # any other non-zero tag: 256-float table + uint8 indices

# Layer types that read the .bin in some ncnn but whose layout this linter does not
# model at all: the .bin walk stops at them.
WEIGHT_READERS_WITHOUT_MODEL = frozenset([
    "Convolution1D", "ConvolutionDepthWise1D", "Convolution3D", "ConvolutionDepthWise3D",
    "Deconvolution1D", "DeconvolutionDepthWise1D", "Deconvolution3D",
    "DeconvolutionDepthWise3D", "DeformableConv2D", "Gemm", "MultiHeadAttention", "Quantize",
    "RMSNorm",
])

# A read is (what, element_count, type): type 0 = tagged weight blob, 1 = raw fp32.
Read = tuple[str, int, int]
Supports = Callable[[str], bool]  # does every table of the target have this capability?
ReadModel = Callable[[CheckedLayer, Supports], list[Read]]


def _conv_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    if supports("dynamic_weights") and layer.scalar(19, 0):  # weights come from a blob
        return []
    num_output = layer.scalar(0, 0)
    reads: list[Read] = [("weight_data", layer.scalar(6, 0), 0)]
    if layer.scalar(5, 0):
        reads.append(("bias_data", num_output, 1))
    int8 = layer.scalar(8, 0)
    if int8:
        reads += [("weight_data_int8_scales", num_output, 1), ("bottom_blob_int8_scale", 1, 1)]
        if supports("int8_scale_variants") and int8 > 100:
            reads.append(("top_blob_int8_scale", 1, 1))
    return reads


def _convdw_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    if supports("dynamic_weights") and layer.scalar(19, 0):
        return []
    reads: list[Read] = [("weight_data", layer.scalar(6, 0), 0)]
    if layer.scalar(5, 0):
        reads.append(("bias_data", layer.scalar(0, 0), 1))
    int8 = layer.scalar(8, 0)
    variants = supports("int8_scale_variants")
    if int8 in ((1, 101) if variants else (1,)):
        reads += [("weight_data_int8_scales", layer.scalar(7, 1), 1),
                  ("bottom_blob_int8_scales", 1, 1)]
    elif int8 in ((2, 102) if variants else (2,)):
        reads += [("weight_data_int8_scales", 1, 1), ("bottom_blob_int8_scales", 1, 1)]
    if variants and int8 > 100:
        reads.append(("top_blob_int8_scales", 1, 1))
    return reads


def _deconv_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    if supports("dynamic_weights") and layer.scalar(28, 0):
        return []
    reads: list[Read] = [("weight_data", layer.scalar(6, 0), 0)]
    if layer.scalar(5, 0):
        reads.append(("bias_data", layer.scalar(0, 0), 1))
    return reads


def _innerproduct_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    num_output = layer.scalar(0, 0)
    reads: list[Read] = [("weight_data", layer.scalar(2, 0), 0)]
    if layer.scalar(1, 0):
        reads.append(("bias_data", num_output, 1))
    if layer.scalar(8, 0):
        reads += [("weight_data_int8_scales", num_output, 1), ("bottom_blob_int8_scale", 1, 1)]
    return reads


def _batchnorm_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    c = layer.scalar(0, 0)
    return [(name, c, 1) for name in ("slope_data", "mean_data", "var_data", "bias_data")]


def _scale_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    size = layer.scalar(0, 0)
    if size == -233:  # scale comes from a second blob
        return []
    reads: list[Read] = [("scale_data", size, 1)]
    if layer.scalar(1, 0):
        reads.append(("bias_data", size, 1))
    return reads


def _memorydata_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    w, h, c = layer.scalar(0, 0), layer.scalar(1, 0), layer.scalar(2, 0)
    d = layer.scalar(11, 0) if supports("four_d_blobs") else 0
    load_type = layer.scalar(21, 1) if supports("memorydata_load_type") else 1
    if d:
        return [("data", w * h * d * c, load_type)]
    if c:
        return [("data", w * h * c, load_type)]
    if h:
        return [("data", w * h, load_type)]
    if w:
        return [("data", w, load_type)]
    return []


def _embed_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    reads: list[Read] = [("weight_data", layer.scalar(3, 0), 0)]
    if layer.scalar(2, 0):
        reads.append(("bias_data", layer.scalar(0, 0), 1))
    if supports("embed_int8") and layer.scalar(18, 0):
        reads.append(("weight_data_int8_scale", 1, 1))
    return reads


def _layernorm_reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
    if supports("layernorm_affine_flag") and not layer.scalar(2, 1):
        return []
    c = layer.scalar(0, 0)
    return [("gamma_data", c, 1), ("beta_data", c, 1)]


def _affine_norm_reads(channels_id: int, affine_id: int) -> ReadModel:
    def reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
        if not layer.scalar(affine_id, 1):
            return []
        c = layer.scalar(channels_id, 0)
        return [("gamma_data", c, 1), ("beta_data", c, 1)]
    return reads


def _single_raw(what: str, size_id: int, flag_id: int | None = None) -> ReadModel:
    def reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
        if flag_id is not None and not layer.scalar(flag_id, 0):
            return []
        return [(what, layer.scalar(size_id, 0), 1)]
    return reads


def _recurrent_reads(gates: int, bias_rows: int) -> ReadModel:
    def reads(layer: CheckedLayer, supports: Supports) -> list[Read]:
        num_output = layer.scalar(0, 0)
        wds = layer.scalar(1, 0)
        nd = 2 if layer.scalar(2, 0) == 2 else 1
        if num_output == 0:
            raise _ModelError("0=num_output is 0: load_model divides weight_data_size by it "
                              "(division by zero)")
        size = int(wds / nd / num_output / gates)  # C integer division, truncating
        return [("weight_xc_data", size * num_output * gates * nd, 0),
                ("bias_c_data", num_output * bias_rows * nd, 0),
                ("weight_hc_data", num_output * num_output * gates * nd, 0)]
    return reads


class _ModelError(Exception):
    pass


WEIGHT_MODELS: dict[str, ReadModel] = {
    "Convolution": _conv_reads,
    "ConvolutionDepthWise": _convdw_reads,
    "Deconvolution": _deconv_reads,
    "DeconvolutionDepthWise": _deconv_reads,
    "InnerProduct": _innerproduct_reads,
    "BatchNorm": _batchnorm_reads,
    "Bias": _single_raw("bias_data", 0),
    "Scale": _scale_reads,
    "PReLU": _single_raw("slope_data", 0),
    "MemoryData": _memorydata_reads,
    "Embed": _embed_reads,
    "LayerNorm": _layernorm_reads,
    "GroupNorm": _affine_norm_reads(1, 3),
    "InstanceNorm": _affine_norm_reads(0, 2),
    "Normalize": _single_raw("scale_data", 3),
    "Padding": _single_raw("per_channel_pad_data", 6, flag_id=6),
    "Dequantize": _single_raw("bias_data", 2, flag_id=1),
    "Requantize": _single_raw("bias_data", 3, flag_id=2),
    "RNN": _recurrent_reads(1, 1),
    "LSTM": _recurrent_reads(4, 4),
    "GRU": _recurrent_reads(3, 4),
}


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def check_bin_layout(layers: list[CheckedLayer], data: bytes, tables: Sequence[NcnnTables],
              target: str, out: FindingCollector) -> None:
    def supports(capability: str) -> bool:
        return all(t.supports(capability) for t in tables)

    unmodelled_layouts = frozenset().union(*(t.unmodelled_weight_layouts for t in tables))
    size = len(data)
    offset = 0
    last_reader: CheckedLayer | None = None
    for layer in layers:
        model = WEIGHT_MODELS.get(layer.type)
        unmodelled = layer.type in unmodelled_layouts or (
            model is None and layer.type in WEIGHT_READERS_WITHOUT_MODEL)
        if unmodelled:
            out.warning(layer.line, layer, f"{layer.type} reads weights from the .bin but its "
                        f"layout is not modelled for {target}: .bin size not checked from "
                        f"here on (offset {offset})")
            return
        if model is None:
            continue
        if not layer.params_ok:
            out.warning(layer.line, layer, "params did not parse, so the .bin size is not "
                        f"checked from here on (offset {offset})")
            return
        try:
            reads = model(layer, supports)
        except _ModelError as exc:
            out.error(layer.line, layer, f"{exc}; .bin not checked further")
            return
        for what, count, load_type in reads:
            if count <= 0:
                out.error(layer.line, layer, f"{what} has {count} elements: ModelBin::load "
                          "returns an empty Mat and load_model fails; .bin not checked further")
                return
            start = offset
            if load_type == 0:
                if size - offset < 4:
                    out.error(layer.line, layer, _short_msg(what, "its 4-byte type tag", 4,
                                                            offset, size))
                    return
                (tag,) = struct.unpack_from("<I", data, offset)
                offset += 4
                if tag == 0 or tag == TAG_FP32_RAW:
                    need, desc = count * 4, f"{count} fp32"
                elif tag == TAG_FP16:
                    need, desc = _align4(count * 2), f"{count} fp16 (padded to 4 bytes)"
                elif tag == TAG_INT8:
                    need, desc = _align4(count), f"{count} int8 (padded to 4 bytes)"
                else:
                    need = QUANT_TABLE_BYTES + _align4(count)
                    desc = f"a 256-float table + {count} uint8 indices"
                    out.warning(layer.line, layer, f"{what} has type tag 0x{tag:08X} at .bin "
                                f"offset {start}, not 0 / fp16 0x{TAG_FP16:08X} / int8 "
                                f"0x{TAG_INT8:08X} / fp32 0x{TAG_FP32_RAW:08X}; ncnn reads it "
                                "as 8-bit table-quantized data (often means param and bin are "
                                "out of step)")
            else:
                need, desc = count * 4, f"{count} fp32"
            if size - offset < need:
                out.error(layer.line, layer, _short_msg(what, desc, need, offset, size))
                return
            offset += need
            last_reader = layer
    if offset < size:
        if last_reader is not None:
            out.warning(last_reader.line, last_reader, f".bin has {size - offset} bytes more "
                        f"than the param reads ({offset} of {size}, this is the last layer "
                        "that reads weights): ncnn ignores them, but param and bin may not "
                        "belong together")
        else:
            out.warning(0, None, f".bin has {size} bytes but no layer reads weights")


def _short_msg(what: str, desc: str, need: int, offset: int, size: int) -> str:
    return (f".bin too short: {what} needs {need} bytes ({desc}) at offset {offset} but only "
            f"{max(size - offset, 0)} remain (.bin is {size} bytes); load_model fails at this "
            "layer and pipeline creation can segfault: the recognition process crashes on the "
            "device")
