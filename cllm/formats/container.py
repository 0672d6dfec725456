"""The .cllm container: a JSON header and named, 64-byte-aligned little-endian tensors, which knows nothing of models.
What the header and tensors mean (a model's config, weights and tokenizer; a checkpoint's optimizer and trainer
state) is ``cllm.model.checkpoint``'s business. The specification is docs/format.md.

    preamble (32 bytes) | JSON header (UTF-8) | zeros to a multiple of 64 | tensor data (each tensor 64-aligned)

Reading trusts nothing: every size, offset, shape and name is checked against the file before anything is
allocated or mapped, and any inconsistency is a ``FormatError`` naming the file, what is wrong and where. There is
no pickle and no code in the file: the header is JSON and the tensors are raw little-endian numbers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..runtime.atomic import atomic_write
from ..runtime.threads import get_num_threads

__all__ = ["ALIGN", "Container", "FormatError", "MAGIC", "PREAMBLE", "VERSION", "open_container", "write"]

MAGIC = b"CLLM\r\n\x1a\n"  # PNG-style: catches text-mode transfers that rewrite line ends or stop at ^Z
VERSION = (1, 0)  # (major, minor): a reader refuses a newer major; a newer minor only adds optional keys
ALIGN = 64
PREAMBLE = struct.Struct("<8sHHIQQ")  # magic, major, minor, header CRC-32, header bytes, data offset
MAX_HEADER_BYTES = 1 << 30
MAX_NDIM = 8
DTYPES = {"float32": np.dtype("<f4")}


class FormatError(ValueError):
    """The file is not a valid .cllm file; the message names the file, what is wrong and where."""


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _crc32_all(arrays: list[np.ndarray]) -> list[int]:
    """CRC-32 of each array's bytes, several at once (zlib releases the GIL on large buffers)."""
    crc = lambda a: zlib.crc32(memoryview(a).cast("B"))
    with ThreadPoolExecutor(max(1, min(len(arrays), get_num_threads()))) as pool:
        return list(pool.map(crc, arrays))


# --- writing ----------------------------------------------------------------------------------------------------

def write(path, header: dict, regions: list[tuple[np.ndarray, dict[str, tuple[int, tuple]]]]) -> Path:
    """Write a container to ``path`` atomically: the JSON-able ``header`` (to which the tensor table and data size are
    added) and the ``regions``, each a flat float32 buffer with the tensors it holds, {name: (element offset,
    shape)}. The regions follow one another in the data section, each starting on a multiple of ALIGN, written as
    they are in memory (so that reading can map a region whole); every tensor gets a CRC-32."""
    path = Path(path)
    placed, named, cursor = [], [], 0
    for flat, tensors in regions:
        placed.append((cursor, flat))
        for name, (offset, shape) in tensors.items():
            named.append((name, cursor + 4 * offset, flat[offset:offset + math.prod(shape)].reshape(shape)))
        cursor = _align(cursor + flat.nbytes)
    header = dict(header)
    crcs = _crc32_all([array for _, _, array in named])
    header["tensors"] = {name: {"dtype": "float32", "shape": list(array.shape), "offset": offset,
                                "nbytes": array.nbytes, "crc32": crc}
                         for (name, offset, array), crc in zip(named, crcs)}
    header["data_nbytes"] = placed[-1][0] + placed[-1][1].nbytes if placed else 0
    try:
        text = json.dumps(header, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise TypeError(f"save: trainer_state and the training summary must be JSON-serialisable: {e}") from None
    head = text.encode("utf-8")
    data_offset = _align(PREAMBLE.size + len(head))
    with atomic_write(path) as f:
        f.write(PREAMBLE.pack(MAGIC, *VERSION, zlib.crc32(head), len(head), data_offset))
        f.write(head)
        f.write(bytes(data_offset - PREAMBLE.size - len(head)))
        position = 0
        for offset, array in placed:
            f.write(bytes(offset - position))
            f.write(memoryview(np.ascontiguousarray(array, dtype="<f4")).cast("B"))
            position = offset + array.nbytes
    return path


# --- reading ----------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def open_container(path, *, mmap: bool = True):
    """``with open_container(path) as c:`` the container's header and tensor table, checked against the file (a
    FormatError for anything that is not a valid container); the tensors are read (or, with ``mmap``, mapped
    copy-on-write: nothing is read until used) through ``c``'s methods while the block lasts."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header, version, data_offset = _read_header(f, size, path)
        container = Container(path, version, header, f, data_offset, size - data_offset, mmap)
        container.tensors = container.tensor_table()
        yield container


class Container:
    """An open container: ``header`` (parsed JSON), ``tensors`` (the checked table), and readers of the data. Every
    check method raises FormatError naming the file and the key."""

    def __init__(self, path: Path, version: tuple, header: dict, file, data_offset: int, data_nbytes: int,
                 mmap: bool):
        self.path, self.version, self.header = path, version, header
        self._file, self._data_offset, self.data_nbytes = file, data_offset, data_nbytes
        self._mapped = np.memmap(path, dtype=np.uint8, mode="c", offset=data_offset, shape=(data_nbytes,)) \
            if mmap and data_nbytes else None
        self.tensors: dict = {}

    # --- the data ----------------------------------------------------------------------------------------------

    def raw(self, name: str) -> np.ndarray:
        """The bytes of tensor ``name``: mapped, or read from the file."""
        t = self.tensors[name]
        if self._mapped is not None:
            return self._mapped[t["offset"]:t["offset"] + t["nbytes"]]
        return _read_exactly(self._file, self._data_offset + t["offset"], t["nbytes"], self.path)

    def array(self, name: str) -> np.ndarray:
        """A float32 copy of tensor ``name``, flat."""
        return np.array(self.raw(name).view("<f4"), dtype=np.float32)

    def flat(self, layout: dict[str, tuple[int, tuple]], size: int) -> np.ndarray:
        """A flat float32 buffer of ``size`` elements holding the tensors of ``layout`` ({name: (element offset,
        shape)}, in buffer order) at their offsets: zero-copy when they lie in the file exactly so and the
        container is mapped, else read in one piece, else gathered tensor by tensor (another writer's layout)."""
        base = self.tensors[next(iter(layout))]["offset"]
        contiguous = all(self.tensors[name]["offset"] == base + 4 * offset for name, (offset, _) in layout.items()) \
            and base + 4 * size <= self.data_nbytes
        if contiguous and self._mapped is not None:
            return self._mapped[base:base + 4 * size].view(np.float32)
        if contiguous:
            flat = np.empty(size, dtype=np.float32)
            _readinto(self._file, self._data_offset + base, flat, self.path)
            return flat
        flat = np.zeros(size, dtype=np.float32)
        for name, (offset, shape) in layout.items():
            flat[offset:offset + math.prod(shape)] = self.raw(name).view("<f4")
        return flat

    def verify(self, in_memory: dict[str, np.ndarray]) -> None:
        """Check every tensor's CRC-32, against ``in_memory[name]`` where given (the bytes already read), else
        against the file."""
        names = list(self.tensors)
        computed = _crc32_all([in_memory[name] if name in in_memory else self.raw(name) for name in names])
        bad = [name for name, crc in zip(names, computed) if crc != self.tensors[name]["crc32"]]
        if bad:
            self.fail(f"checksum mismatch in {len(bad)} tensor(s): {', '.join(bad[:5])}"
                      f"{' ...' if len(bad) > 5 else ''}: the data is corrupt")

    # --- checks --------------------------------------------------------------------------------------------------

    def fail(self, message: str):
        raise FormatError(f"{self.path}: {message}")

    def get(self, obj: dict, key: str, types, where: str):
        if key not in obj:
            self.fail(f"{where} has no {key!r}")
        value = obj[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            self.fail(f"{where}.{key} must be {_type_names(types)} (got {type(value).__name__})")
        return value

    def integer(self, obj: dict, key: str, where: str, low: int = 0, high: float = math.inf) -> int:
        value = self.get(obj, key, int, where)
        if not low <= value <= high:
            self.fail(f"{where}.{key} = {value} is outside [{low}, {high}]")
        return value

    def optional_dict(self, obj: dict, key: str, where: str):
        value = obj.get(key)
        if value is not None and not isinstance(value, dict):
            self.fail(f"{where}.{key} must be an object or null (got {type(value).__name__})")
        return value

    def tensor_table(self) -> dict:
        """name -> {dtype, shape, offset, nbytes, crc32}, each inside the data section, none overlapping."""
        header, data_nbytes = self.header, self.data_nbytes
        declared = self.integer(header, "data_nbytes", "header")
        if declared != data_nbytes:
            self.fail(f"truncated or extended: the header declares {declared} bytes of tensor data, the file holds "
                      f"{data_nbytes}")
        table = self.get(header, "tensors", dict, "header")
        for name, t in table.items():
            where = f"header.tensors[{name!r}]"
            if not isinstance(t, dict):
                self.fail(f"{where} must be an object (got {type(t).__name__})")
            dtype = self.get(t, "dtype", str, where)
            if dtype not in DTYPES:
                self.fail(f"{where}.dtype {dtype!r} is not one of {sorted(DTYPES)}")
            shape = self.get(t, "shape", list, where)
            if len(shape) > MAX_NDIM or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape):
                self.fail(f"{where}.shape must be a list of at most {MAX_NDIM} integers >= 0 (got {shape!r:.80})")
            nbytes = self.integer(t, "nbytes", where)
            if nbytes != math.prod(shape) * DTYPES[dtype].itemsize:
                self.fail(f"{where}: nbytes {nbytes} disagrees with shape {shape} of {dtype}")
            offset = self.integer(t, "offset", where)
            if offset % ALIGN:
                self.fail(f"{where}.offset {offset} is not a multiple of {ALIGN}")
            if offset + nbytes > data_nbytes:
                self.fail(f"{where} (bytes {offset}..{offset + nbytes} of the data) lies outside the "
                          f"{data_nbytes} bytes of data: the file is truncated or corrupt")
            self.integer(t, "crc32", where, 0, 0xFFFFFFFF)
        spans = sorted((t["offset"], t["offset"] + t["nbytes"], name) for name, t in table.items() if t["nbytes"])
        for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
            if start < end:
                self.fail(f"header.tensors: {first!r} and {second!r} overlap")
        return table

def _read_header(f, size: int, path: Path) -> tuple[dict, tuple, int]:
    """The parsed JSON header, the version and the data offset, after checking the preamble against the file."""
    preamble = f.read(PREAMBLE.size)
    if len(preamble) < PREAMBLE.size:
        raise FormatError(f"{path}: truncated: {size} bytes, shorter than the {PREAMBLE.size}-byte preamble")
    magic, major, minor, crc, head_nbytes, data_offset = PREAMBLE.unpack(preamble)
    if magic != MAGIC:
        raise FormatError(f"{path}: not a .cllm file (it starts with {magic!r}; a .cllm file starts with {MAGIC!r})")
    if major != VERSION[0]:
        newer = "newer than" if major > VERSION[0] else "older than"
        raise FormatError(f"{path}: format version {major}.{minor} is {newer} the version this cllm reads "
                          f"({VERSION[0]}.{VERSION[1]}); use a cllm that reads {major}.x")
    if head_nbytes > min(size - PREAMBLE.size, MAX_HEADER_BYTES):
        raise FormatError(f"{path}: truncated or corrupt: the header says it is {head_nbytes} bytes but the file has "
                          f"{size - PREAMBLE.size} after the preamble")
    if data_offset != _align(PREAMBLE.size + head_nbytes) or data_offset > size:
        raise FormatError(f"{path}: corrupt preamble: data offset {data_offset} (expected "
                          f"{_align(PREAMBLE.size + head_nbytes)}, within the file's {size} bytes)")
    head = f.read(head_nbytes)
    padding = f.read(data_offset - PREAMBLE.size - head_nbytes)
    if zlib.crc32(head) != crc:
        raise FormatError(f"{path}: header checksum mismatch (stored {crc:#010x}, computed {zlib.crc32(head):#010x}): "
                          f"the header at bytes {PREAMBLE.size}..{PREAMBLE.size + head_nbytes} is corrupt")
    if padding.strip(b"\0"):
        raise FormatError(f"{path}: corrupt: the padding after the header (bytes {PREAMBLE.size + head_nbytes}.."
                          f"{data_offset}) must be zeros")
    try:
        header = json.loads(head.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise FormatError(f"{path}: header is not UTF-8 (byte {PREAMBLE.size + e.start} of the file)") from None
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: header is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise FormatError(f"{path}: header JSON is nested too deeply") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: header must be a JSON object (got {type(header).__name__})")
    return header, (major, minor), data_offset


def _readinto(f, position: int, array: np.ndarray, path: Path) -> None:
    f.seek(position)
    view = memoryview(array).cast("B")
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            raise FormatError(f"{path}: truncated while reading tensor data at byte {position + got}")
        got += n


def _read_exactly(f, position: int, nbytes: int, path: Path) -> np.ndarray:
    out = np.empty(nbytes, dtype=np.uint8)
    _readinto(f, position, out, path)
    return out


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number"}
    return " or ".join(names.get(t, t.__name__) for t in _tuple(types))
