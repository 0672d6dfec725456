"""cllm's models as Hugging Face transformers describes them: config.json, the state dict, the tokenizer files.

    gpt2                   -> GPT2LMHeadModel  (the same names; Conv1D stores c_attn, c_proj, c_fc as [in, out])
    llama                  -> LlamaForCausalLM (the same names and layouts)
    llama, qk_norm=True    -> Qwen3ForCausalLM (the same names and layouts)

Both directions live here, so that export and import cannot disagree: ``export_hf`` writes a folder, and
``hf_import`` reads one back through ``config_from_hf`` and ``weights_from_hf``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._version import __version__
from ..model.config import ModelConfig
from ..runtime.atomic import fsync_directory
from ..tokenizer import END_OF_TEXT, FIM_TOKENS
from .files import write_json, write_safetensors

__all__ = ["CONV1D", "config_from_hf", "export_hf", "hf_config", "hf_weights", "weights_from_hf"]

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # GPT-2's [in, out]
GPT2_LAYER_NORM_EPS = 1e-5  # cllm's LayerNorm kernel's


def _class_and_type(config: ModelConfig) -> tuple[str, str]:
    if config.arch == "gpt2":
        return "GPT2LMHeadModel", "gpt2"
    return ("Qwen3ForCausalLM", "qwen3") if config.qk_norm else ("LlamaForCausalLM", "llama")


def hf_config(config: ModelConfig, tokenizer=None) -> dict:
    """config.json for ``config`` (the special token ids from ``tokenizer``, when it has them)."""
    cls, model_type = _class_and_type(config)
    eot = tokenizer.special_tokens.get(END_OF_TEXT) if tokenizer is not None else None
    common = {"architectures": [cls], "model_type": model_type, "vocab_size": config.vocab_size,
              "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": "float32", "use_cache": True,
              "initializer_range": 0.02}
    if config.arch == "gpt2":
        return {**common, "n_positions": config.context_length, "n_ctx": config.context_length,
                "n_embd": config.d_model, "n_layer": config.n_layers, "n_head": config.n_heads,
                "n_inner": config.hidden_size, "activation_function": "gelu_new",  # the tanh approximation
                "layer_norm_epsilon": GPT2_LAYER_NORM_EPS, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                "reorder_and_upcast_attn": False, "tie_word_embeddings": True}
    doc = {**common, "hidden_size": config.d_model, "intermediate_size": config.hidden_size,
           "num_hidden_layers": config.n_layers, "num_attention_heads": config.n_heads,
           "num_key_value_heads": config.n_heads, "head_dim": config.head_dim, "hidden_act": "silu",
           "max_position_embeddings": config.context_length, "rms_norm_eps": config.norm_eps,
           # transformers >= 5 reads rope_parameters, 4.x reads rope_theta and rope_scaling
           "rope_theta": config.rope_theta, "rope_scaling": None,
           "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
           "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
           "tie_word_embeddings": config.tie_embeddings}
    if config.qk_norm:
        doc.update(use_sliding_window=False, sliding_window=None, max_window_layers=config.n_layers,
                   layer_types=["full_attention"] * config.n_layers)
    return doc


def config_from_hf(doc: dict, source: str) -> ModelConfig:
    """``hf_config``'s inverse, for any GPT2LMHeadModel, LlamaForCausalLM or Qwen3ForCausalLM config.json whose
    computation cllm's kernels do exactly; anything else is a ValueError naming the field and why."""
    classes = doc.get("architectures") or []
    cls = classes[0] if isinstance(classes, list) and len(classes) == 1 else classes

    def field(name, default=None, kind=(int,)):
        value = doc.get(name, default)
        if not isinstance(value, kind) or isinstance(value, bool) and bool not in kind:
            raise ValueError(f"{source}: {name} must be {' or '.join(k.__name__ for k in kind)} (got {value!r})")
        return value

    def refuse(name, why):
        raise ValueError(f"{source}: {name} = {doc.get(name)!r}: {why}")

    if cls == "GPT2LMHeadModel":
        C, n_inner = field("n_embd"), doc.get("n_inner")
        if doc.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            refuse("activation_function", "cllm's GPT-2 has the tanh approximation of GELU (gelu_new) only")
        if abs(field("layer_norm_epsilon", 1e-5, (int, float)) - GPT2_LAYER_NORM_EPS) > 1e-12:
            refuse("layer_norm_epsilon", f"cllm's LayerNorm has eps {GPT2_LAYER_NORM_EPS} only")
        if n_inner is not None and (not isinstance(n_inner, int) or n_inner % C):
            refuse("n_inner", "cllm's MLP width is a whole multiple of n_embd")
        for name, ok in (("tie_word_embeddings", True), ("scale_attn_weights", True),
                         ("scale_attn_by_inverse_layer_idx", False), ("add_cross_attention", False)):
            if doc.get(name, ok) is not ok:
                refuse(name, f"cllm's GPT-2 has {name} {ok} only")
        return ModelConfig(vocab_size=field("vocab_size"), context_length=field("n_positions"), d_model=C,
                           n_layers=field("n_layer"), n_heads=field("n_head"),
                           mlp_ratio=4 if n_inner is None else n_inner // C)
    if cls not in ("LlamaForCausalLM", "Qwen3ForCausalLM"):
        raise ValueError(f"{source}: architectures {classes!r}: cllm runs GPT2LMHeadModel, LlamaForCausalLM and "
                         f"Qwen3ForCausalLM")
    C, NH = field("hidden_size"), field("num_attention_heads")
    if field("num_key_value_heads", NH) != NH:
        refuse("num_key_value_heads", f"grouped-query attention (fewer key/value heads than the {NH} query heads) "
                                      f"is not in cllm yet")
    if C % NH or doc.get("head_dim", C // NH) != C // NH:
        refuse("head_dim", f"cllm's heads are hidden_size / num_attention_heads = {C / NH:g} wide")
    if doc.get("hidden_act", "silu") != "silu":
        refuse("hidden_act", "cllm's Llama MLP is SwiGLU (silu)")
    for name in ("attention_bias", "mlp_bias", "use_sliding_window"):
        if doc.get(name, False) is not False:
            refuse(name, "not in cllm's Llama")
    rope = doc.get("rope_parameters") or doc.get("rope_scaling") or {}
    if not isinstance(rope, dict) or rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"{source}: rope scaling {rope!r} is not in cllm (plain rotary embeddings only)")
    theta = rope.get("rope_theta", doc.get("rope_theta", 10_000.0))
    return ModelConfig(vocab_size=field("vocab_size"), context_length=field("max_position_embeddings"), d_model=C,
                       n_layers=field("num_hidden_layers"), n_heads=NH, arch="llama",
                       mlp_hidden=field("intermediate_size"), qk_norm=cls == "Qwen3ForCausalLM",
                       tie_embeddings=field("tie_word_embeddings", False, (bool,)),
                       norm_eps=field("rms_norm_eps", 1e-6, (int, float)), rope_theta=theta)


def hf_weights(model) -> dict[str, np.ndarray]:
    """The state dict as transformers names and lays it out (a tied head is left out: transformers ties it)."""
    state = model.state_dict()
    if model.config.arch != "gpt2":
        return state
    return {name: np.ascontiguousarray(w.T) if name.endswith(CONV1D) else w for name, w in state.items()}


def weights_from_hf(config: ModelConfig, tensors: dict, source: str) -> dict[str, np.ndarray]:
    """``hf_weights``' inverse: transformers' tensors (any float dtype) as cllm's float32 state dict. Raises
    ValueError naming what is missing, extra or of the wrong shape."""
    from ..model.parameters import parameter_shapes

    shapes = parameter_shapes(config)
    ignored = {"lm_head.weight"} if config.tie_embeddings else set()
    # gpt2's causal-mask buffers, and rotary tables some checkpoints carry: derived, never weights
    extra = [n for n in tensors if n not in shapes and n not in ignored
             and not n.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq"))]
    missing = [n for n in shapes if n not in tensors]
    if missing or extra:
        raise ValueError(f"{source}: the weights do not match the config ({len(missing)} missing: "
                         f"{missing[:3]}; {len(extra)} unexpected: {extra[:3]})")
    state = {}
    for name, shape in shapes.items():
        w = tensors[name]
        if config.arch == "gpt2" and name.endswith(CONV1D):
            w = w.T
        if tuple(w.shape) != shape:
            raise ValueError(f"{source}: tensor {name} has shape {list(w.shape)}; the config needs {list(shape)}")
        state[name] = np.ascontiguousarray(w, dtype=np.float32)
    return state


def _tokenizer_files(tokenizer, context_length: int) -> dict[str, dict]:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json: the end-of-text token as bos, eos and
    (there being no other) pad; the FIM tokens, and any other special token, as additional special tokens."""
    eot = END_OF_TEXT if END_OF_TEXT in tokenizer.special_tokens else None
    others = [s for s in tokenizer.special_tokens if s != eot]
    rank = lambda s: (FIM_TOKENS.index(s) if s in FIM_TOKENS else len(FIM_TOKENS), tokenizer.special_tokens[s])
    others.sort(key=rank)
    named = {"bos_token": eot, "eos_token": eot, "unk_token": None, "pad_token": eot}
    added = {str(i): {"content": s, "lstrip": False, "rstrip": False, "normalized": False, "single_word": False,
                      "special": True} for s, i in tokenizer.special_tokens.items()}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **named, "additional_special_tokens": others,
              "added_tokens_decoder": added, "model_max_length": context_length, "add_bos_token": False,
              "add_eos_token": False, "add_prefix_space": False, "clean_up_tokenization_spaces": False}
    specials = {k: v for k, v in named.items() if v is not None} | {"additional_special_tokens": others}
    return {"tokenizer.json": tokenizer.to_hf_dict(), "tokenizer_config.json": config,
            "special_tokens_map.json": specials}


def export_hf(model, directory) -> list[Path]:
    """Write ``model`` to ``directory`` as transformers loads it: config.json, generation_config.json,
    model.safetensors and, with a tokenizer, its three files. Returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg, tok = model.config, model.tokenizer
    producer = f"cllm {__version__}"
    written = [write_safetensors(directory / "model.safetensors", hf_weights(model))]
    config = hf_config(cfg, tok) | {"cllm": {"producer": producer, "config": cfg.to_dict(),
                                             "training": model.training_summary}}
    written.append(write_json(directory / "config.json", config))
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
                  "pad_token_id": config["eos_token_id"]}
    written.append(write_json(directory / "generation_config.json", generation))
    if tok is not None:
        for name, doc in _tokenizer_files(tok, cfg.context_length).items():
            written.append(write_json(directory / name, doc))
    fsync_directory(directory)
    return written
