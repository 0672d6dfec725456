"""Models out to Hugging Face transformers and GGUF, and in from transformers checkpoints.

The tests marked ``interop`` run the real transformers (on PyTorch's CPU build, from ``.[interop]``): they load
what cllm exports, and make the checkpoints cllm imports (random weights, nothing downloaded). The rest need only
cllm, safetensors and gguf. llama.cpp itself runs in tests/test_llama_cpp.py."""

import json
import shutil

import numpy as np
import pytest

import cllm
from cllm.cli import main as cli
from cllm.interop.gguf_file import gguf_tensors
from cllm.interop.safetensors_file import read_safetensors
from tiny_lm import SOURCES
from interop_models import PROMPTS, VARIANTS, held_out_texts, saved, trained

# --- the round trip and the files, without transformers ---------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_through_hf_is_bitwise(tmp_path, variant):
    path = saved(tmp_path, variant)
    assert cli(["export", str(path), "--to", "hf", str(tmp_path / "hf")]) == 0
    assert cli(["import", str(tmp_path / "hf"), "--output", str(tmp_path / "back.cllm")]) == 0
    before, after = cllm.load(path), cllm.load(tmp_path / "back.cllm", verify=True)
    assert after.config == before.config
    assert np.array_equal(after.params.view(np.uint32), before.params.view(np.uint32))
    assert after.tokenizer.to_hf_dict() == before.tokenizer.to_hf_dict()


def test_hf_files_declare_the_special_tokens(tmp_path):
    model = trained("llama")
    fim = cllm.Tokenizer(model.tokenizer.merges, ("<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>",
                                                  "<fim_pad>"))
    m = cllm.Model(model.config, params=model.params.copy())
    m.tokenizer = fim
    m.save(tmp_path / "fim.cllm")
    cllm.export(tmp_path / "fim.cllm", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    tok_config = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    eot = fim.special_tokens["<|endoftext|>"]
    assert config["architectures"] == ["LlamaForCausalLM"] and config["eos_token_id"] == eot
    assert tok_config["eos_token"] == "<|endoftext|>" and tok_config["model_max_length"] == 64
    assert tok_config["additional_special_tokens"] == ["<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>"]
    assert {v["content"] for v in tok_config["added_tokens_decoder"].values()} == set(fim.special_tokens)


def _hf_folder(tmp_path, variant="llama", **config_changes):
    folder = tmp_path / "hf"
    if not folder.exists():
        cllm.export(saved(tmp_path, variant), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("change, message", [
    ({"architectures": ["MistralForCausalLM"]}, "cllm runs GPT2LMHeadModel, LlamaForCausalLM and Qwen3"),
    ({"num_key_value_heads": 1}, "grouped-query attention"),
    ({"rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "rope scaling"),
    ({"rope_parameters": None, "rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope scaling"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"head_dim": 64}, "head_dim"),
    ({"attention_bias": True}, "attention_bias"),
    ({"hidden_size": "64"}, "hidden_size must be int"),
])
def test_import_refuses_what_cllm_cannot_compute(tmp_path, capsys, change, message):
    folder = _hf_folder(tmp_path, **change)
    assert cli(["import", str(folder), "--output", str(tmp_path / "m.cllm")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "m.cllm").exists()


def test_import_refuses_gpt2_it_cannot_compute(tmp_path, capsys):
    folder = _hf_folder(tmp_path, "gpt2", activation_function="relu")
    assert cli(["import", str(folder), "--output", str(tmp_path / "m.cllm")]) == 2
    assert "activation_function" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["sharded", "pickle", "no weights", "no tokenizer", "wordpiece", "metaspace",
                                  "byte missing", "normalizer", "shape"])
def test_import_refuses_files_it_cannot_read(tmp_path, capsys, case):
    folder = _hf_folder(tmp_path)
    tok_path = folder / "tokenizer.json"
    doc = json.loads(tok_path.read_text())
    if case in ("sharded", "pickle", "no weights"):
        (folder / "model.safetensors").unlink()
        if case == "sharded":
            (folder / "model.safetensors.index.json").write_text("{}")
        if case == "pickle":
            (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    elif case == "no tokenizer":
        tok_path.unlink()
    elif case == "wordpiece":
        doc["model"]["type"] = "WordPiece"
    elif case == "metaspace":
        doc["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁"}
    elif case == "byte missing":
        del doc["model"]["vocab"]["A"]
    elif case == "normalizer":
        doc["normalizer"] = {"type": "NFKC"}
    elif case == "shape":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | {"intermediate_size": 96}))
    tok_path.exists() and tok_path.write_text(json.dumps(doc))
    expected = {"sharded": "sharded", "pickle": "never loads", "no weights": "no model.safetensors",
                "no tokenizer": "tokenizer.json is missing", "wordpiece": "WordPiece", "metaspace": "Metaspace",
                "byte missing": "the byte 0x41 has no token", "normalizer": "normalizer", "shape": "shape"}[case]
    assert cli(["import", str(folder), "--output", str(tmp_path / "m.cllm")]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


def test_safetensors_reader_survives_corruption(tmp_path):
    """Every truncation and every flipped byte of the header: a ValueError or the right tensors, never a crash."""
    from safetensors.numpy import save_file

    good = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float16)}
    path = tmp_path / "x.safetensors"
    save_file(good, str(path))
    raw = path.read_bytes()
    header_end = 8 + int.from_bytes(raw[:8], "little")
    cases = [raw[:n] for n in range(0, len(raw), 7)]
    cases += [raw[:i] + bytes([raw[i] ^ 0x5A]) + raw[i + 1:] for i in range(0, header_end)]
    for case in cases:
        path.write_bytes(case)
        try:
            got = read_safetensors(path)
        except ValueError:
            continue
        for name, value in got.items():
            assert np.asarray(value).size == good.get(name, np.empty(0)).size or name not in good


def test_import_reads_half_precision_weights(tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = _hf_folder(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    half = {k: v.astype(np.float16) for k, v in weights.items()}
    save_file(half, str(folder / "model.safetensors"))
    got = cllm.import_hf(folder, tmp_path / "m.cllm").model
    for name, value in got.state_dict().items():
        assert np.array_equal(value, half[name].astype(np.float32)), name


def test_import_reads_bfloat16_weights(tmp_path):
    """bfloat16, which numpy cannot hold (the file is written here byte by byte): widened exactly to float32."""
    from safetensors.numpy import load_file

    folder = _hf_folder(tmp_path)
    weights = load_file(str(folder / "model.safetensors"))
    halves = {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in weights.items()}
    header, offset = {}, 0
    for name, h in halves.items():
        header[name] = {"dtype": "BF16", "shape": list(h.shape), "data_offsets": [offset, offset + h.nbytes]}
        offset += h.nbytes
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    (folder / "model.safetensors").write_bytes(len(head).to_bytes(8, "little") + head
                                               + b"".join(h.tobytes() for h in halves.values()))
    got = cllm.import_hf(folder, tmp_path / "m.cllm").model
    for name, value in got.state_dict().items():
        assert np.array_equal(value.view(np.uint32), halves[name].astype(np.uint32) << 16), name


# --- fine-tuning an imported model --------------------------------------------------------------------------


def test_train_init_fine_tunes_the_file_with_its_tokenizer(tmp_path, capsys):
    model_path = saved(tmp_path, "qwen3")
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(held_out_texts()):
        (docs / f"{i}.py").write_text(text)
    assert cli(["tokenize", "--input", str(docs), "--tokenizer", str(model_path), "--output", str(tmp_path / "tok"),
                "--val-fraction", "0.3", "--quiet"]) == 0
    out = tmp_path / "ft" / "model.cllm"
    args = ["train", "--data", str(tmp_path / "tok"), "--init", str(model_path), "--seq-len", "64", "--batch-size", "4",
            "--max-steps", "3", "--lr", "1e-3", "--warmup", "0", "--output", str(out), "--quiet"]
    assert cli(args) == 0
    start, tuned = cllm.load(model_path), cllm.load(out)
    assert tuned.config == start.config and tuned.tokenizer.to_hf_dict() == start.tokenizer.to_hf_dict()
    assert not np.array_equal(tuned.params, start.params)
    assert np.abs(tuned.params - start.params).max() < 0.05  # a few small steps from the file, not a new model
    capsys.readouterr()

    # data tokenized with another tokenizer, and a sequence longer than the model's context: clear errors
    assert cli(["tokenize", "--input", str(docs), "--vocab-size", "300", "--output", str(tmp_path / "tok2"),
                "--quiet"]) == 0
    assert cli([*args[:2], str(tmp_path / "tok2"), *args[3:]]) == 2
    assert "tokenize it again with cllm tokenize --tokenizer" in capsys.readouterr().err
    assert cli([*args[:6], "128", *args[7:]]) == 2
    assert "longer than" in capsys.readouterr().err


# --- GGUF, read back by the gguf package ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gguf_holds_every_tensor_and_the_tokenizer(tmp_path, variant, dtype):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "m.gguf"
    assert cli(["export", str(saved(tmp_path, variant)), "--to", "gguf", "--dtype", dtype, str(path)]) == 0
    model = trained(variant)
    reader = gguf.GGUFReader(path)
    field = lambda key: reader.fields[key].contents()
    arch = {"gpt2": "gpt2", "llama": "llama", "qwen3": "qwen3", "llama-untied": "llama"}[variant]
    assert field("general.architecture") == arch
    assert field(f"{arch}.block_count") == 2 and field(f"{arch}.context_length") == 64
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    hf = model.tokenizer.to_hf_dict()
    tokens = field("tokenizer.ggml.tokens")
    eot, n = model.tokenizer.special_tokens["<|endoftext|>"], model.tokenizer.vocab_size
    assert len(tokens) == 640 and tokens[eot] == "<|endoftext|>" and tokens[n:] == [f"[PAD{i}]" for i in range(n, 640)]
    assert all(tokens[i] == t for t, i in hf["model"]["vocab"].items())
    assert field("tokenizer.ggml.merges") == hf["model"]["merges"]
    assert field("tokenizer.ggml.eos_token_id") == eot
    expected = gguf_tensors(model)
    got = {t.name: t for t in reader.tensors}
    assert got.keys() == expected.keys()
    assert ("output.weight" in got) == (variant == "llama-untied")
    for name, ref in expected.items():
        t = got[name]
        kind = "F32" if dtype == "f32" or ref.ndim == 1 else dtype.upper()
        assert t.tensor_type.name == kind, name
        value = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ref.shape)
        tolerance = {"F32": 0, "F16": 1e-3, "Q8_0": 2e-2}[kind] * max(1.0, np.abs(ref).max())
        assert np.abs(value - ref).max() <= tolerance, name


def test_gguf_q8_0_keeps_rows_of_partial_blocks_in_f16(tmp_path):
    """d_model 48 is no whole number of 32-weight blocks: matrices with rows of 48 stay f16, those with rows of H
    (the MLP's down projection) become q8_0."""
    gguf = pytest.importorskip("gguf")
    base = trained("llama")
    cfg = cllm.ModelConfig(vocab_size=640, context_length=64, d_model=48, n_layers=1, n_heads=2, arch="llama")
    model = cllm.Model(cfg, seed=0)
    model.tokenizer = base.tokenizer
    model.save(tmp_path / "odd.cllm")
    cllm.export(tmp_path / "odd.cllm", tmp_path / "odd.gguf", to="gguf", dtype="q8_0")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "odd.gguf").tensors}
    assert cfg.hidden_size % 32 == 0 and types["blk.0.ffn_down.weight"] == "Q8_0"
    assert types["blk.0.ffn_up.weight"] == types["token_embd.weight"] == "F16"
    assert types["blk.0.attn_norm.weight"] == "F32"


def test_gguf_llama_rotates_pairs(tmp_path):
    """llama.cpp's "llama" rotates adjacent pairs: q/k rows go from halves (h0..h7 | h8..h15) to (h0, h8, h1, ...)."""
    model = trained("llama")
    q = model.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    got = gguf_tensors(model)["blk.0.attn_q.weight"]
    hs = model.config.head_dim
    for head in range(model.config.n_heads):
        rows = q[head * hs:(head + 1) * hs]
        pairs = got[head * hs:(head + 1) * hs]
        assert np.array_equal(pairs[0::2], rows[:hs // 2]) and np.array_equal(pairs[1::2], rows[hs // 2:])
    assert np.array_equal(gguf_tensors(trained("qwen3"))["blk.0.attn_q.weight"],
                          trained("qwen3").state_dict()["model.layers.0.self_attn.q_proj.weight"])


def test_export_errors(tmp_path, capsys):
    path = saved(tmp_path, "gpt2")
    assert cli(["export", str(path), "--to", "hf", "--dtype", "q8_0", str(tmp_path / "x")]) == 2
    assert "dtype 'q8_0' is for to='gguf'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli(["export", str(path), "--to", "onnx", str(tmp_path / "x")])
    assert e.value.code == 2
    model = trained("gpt2")
    bare = cllm.Model(model.config, params=model.params.copy())
    bare.save(tmp_path / "bare.cllm")
    assert cli(["export", str(tmp_path / "bare.cllm"), "--to", "gguf", str(tmp_path / "x.gguf")]) == 2
    assert "GGUF needs the model's tokenizer" in capsys.readouterr().err


# --- transformers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transformers():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM",
           "llama-untied": "LlamaForCausalLM"}


@pytest.mark.interop
@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_runs_the_export(tmp_path, capsys, transformers, variant):
    import torch

    folder = tmp_path / "hf"
    assert cli(["export", str(saved(tmp_path, variant)), str(folder)]) == 0
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert type(hf).__name__ == CLASSES[variant]
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    assert (hf.lm_head.weight is hf.get_input_embeddings().weight) == (variant != "llama-untied")
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = trained(variant)
    for text in held_out_texts():
        assert hf_tok(text)["input_ids"] == model.tokenizer.encode(text)
        assert hf_tok.decode(model.tokenizer.encode(text)) == text
    assert hf_tok.eos_token == "<|endoftext|>"

    rng = np.random.default_rng(0)
    for batch, length in ((1, 64), (3, 17), (4, 64)):
        idx = rng.integers(0, model.config.vocab_size, (batch, length)).astype(np.int32)
        with torch.no_grad():
            theirs = hf(torch.from_numpy(idx.astype(np.int64))).logits.numpy()
        assert np.abs(model.forward(idx) - theirs).max() < 1e-4

    for prompt in PROMPTS:
        capsys.readouterr()
        assert cli(["generate", str(saved(tmp_path, variant)), "--prompt", prompt, "--temperature", "0",
                    "--max-tokens", "24"]) == 0
        ours = capsys.readouterr().out.removesuffix("\n")  # the line end the command prints after the text
        ids = hf_tok(prompt, return_tensors="pt")["input_ids"]
        out = hf.generate(ids, max_new_tokens=24, do_sample=False, pad_token_id=hf_tok.eos_token_id)
        theirs = hf_tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert ours == theirs, prompt


def _hf_tokenizer(folder, transformers, texts, special_first: bool):
    """A byte-level BPE trained by the tokenizers library: its ids are not cllm's (the alphabet in its own order;
    with special_first, the special token first too)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"] if special_first else [],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    if not special_first:
        tok.add_special_tokens(["<|endoftext|>"])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


@pytest.mark.interop
@pytest.mark.parametrize("kind", ["gpt2", "llama", "llama-untied", "qwen3"])
def test_import_from_transformers(tmp_path, transformers, kind):
    import torch

    torch.manual_seed(0)
    texts = [p.read_text(encoding="utf-8") for p in SOURCES]
    folder = tmp_path / "hf"
    hf_tok = _hf_tokenizer(folder, transformers, texts, special_first=kind != "gpt2")
    sizes = dict(vocab_size=704, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=5e5)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=704, n_positions=128, n_embd=64, n_layer=2, n_head=4)
        hf = transformers.GPT2LMHeadModel(config)
    elif kind == "qwen3":
        hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**sizes, head_dim=16, num_key_value_heads=4))
    else:
        config = transformers.LlamaConfig(**sizes, num_key_value_heads=4, tie_word_embeddings=kind == "llama")
        hf = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # norms away from 1, so that their weights are checked too
        for name, p in hf.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    hf.eval()
    hf.save_pretrained(folder)
    result = cllm.import_hf(folder, tmp_path / "m.cllm")
    model, hf_ids = cllm.load(tmp_path / "m.cllm", verify=True), result.hf_ids
    assert not np.array_equal(hf_ids, np.arange(len(hf_ids)))  # the ids really were renumbered
    for text in held_out_texts():
        assert hf_ids[model.tokenizer.encode(text)].tolist() == hf_tok(text)["input_ids"]
    rng = np.random.default_rng(1)
    idx = rng.integers(0, len(hf_ids), (3, 40)).astype(np.int32)
    with torch.no_grad():
        theirs = hf(torch.from_numpy(hf_ids[idx])).logits.numpy()
    assert np.abs(model.forward(idx)[..., :len(hf_ids)] - theirs[..., hf_ids]).max() < 1e-4

    # fine-tuning it on data tokenized with the checkpoint's own tokenizer.json, read in cllm's order
    with pytest.raises(ValueError, match="numbers its tokens in another order"):
        cllm.Tokenizer.load(folder / "tokenizer.json")
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(held_out_texts()):
        (docs / f"{i}.py").write_text(text)
    assert cli(["tokenize", "--input", str(docs), "--tokenizer", str(folder / "tokenizer.json"), "--output",
                str(tmp_path / "tok"), "--val-fraction", "0.3", "--quiet"]) == 0
    assert cli(["train", "--data", str(tmp_path / "tok"), "--init", str(tmp_path / "m.cllm"), "--seq-len", "64",
                "--batch-size", "2", "--max-steps", "2", "--output", str(tmp_path / "ft.cllm"), "--quiet"]) == 0
    shutil.rmtree(folder)
