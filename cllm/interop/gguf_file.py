"""cllm's models as one GGUF file, the format llama.cpp (and Ollama and LM Studio through it) loads, written with
the ``gguf`` package (llama.cpp's own writer).

    gpt2                  -> architecture "gpt2"  (tensors in nn.Linear layout, as llama.cpp's converter leaves them)
    llama                 -> architecture "llama" (q and k rows permuted: llama.cpp rotates adjacent pairs, and HF /
                             cllm rotate the two halves of each head)
    llama, qk_norm=True   -> architecture "qwen3" (halves, as cllm: no permutation)

The tokenizer goes in as llama.cpp's byte-level BPE ("gpt2" model): the tokens in GPT-2's byte-to-unicode
spelling, the merges in rank order, and the pre-tokenizer that splits text as cllm's pattern does. Weights:
"f32"; "f16" (the matrices in half precision, norms and biases in float32, as llama.cpp's converter does); "q8_0"
(the matrices in llama.cpp's Q8_0: blocks of 32 weights along a row, one float16 scale each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._version import __version__
from ..tokenizer import END_OF_TEXT, FIM_TOKENS
from .files import write_through

__all__ = ["PRE_TOKENIZERS", "export_gguf"]

# cllm's split pattern -> llama.cpp's name for the pre-tokenizer with the same regex
PRE_TOKENIZERS = {"gpt2": "gpt-2", "cl100k": "llama-bpe"}
_FIM_KEYS = dict(zip(FIM_TOKENS, ("FIM_PRE_ID", "FIM_MID_ID", "FIM_SUF_ID", "FIM_PAD_ID")))
_LLAMA_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                "self_attn.v_proj": "attn_v", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
                "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
                "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
_GPT2_NAMES = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
               "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}


def gguf_architecture(config) -> str:
    if config.arch == "gpt2":
        return "gpt2"
    return "qwen3" if config.qk_norm else "llama"


def gguf_tensors(model) -> dict[str, np.ndarray]:
    """The state dict under llama.cpp's tensor names (float32, numpy [out, in] order: GGUF's ne reversed)."""
    cfg, state = model.config, model.state_dict()
    out = {}
    if cfg.arch == "gpt2":
        top = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
               "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias"}
        layer, prefix = _GPT2_NAMES, "transformer.h."
    else:
        top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
               "lm_head.weight": "output.weight"}
        layer, prefix = _LLAMA_NAMES, "model.layers."
    for name, w in state.items():
        if name in top:
            out[top[name]] = w
            continue
        i, rest = name[len(prefix):].split(".", 1)
        part, kind = rest.rsplit(".", 1)
        if cfg.arch == "llama" and not cfg.qk_norm and part in ("self_attn.q_proj", "self_attn.k_proj"):
            w = _pairs_from_halves(w, cfg.n_heads)
        out[f"blk.{i}.{layer[part]}.{kind}"] = w
    return out


def _pairs_from_halves(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k rows [NH·hs, C] within each head from (x_0..x_{hs/2-1}, x_{hs/2}..) rotated as halves to
    adjacent pairs (x_0, x_{hs/2}, x_1, x_{hs/2+1}, ...), which llama.cpp's "llama" rotary rotates together."""
    rows, cols = w.shape
    return np.ascontiguousarray(w.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols))


def export_gguf(model, path, dtype: str = "f32") -> Path:
    """Write ``model`` (which needs its tokenizer) to the GGUF file ``path`` with matrices in ``dtype``."""
    try:
        import gguf
    except ImportError:
        raise ValueError("export: --to gguf needs the gguf package (pip install 'cllm[gguf]')") from None

    if model.tokenizer is None:
        raise ValueError("export: GGUF needs the model's tokenizer (llama.cpp tokenizes itself); this model has none")
    cfg, tok = model.config, model.tokenizer
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arch = gguf_architecture(cfg)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]

    def write(tmp):
        w = gguf.GGUFWriter(str(tmp), arch)
        w.add_name(f"cllm {cfg.arch} {model.n_params / 1e6:.1f}M")
        w.add_string("general.producer", f"cllm {__version__}")
        w.add_file_type(file_type)
        if dtype == "q8_0":
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(cfg.context_length)
        w.add_embedding_length(cfg.d_model)
        w.add_block_count(cfg.n_layers)
        w.add_feed_forward_length(cfg.hidden_size)
        w.add_head_count(cfg.n_heads)
        if cfg.arch == "gpt2":
            w.add_layer_norm_eps(1e-5)
        else:
            w.add_head_count_kv(cfg.n_heads)
            w.add_key_length(cfg.head_dim)
            w.add_value_length(cfg.head_dim)
            w.add_rope_dimension_count(cfg.head_dim)
            w.add_rope_freq_base(cfg.rope_theta)
            w.add_layer_norm_rms_eps(cfg.norm_eps)
        w.add_vocab_size(cfg.vocab_size)
        _add_tokenizer(w, tok, cfg.vocab_size)
        for name, tensor in gguf_tensors(model).items():
            data, qtype = _encode(gguf, tensor, dtype)
            w.add_tensor(name, data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    return write_through(path, write)


def _encode(gguf, tensor: np.ndarray, dtype: str):
    """(data, GGML type) of one tensor: vectors stay float32; matrices become dtype (a q8_0 matrix whose rows are
    not a whole number of 32-weight blocks stays float16)."""
    tensor = np.ascontiguousarray(tensor, dtype=np.float32)
    if dtype == "f32" or tensor.ndim == 1:
        return tensor, gguf.GGMLQuantizationType.F32
    if dtype == "q8_0" and tensor.shape[-1] % 32 == 0:
        return gguf.quants.quantize(tensor, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return tensor.astype(np.float16), gguf.GGMLQuantizationType.F16


def _add_tokenizer(w, tok, vocab_size: int) -> None:
    import gguf

    hf = tok.to_hf_dict()  # its byte-to-unicode spelling of every token and merge, as llama.cpp reads them
    tokens = [None] * vocab_size
    types = [gguf.TokenType.NORMAL] * vocab_size
    for text, i in hf["model"]["vocab"].items():
        tokens[i] = text
    for text, i in tok.special_tokens.items():
        tokens[i], types[i] = text, gguf.TokenType.CONTROL
    for i in range(tok.vocab_size, vocab_size):  # rows the model has beyond the tokenizer (a rounded-up vocabulary)
        tokens[i], types[i] = f"[PAD{i}]", gguf.TokenType.UNUSED
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(PRE_TOKENIZERS[tok.pattern])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(hf["model"]["merges"])
    eot = tok.special_tokens.get(END_OF_TEXT)
    if eot is not None:
        w.add_bos_token_id(eot)
        w.add_eos_token_id(eot)
        w.add_pad_token_id(eot)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    for text, key in _FIM_KEYS.items():
        if text in tok.special_tokens:
            w.add_uint32(getattr(gguf.Keys.Tokenizer, key), tok.special_tokens[text])
