"""The whole-model decode step as one kernel call (csrc/kernels/decode.c), over a table of the model's weights.

The table uses the C struct's fields (csrc/cllm.h ``cllm_gpt_layer``), not the model's state-dict names: the model
builds it (cllm/model/decoder.py) and the backend checks it once, here.
"""

from __future__ import annotations

import numpy as np

from .._core import _kernels
from ..runtime.checks import is_integer
from ..runtime.threads import resolve_num_threads
from .arrays import check
from .attention import check_cache
from .linear import PANEL, PackedLinear

__all__ = ["DECODE_LAYER", "GptDecodeStep"]

# A layer of the decode table, in the order of csrc/cllm.h's cllm_gpt_layer: field -> what it holds
# (C = d_model, H = MLP width; a PackedLinear holds the packed weight and the bias of an [out, in] layer).
DECODE_LAYER = {"ln1": "(weight [C], bias [C]) of the attention's LayerNorm",
                "attn": "PackedLinear [3C, C]: q, k, v",
                "attn_proj": "PackedLinear [C, C]: the attention's output projection",
                "ln2": "(weight [C], bias [C]) of the MLP's LayerNorm",
                "fc": "PackedLinear [H, C]: the MLP's input, followed by GELU",
                "fc_proj": "PackedLinear [C, H]: the MLP's output projection",
                "cache": "(kcache [S, NH, hs, Tk], vcache [S, NH, Tk, hs]) from kv_cache"}


class GptDecodeStep:
    """One decode step of a whole GPT as one kernel call: per row, the next token of a sequence whose keys and
    values are cached, through every layer to the logits, with the bits the training forward gives that position.
    Everything but the step's tokens is checked once, here; the arrays are used in place (not copied).

    wte [V, C], wpe [Tctx, C], ln_f: (weight, bias) [C], head: PackedLinear [V, C] (the tied output head);
    layers: one dict per layer with the fields of DECODE_LAYER. max_rows: the most rows a step takes. Not for
    concurrent use (one scratch).
    """

    def __init__(self, *, wte, wpe, ln_f, head: PackedLinear, layers, max_rows: int):
        fn = "GptDecodeStep"
        check(fn, "wte", wte, (None, None))
        V, C = wte.shape
        check(fn, "wpe", wpe, (None, C))
        check(fn, "head", head.packed, (-(-V // PANEL), C, PANEL))
        if not layers:
            raise ValueError(f"{fn}: layers must hold at least one layer")
        S, NH, hs, Tk = check_cache(fn, *layers[0]["cache"])
        H = check(fn, "layers[0] fc bias", layers[0]["fc"].bias, (None,)).shape[0]
        if NH * hs != C:
            raise ValueError(f"{fn}: the caches' NH·hs must be C = {C} (got {NH}·{hs})")
        for name, a in (("ln_f weight", ln_f[0]), ("ln_f bias", ln_f[1])):
            check(fn, name, a, (C,))
        for i, layer in enumerate(layers):
            _check_layer(fn, i, layer, C, H, (S, NH, hs, Tk))
        if not is_integer(max_rows) or max_rows < 1:
            raise ValueError(f"{fn}: max_rows must be an integer >= 1 (got {max_rows!r})")
        self.vocab_size, self.slots, self.positions, self.max_rows = V, S, min(Tk, wpe.shape[0]), int(max_rows)
        self._arrays = (wte, wpe, ln_f, head, layers)  # kept alive: the core holds their addresses
        # scratch floats for M rows on nt threads: csrc/cllm.h CLLM_GPT_DECODE_SCRATCH
        self._scratch_floats = lambda M, nt: M * (5 * C + H) + nt * (M * (2 * C + 2) + 64 + hs)
        self._scratch_threads = 0
        self._logits = np.empty((self.max_rows, V), np.float32)
        sizes = {"V": V, "C": C, "H": H, "NH": NH, "S": S, "Tk": Tk, "Tctx": wpe.shape[0]}
        weights = {"wte": wte, "wpe": wpe, "ln_f": ln_f, "head": head.packed}
        self._core = _kernels.GptDecodeStep(sizes, weights, list(layers), self.max_rows, self._logits)

    def __call__(self, ids, slot, pos, *, num_threads=None) -> np.ndarray:
        """ids, slot, pos: M integers each (M <= max_rows): token ids in [0, V), distinct cache slots in [0, S),
        positions in [0, min(Tk, Tctx)). Returns the logits [M, V]: a view, overwritten by the next call.
        The checks are plain Python on the few integers: a decode step's overhead is what a waiting thread must
        spin across, and an array check per argument would take longer than the arithmetic of a small step."""
        fn = "GptDecodeStep"
        ids, slot, pos = list(ids), list(slot), list(pos)
        M = len(ids)
        if not 1 <= M <= self.max_rows or len(slot) != M or len(pos) != M:
            raise ValueError(f"{fn}: ids, slot and pos must hold the same number of rows, 1 to {self.max_rows} "
                             f"(got {M}, {len(slot)}, {len(pos)})")
        for name, values, high in (("ids", ids, self.vocab_size), ("slot", slot, self.slots),
                                   ("pos", pos, self.positions)):
            for v in values:
                if not is_integer(v) or not 0 <= v < high:
                    raise ValueError(f"{fn}: {name} must be integers in [0, {high}) (got {values})")
        if M > 1 and len(set(slot)) != M:
            raise ValueError(f"{fn}: slot must hold distinct cache slots (got {slot})")
        nt = resolve_num_threads(num_threads, f"{fn}: num_threads")
        if nt > self._scratch_threads:
            self._core.set_scratch(np.empty(self._scratch_floats(self.max_rows, nt), np.float32))
            self._scratch_threads = nt
        self._core.step(ids, slot, pos, nt)
        return self._logits[:M]


def _check_layer(fn: str, i: int, layer: dict, C: int, H: int, cache_shape: tuple) -> None:
    """Layer i of a decode table: DECODE_LAYER's fields, with their shapes."""
    if set(layer) != set(DECODE_LAYER):
        raise ValueError(f"{fn}: layers[{i}] must have the fields {sorted(DECODE_LAYER)} (got {sorted(layer)})")
    for ln in ("ln1", "ln2"):
        for part, a in zip(("weight", "bias"), layer[ln]):
            check(fn, f"layers[{i}] {ln} {part}", a, (C,))
    for name, (n, k) in {"attn": (3 * C, C), "attn_proj": (C, C), "fc": (H, C), "fc_proj": (C, H)}.items():
        linear = layer[name]
        check(fn, f"layers[{i}] {name} packed weight", linear.packed, (-(-n // PANEL), k, PANEL))
        check(fn, f"layers[{i}] {name} bias", linear.bias, (n,))
    if check_cache(fn, *layer["cache"]) != cache_shape:
        raise ValueError(f"{fn}: layers[{i}]'s cache must have layer 0's shape {list(cache_shape)}")
