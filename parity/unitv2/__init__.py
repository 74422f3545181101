"""The M5Stack UnitV2's NanoDet path, re-implemented in numpy: the firmware emulation.

By job: ``geometry`` (``Letterbox``, the firmware's letterbox rule) and ``preprocess``
(bit-exact ncnn resize, pad and normalise); ``decode`` (proposals, sort, NMS,
``decode_levels``); ``arduinojson`` (the library's pool, float format and serialiser),
``detection_line`` (the JSON line the firmware prints) and ``model_json`` (the file it
reads). The device's numbers live in its target, ``parity.targets.unitv2``; these
functions take them as arguments. Source: m5stack UnitV2Framework
``main/object_recognition.cpp`` and the libraries it links (each module names its part).
"""
