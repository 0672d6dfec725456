"""Reading one .safetensors file without trusting it: the header is checked (dtypes, shapes, and offsets that
tile the data region) before any tensor is touched, and the tensors are memory-mapped. float32, float64,
float16 and bfloat16 are read (numpy has no bfloat16, which is why this is not safetensors.numpy.load_file);
nothing is ever unpickled."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["read_safetensors"]

_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "BF16": np.uint16}
MAX_HEADER = 100 << 20  # the format's own limit


def read_safetensors(path) -> dict[str, np.ndarray]:
    """name -> array of every tensor in ``path`` (mapped, as stored; bfloat16 widened to float32). Raises
    ValueError naming the file and what is wrong."""
    path = Path(path)
    fail = lambda what: ValueError(f"{path}: not a safetensors file cllm can read: {what}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise fail("shorter than its 8-byte header length")
        n = int.from_bytes(prefix, "little")
        if n > min(MAX_HEADER, size - 8):
            raise fail(f"a header of {n} bytes in a file of {size}")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise fail(f"the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise fail("the header is not a JSON object")
    header.pop("__metadata__", None)
    start, data_bytes = 8 + n, size - 8 - n
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(data_bytes,)) if data_bytes else None
    spans, tensors = [], {}
    for name, t in header.items():
        try:
            dtype, shape, (begin, end) = t["dtype"], [int(d) for d in t["shape"]], t["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise fail(f"tensor {name!r}: needs dtype, shape and data_offsets") from None
        if dtype not in _DTYPES:
            raise fail(f"tensor {name!r} is {dtype}; cllm reads {sorted(_DTYPES)}")
        itemsize = np.dtype(_DTYPES[dtype]).itemsize
        if (not all(isinstance(x, int) for x in (begin, end)) or min(shape, default=0) < 0
                or not 0 <= begin <= end <= data_bytes or end - begin != math.prod(shape) * itemsize):
            raise fail(f"tensor {name!r}: data_offsets {[begin, end]} do not hold {dtype} {shape} in "
                       f"{data_bytes} data bytes")
        spans.append((begin, end))
        raw = (data[begin:end] if end > begin else np.zeros(0, np.uint8)).view(_DTYPES[dtype]).reshape(shape)
        tensors[name] = (raw.astype(np.uint32) << 16).view(np.float32) if dtype == "BF16" else raw
    spans.sort()
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        raise fail("two tensors' data overlap")
    return tensors
