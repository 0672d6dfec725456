"""The .cllm file: one self-describing file for a model's config, weights and tokenizer, which is also a training
checkpoint when it holds the AdamW moments and the trainer's state. The specification is docs/format.md.

    preamble (32 bytes) | JSON header (UTF-8) | zeros to a multiple of 64 | tensor data (each tensor 64-aligned)

Reading trusts nothing: every size, offset, shape and name is checked against the file before anything is
allocated or mapped, and any inconsistency is a ``FormatError`` naming the file, what is wrong and where. There is
no pickle and no code in the file: the header is JSON and the tensors are raw little-endian numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .config import ModelConfig
from .model import Model, parameter_layout
from .threads import get_num_threads
from .tokenizer import Tokenizer

__all__ = ["FormatError", "CllmFile", "load", "read", "save"]

MAGIC = b"CLLM\r\n\x1a\n"  # PNG-style: catches text-mode transfers that rewrite line ends or stop at ^Z
VERSION = (1, 0)  # (major, minor): a reader refuses a newer major; a newer minor only adds optional keys
ALIGN = 64
PREAMBLE = struct.Struct("<8sHHIQQ")  # magic, major, minor, header CRC-32, header bytes, data offset
MAX_HEADER_BYTES = 1 << 30
MAX_NDIM = 8
DTYPES = {"float32": np.dtype("<f4")}
OPTIMIZER_TENSORS = ("optimizer.m", "optimizer.v")


class FormatError(ValueError):
    """The file is not a valid .cllm file; the message names the file, what is wrong and where."""


@dataclasses.dataclass
class CllmFile:
    """Everything a .cllm file holds: the model (with its tokenizer and training summary), and for a checkpoint
    the optimizer state ``{"m", "v", "step", "hyperparameters"}`` and the trainer's state (JSON)."""

    path: Path
    version: tuple
    header: dict
    model: Model
    optimizer: dict | None
    trainer_state: dict | None


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _crc32_all(arrays: list[np.ndarray]) -> list[int]:
    """CRC-32 of each array's bytes, several at once (zlib releases the GIL on large buffers)."""
    crc = lambda a: zlib.crc32(memoryview(a).cast("B"))
    with ThreadPoolExecutor(max(1, min(len(arrays), get_num_threads()))) as pool:
        return list(pool.map(crc, arrays))


# --- writing ----------------------------------------------------------------------------------------------------

def save(path, model: Model, *, optimizer=None, trainer_state: dict | None = None) -> Path:
    """Write ``model`` (and, for a checkpoint, ``optimizer`` and ``trainer_state``) to ``path`` atomically."""
    path = Path(path)
    if optimizer is not None and getattr(optimizer, "model", None) is not model:
        raise ValueError("save: optimizer must be a cllm.optim.AdamW of this model")
    if trainer_state is not None and not isinstance(trainer_state, dict):
        raise TypeError(f"save: trainer_state must be a dict (got {type(trainer_state).__name__})")
    # Regions of the data section, in file order: the flat parameter buffer as it is in memory (so that loading
    # can map it whole), then the optimizer moments in the same layout.
    regions = [(0, model.params)]
    named = [(name, 4 * offset, model.state_dict()[name]) for name, (offset, _) in model.layout.items()]
    header: dict = {"model": {"architecture": "gpt2", "config": model.config.to_dict()},
                    "tokenizer": model.tokenizer.to_hf_dict() if model.tokenizer is not None else None,
                    "training": model.training_summary}
    checkpoint = {}
    cursor = _align(model.params.nbytes)
    if optimizer is not None:
        for name, array in zip(OPTIMIZER_TENSORS, (optimizer.m, optimizer.v)):
            regions.append((cursor, array))
            named.append((name, cursor, array))
            cursor = _align(cursor + array.nbytes)
        checkpoint["optimizer"] = {"type": "AdamW", "step": optimizer.step_count, "hyperparameters": {
            "lr": optimizer.lr, "betas": list(optimizer.betas), "eps": optimizer.eps,
            "weight_decay": optimizer.weight_decay, "grad_clip": optimizer.grad_clip}}
    if trainer_state is not None:
        checkpoint["trainer"] = trainer_state
    if checkpoint:
        header["checkpoint"] = checkpoint
    crcs = _crc32_all([array for _, _, array in named])
    header["tensors"] = {name: {"dtype": "float32", "shape": list(array.shape), "offset": offset,
                                "nbytes": array.nbytes, "crc32": crc}
                         for (name, offset, array), crc in zip(named, crcs)}
    header["data_nbytes"] = regions[-1][0] + regions[-1][1].nbytes
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
        for offset, array in regions:
            f.write(bytes(offset - position))
            f.write(memoryview(np.ascontiguousarray(array, dtype="<f4")).cast("B"))
            position = offset + array.nbytes
    return path


# --- reading ----------------------------------------------------------------------------------------------------

def load(path, mmap: bool = True, verify: bool | None = None) -> Model:
    """The model in a .cllm file, with ``.tokenizer`` and ``.training_summary``.

    ``mmap=True`` maps the weights copy-on-write: nothing is read until used, and changes stay in memory.
    ``verify`` (default: ``not mmap``) checks every tensor's CRC-32, which reads the whole file. The structure is
    always checked. Raises FormatError for anything that is not a valid .cllm file."""
    return read(path, mmap=mmap, verify=verify).model


def read(path, *, mmap: bool = True, verify: bool | None = None) -> CllmFile:
    """Everything in a .cllm file (see ``load`` for ``mmap`` and ``verify``)."""
    path = Path(path)
    verify = (not mmap) if verify is None else bool(verify)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header, version, data_offset = _read_header(f, size, path)
        data_nbytes = size - data_offset
        check = _Checker(path)
        tensors = check.tensor_table(header, data_nbytes)
        config = check.model_config(header, data_nbytes, len(tensors))
        layout, n_flat = parameter_layout(config)
        check.parameters(tensors, layout)
        optimizer = check.optimizer(header, tensors, n_flat)
        trainer_state = check.optional_dict(header.get("checkpoint") or {}, "trainer", "header.checkpoint")
        training = check.optional_dict(header, "training", "header") or {}
        tokenizer = check.tokenizer(header, config)

        base = tensors[next(iter(layout))]["offset"]
        contiguous = all(tensors[name]["offset"] == base + 4 * offset for name, (offset, _) in layout.items()) \
            and base + 4 * n_flat <= data_nbytes
        if mmap:
            mapped = np.memmap(path, dtype=np.uint8, mode="c", offset=data_offset, shape=(data_nbytes,))
            raw = lambda t: mapped[t["offset"]:t["offset"] + t["nbytes"]]
        else:
            raw = lambda t: _read_exactly(f, data_offset + t["offset"], t["nbytes"], path)
        if mmap and contiguous:  # zero-copy: the whole parameter buffer is one mapped region
            params = mapped[base:base + 4 * n_flat].view(np.float32)
        elif contiguous:
            params = np.empty(n_flat, dtype=np.float32)
            _readinto(f, data_offset + base, params, path)
        else:  # another writer's layout: gather tensor by tensor
            params = np.zeros(n_flat, dtype=np.float32)
            for name, (offset, shape) in layout.items():
                params[offset:offset + math.prod(shape)] = raw(tensors[name]).view("<f4")
        in_memory = {name: params[offset:offset + math.prod(shape)] for name, (offset, shape) in layout.items()}
        if optimizer is not None:
            for key, name in zip(("m", "v"), OPTIMIZER_TENSORS):
                optimizer[key] = in_memory[name] = np.array(raw(tensors[name]).view("<f4"), dtype=np.float32)
        if verify:
            check.checksums(tensors, lambda name: in_memory[name] if name in in_memory else raw(tensors[name]))

    model = Model(config, params=params)
    model.tokenizer = tokenizer
    model.training_summary = training
    return CllmFile(path, version, header, model, optimizer, trainer_state)


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


class _Checker:
    """Validation of a parsed header; every method raises FormatError naming the file and the key."""

    def __init__(self, path: Path):
        self.path = path

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

    def tensor_table(self, header: dict, data_nbytes: int) -> dict:
        """name -> {dtype, shape, offset, nbytes, crc32}, each inside the data section, none overlapping."""
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

    def model_config(self, header: dict, data_nbytes: int, n_tensors: int) -> ModelConfig:
        model = self.get(header, "model", dict, "header")
        architecture = self.get(model, "architecture", str, "header.model")
        if architecture != "gpt2":
            self.fail(f"header.model.architecture {architecture!r} is not 'gpt2'")
        fields = self.get(model, "config", dict, "header.model")
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        try:
            config = ModelConfig(**{k: v for k, v in fields.items() if k in known})
        except (TypeError, ValueError) as e:
            self.fail(f"header.model.config: {e}")
        # The parameter count is a formula: check it against the file before building a layout of that size.
        if 4 * config.n_params > data_nbytes or 12 * config.n_layers + 4 > n_tensors:
            self.fail(f"header.model.config {config.to_dict()} needs {config.n_params} parameters in "
                      f"{12 * config.n_layers + 4} tensors; the file has {data_nbytes} bytes in {n_tensors}")
        return config

    def parameters(self, tensors: dict, layout: dict) -> None:
        for name, (_, shape) in layout.items():
            if name not in tensors:
                self.fail(f"header.tensors has no {name!r}, which the model config needs")
            t = tensors[name]
            if t["dtype"] != "float32" or tuple(t["shape"]) != shape:
                self.fail(f"header.tensors[{name!r}] must be float32 {list(shape)} (got {t['dtype']} {t['shape']})")

    def optimizer(self, header: dict, tensors: dict, n_flat: int):
        checkpoint = self.optional_dict(header, "checkpoint", "header") or {}
        state = self.optional_dict(checkpoint, "optimizer", "header.checkpoint")
        if state is None:
            return None
        where = "header.checkpoint.optimizer"
        if self.get(state, "type", str, where) != "AdamW":
            self.fail(f"{where}.type must be 'AdamW' (got {state['type']!r})")
        step = self.integer(state, "step", where)
        hyper = self.get(state, "hyperparameters", dict, where)
        for name in OPTIMIZER_TENSORS:
            t = tensors.get(name)
            if t is None or t["dtype"] != "float32" or t["shape"] != [n_flat]:
                self.fail(f"header.tensors[{name!r}] must be float32 [{n_flat}] in a checkpoint with an optimizer "
                          f"(got {t and (t['dtype'], t['shape'])})")
        return {"step": step, "hyperparameters": hyper}

    def tokenizer(self, header: dict, config: ModelConfig):
        doc = self.optional_dict(header, "tokenizer", "header")
        if doc is None:
            return None
        try:
            tokenizer = Tokenizer.from_hf_dict(doc, "the header's tokenizer")
        except Exception as e:  # noqa: BLE001 (untrusted input: any failure of the parser means a bad file)
            self.fail(f"header.tokenizer: {e}")
        if tokenizer.vocab_size > config.vocab_size:
            self.fail(f"header.tokenizer has {tokenizer.vocab_size} tokens, more than the model's vocab_size "
                      f"{config.vocab_size}")
        return tokenizer

    def checksums(self, tensors: dict, tensor_bytes) -> None:
        names = list(tensors)
        computed = _crc32_all([tensor_bytes(name) for name in names])
        bad = [name for name, crc in zip(names, computed) if crc != tensors[name]["crc32"]]
        if bad:
            self.fail(f"checksum mismatch in {len(bad)} tensor(s): {', '.join(bad[:5])}"
                      f"{' ...' if len(bad) > 5 else ''}: the data is corrupt")


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
