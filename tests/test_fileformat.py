"""The .cllm file: round trips, zero-copy mapping, atomic writes under SIGKILL, and strict validation (every
truncation, random byte mutations and header mutations give FormatError or a verified-equal model)."""

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cllm
from cllm.formats import container as ff
from cllm.model import read as read_cllm
from cllm.cli import main as cli

TINY = cllm.ModelConfig(vocab_size=300, context_length=8, d_model=8, n_layers=1, n_heads=2)


def make_model(config=TINY, seed=3, tokenizer=True):
    model = cllm.Model(config, seed=seed)
    if tokenizer:
        model.tokenizer = cllm.Tokenizer(merges=[(97, 98), (256, 99)], special_tokens=["<|endoftext|>"])
    model.training_summary = {"steps": 3, "final_loss": 4.25}
    return model


def trained_checkpoint(path, steps=2):
    """A model + AdamW after a few steps, saved as a checkpoint; returns (model, optimizer)."""
    model = make_model()
    opt = cllm.optim.AdamW(model, lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        idx = rng.integers(0, TINY.vocab_size, (2, 8))
        model.forward_backward(idx, np.roll(idx, -1, axis=1))
        opt.step()
    model.save(path, optimizer=opt, trainer_state={"step": steps, "rng": {"state": 2**100 + 7}, "metrics": [1.5]})
    return model, opt


def assert_same_model(got, want):
    assert got.config == want.config
    for name, value in want.state_dict().items():
        np.testing.assert_array_equal(got.state_dict()[name], value, err_msg=name)
    if want.tokenizer is None:
        assert got.tokenizer is None
    else:
        assert got.tokenizer.merges == want.tokenizer.merges
        assert got.tokenizer.special_tokens == want.tokenizer.special_tokens


def write_small(tmp_path, **kw):
    path = tmp_path / "m.cllm"
    model = make_model(**kw)
    model.save(path)
    return path, model


# --- round trips -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("tokenizer", [True, False])
def test_round_trip(tmp_path, mmap, tokenizer):
    path, model = write_small(tmp_path, tokenizer=tokenizer)
    got = cllm.load(path, mmap=mmap, verify=True)
    assert_same_model(got, model)
    assert got.training_summary == {"steps": 3, "final_loss": 4.25}
    if tokenizer:
        assert got.tokenizer.encode("abc ab") == model.tokenizer.encode("abc ab")
    ids = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(got.forward(ids), model.forward(ids))


@pytest.mark.parametrize("mmap", [True, False])
def test_checkpoint_round_trip(tmp_path, mmap):
    path = tmp_path / "ck.cllm"
    model, opt = trained_checkpoint(path)
    f = read_cllm(path, mmap=mmap, verify=True)
    assert_same_model(f.model, model)
    np.testing.assert_array_equal(f.optimizer["m"], opt.m)
    np.testing.assert_array_equal(f.optimizer["v"], opt.v)
    assert f.optimizer["step"] == 2
    assert f.optimizer["hyperparameters"]["lr"] == 1e-2
    assert f.trainer_state == {"step": 2, "rng": {"state": 2**100 + 7}, "metrics": [1.5]}
    resumed = cllm.optim.AdamW(f.model, lr=1e-2)
    resumed.load_state_dict(f.optimizer)
    assert resumed.step_count == 2


def test_layout_is_64_byte_aligned_and_little_endian(tmp_path):
    path, model = write_small(tmp_path)
    raw = path.read_bytes()
    magic, major, minor, crc, head_nbytes, data_offset = ff.PREAMBLE.unpack_from(raw)
    assert (magic, major, minor) == (b"CLLM\r\n\x1a\n", 1, 0) and data_offset % 64 == 0
    header = json.loads(raw[32:32 + head_nbytes])
    assert zlib.crc32(raw[32:32 + head_nbytes]) == crc
    for name, t in header["tensors"].items():
        assert (data_offset + t["offset"]) % 64 == 0
        data = np.frombuffer(raw, "<f4", count=t["nbytes"] // 4, offset=data_offset + t["offset"])
        np.testing.assert_array_equal(data.reshape(t["shape"]), model.state_dict()[name])
    assert len(raw) == data_offset + header["data_nbytes"]


def test_mmap_is_zero_copy_and_copy_on_write(tmp_path):
    path, model = write_small(tmp_path)
    before = path.read_bytes()
    got = cllm.load(path)  # mmap=True by default
    assert isinstance(got.params.base, np.memmap) or isinstance(got.params, np.memmap)
    got.state_dict()["transformer.wte.weight"][...] = 7.0  # writable, private
    assert path.read_bytes() == before
    opt = cllm.optim.AdamW(got)
    got.forward_backward(np.array([[1, 2, 3]]), np.array([[2, 3, 4]]))
    opt.step()  # training a mapped model works, and the file stays as it was
    assert path.read_bytes() == before


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RssFile from /proc")
def test_mmap_load_does_not_read_the_tensors(tmp_path):
    """A 200 MB model loads in milliseconds and adds (almost) nothing to the resident set until used."""
    path = tmp_path / "big.cllm"
    config = cllm.ModelConfig(vocab_size=50_000, context_length=64, d_model=1024, n_layers=0 + 1, n_heads=8)
    model = cllm.Model(config, seed=0)
    model.save(path)
    del model
    script = textwrap.dedent(f"""
        import os, time, cllm
        def rss_file():
            for line in open("/proc/self/status"):
                if line.startswith("RssFile:"):
                    return int(line.split()[1]) * 1024
        before = rss_file()
        start = time.perf_counter()
        m = cllm.load({str(path)!r}, mmap=True)
        elapsed = time.perf_counter() - start
        after = rss_file()
        total = float(m.state_dict()["transformer.wte.weight"].sum())  # now it is read
        print(after - before, elapsed, rss_file() - before)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    grew_on_load, seconds, grew_on_use = int(out[0]), float(out[1]), int(out[2])
    assert grew_on_load < 8 << 20, f"load mapped {grew_on_load} bytes into memory"
    assert grew_on_use > 150 << 20  # the weights were read only when used
    assert seconds < 1.0


# --- atomic writes ---------------------------------------------------------------------------------------------

SAVER = textwrap.dedent("""
    import sys, cllm
    path = sys.argv[1]
    config = cllm.ModelConfig(vocab_size=4096, context_length=64, d_model=128, n_layers=2, n_heads=2)
    models = [cllm.Model(config, seed=s) for s in (1, 2)]
    opts = [cllm.optim.AdamW(m) for m in models]
    models[0].save(path, optimizer=opts[0])
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        models[i % 2].save(path, optimizer=opts[i % 2], trainer_state={"i": i})
""")


def test_sigkill_during_saves_leaves_old_or_new_file(tmp_path):
    """Kill a process that saves two different checkpoints over one path in a loop, at 6 random moments: the
    path always holds one of the two complete files."""
    path = tmp_path / "ck.cllm"
    config = cllm.ModelConfig(vocab_size=4096, context_length=64, d_model=128, n_layers=2, n_heads=2)
    wanted = [cllm.Model(config, seed=s) for s in (1, 2)]
    rng = np.random.default_rng(5)
    for trial in range(6):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        got = cllm.load(path, mmap=False, verify=True)
        same = [all(np.array_equal(got.state_dict()[k], v) for k, v in w.state_dict().items()) for w in wanted]
        assert any(same), f"trial {trial}: the file is neither checkpoint"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ck.cllm"]
    assert all(name.startswith(".ck.cllm.") and name.endswith(".tmp") for name in leftovers), leftovers


def test_failed_save_keeps_the_old_file(tmp_path):
    path, model = write_small(tmp_path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="JSON"):
        model.save(path, trainer_state={"bad": object()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.cllm"]


# --- validation ------------------------------------------------------------------------------------------------

def rewrite_header(path, edit, out=None, version=(1, 0)):
    """Apply ``edit`` to the parsed header and write a consistent file (new CRC and data offset)."""
    raw = path.read_bytes()
    _, _, _, _, n, data_offset = ff.PREAMBLE.unpack_from(raw)
    header = json.loads(raw[32:32 + n])
    edit(header)
    major, minor = version
    head = json.dumps(header).encode()
    new_offset = -(-(32 + len(head)) // 64) * 64
    blob = ff.PREAMBLE.pack(ff.MAGIC, major, minor, zlib.crc32(head), len(head), new_offset) + head
    blob += bytes(new_offset - len(blob)) + raw[data_offset:]
    (out or path).write_bytes(blob)
    return out or path


def expect_error(path, match):
    for mmap in (True, False):
        with pytest.raises(cllm.FormatError, match=match):
            cllm.load(path, mmap=mmap, verify=True)


def test_newer_major_version_is_refused_naming_both(tmp_path):
    path, _ = write_small(tmp_path)
    rewrite_header(path, lambda h: None, version=(2, 3))
    expect_error(path, r"format version 2\.3 is newer than the version this cllm reads \(1\.0\)")


def test_newer_minor_version_with_unknown_keys_loads(tmp_path):
    path, model = write_small(tmp_path)

    def edit(h):
        h["future_section"] = {"anything": [1, 2, 3]}
        h["model"]["future_key"] = "ignored"
        h["tensors"]["transformer.wte.weight"]["future"] = True
    rewrite_header(path, edit, version=(1, 7))
    assert_same_model(cllm.load(path, verify=True), model)


@pytest.mark.parametrize("edit, match", [
    (lambda h: h["tensors"]["transformer.wpe.weight"].update(offset=h["tensors"]["transformer.wte.weight"]["offset"]),
     "overlap"),
    (lambda h: h["tensors"]["transformer.ln_f.bias"].update(offset=10**9 * 64), "outside"),
    (lambda h: h["tensors"]["transformer.ln_f.bias"].update(offset=-64), "outside"),
    (lambda h: h["tensors"]["transformer.ln_f.bias"].update(offset=4), "multiple of 64"),
    (lambda h: h["tensors"]["transformer.ln_f.bias"].update(nbytes=12), "disagrees with shape"),
    (lambda h: h["tensors"]["transformer.ln_f.bias"].update(shape=[4]), "disagrees with shape"),
    (lambda h: h["tensors"]["transformer.ln_f.bias"].update(shape=[-1]), "integers >= 0"),
    (lambda h: h["tensors"]["transformer.ln_f.bias"].update(dtype="float64"), "dtype"),
    (lambda h: h["tensors"]["transformer.ln_f.bias"].update(crc32=1), "checksum mismatch in 1 tensor"),
    (lambda h: h["tensors"].pop("transformer.ln_f.bias"), "no 'transformer.ln_f.bias'|needs 16 tensors"),
    (lambda h: h["model"]["config"].update(n_layers=10**9), "needs"),
    (lambda h: h["model"]["config"].update(vocab_size=10**15), "needs"),
    (lambda h: h["model"]["config"].update(d_model=6), "divisible|needs|must be float32"),
    (lambda h: h["model"]["config"].update(n_heads="2"), "n_heads"),
    (lambda h: h["model"].update(architecture="mamba"), "architecture"),
    (lambda h: h["model"].update(architecture="llama"), "needs|no 'model.embed_tokens.weight'"),  # gpt2's tensors
    (lambda h: h["model"]["config"].update(arch="llama"), "config.arch 'llama' is not"),
    (lambda h: h.update(data_nbytes=h["data_nbytes"] + 64), "declares"),
    (lambda h: h.update(tensors=[]), "tensors must be an object"),
    (lambda h: h["tokenizer"]["model"].update(merges=["a b", "zz q"]), "tokenizer"),
    (lambda h: h["tokenizer"].update(model=5), "tokenizer"),
    (lambda h: h.update(checkpoint={"optimizer": {"type": "AdamW", "step": 1, "hyperparameters": {}}}),
     "optimizer.m"),
    (lambda h: h.update(training=[1]), "training must be an object"),
])
def test_inconsistent_headers(tmp_path, edit, match):
    path, _ = write_small(tmp_path)
    rewrite_header(path, edit)
    expect_error(path, match)


@pytest.mark.parametrize("damage, match", [
    (lambda raw: b"GGUF" + raw[4:], "not a .cllm file"),
    (lambda raw: raw[:20], "truncated"),
    (lambda raw: raw[:12] + struct.pack("<I", 0) + raw[16:], "header checksum mismatch"),
    (lambda raw: raw[:16] + struct.pack("<Q", 2**63) + raw[24:], "truncated or corrupt"),
    (lambda raw: raw[:24] + struct.pack("<Q", 2**40) + raw[32:], "data offset"),
    (lambda raw: raw[:-1], "truncated"),
    (lambda raw: raw + b"\0" * 64, "extended"),
])
def test_damaged_files(tmp_path, damage, match):
    path, _ = write_small(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    expect_error(path, match)


def test_bad_utf8_and_bad_json_headers(tmp_path):
    path, _ = write_small(tmp_path)
    raw = path.read_bytes()
    _, _, _, _, n, data_offset = ff.PREAMBLE.unpack_from(raw)
    for head, match in [(b'{"a": "\xff"}', "not UTF-8"), (b'{"a": ', "not valid JSON"), (b"[1, 2]", "JSON object"),
                        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not valid JSON")]:
        offset = -(-(32 + len(head)) // 64) * 64
        blob = ff.PREAMBLE.pack(ff.MAGIC, 1, 0, zlib.crc32(head), len(head), offset) + head
        path.write_bytes(blob + bytes(offset - len(blob)) + raw[data_offset:])
        expect_error(path, match)


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        cllm.load(tmp_path / "nope.cllm")


# --- fuzzing --------------------------------------------------------------------------------------------------

def load_outcome(path, mmap, want, same_tokenizer=True):
    """FormatError, or a model equal to ``want`` after checking every checksum; anything else fails. A valid
    header edit may legitimately change (or drop) the tokenizer: ``same_tokenizer=False`` allows that."""
    try:
        got = cllm.load(path, mmap=mmap, verify=True)
    except cllm.FormatError:
        return "error"
    if not same_tokenizer:
        got.tokenizer = want.tokenizer
    assert_same_model(got, want)
    return "equal"


def test_every_truncation_is_a_format_error(tmp_path):
    path, model = write_small(tmp_path)
    raw = path.read_bytes()
    cut = tmp_path / "cut.cllm"
    for n in range(len(raw)):
        cut.write_bytes(raw[:n])
        with pytest.raises(cllm.FormatError):
            cllm.load(cut, mmap=bool(n % 2), verify=True)


class FuzzFile:
    """A small valid file, its bytes and its model (with a short repr for hypothesis's reports)."""

    def __init__(self, path):
        self.path, self.model = path, make_model()
        self.model.save(path)
        self.raw = path.read_bytes()

    def __repr__(self):
        return f"FuzzFile({self.path.name}, {len(self.raw)} bytes)"


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
    return FuzzFile(tmp_path_factory.mktemp("fuzz") / "m.cllm")


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_random_byte_mutations(fuzz_file, data):
    path, raw, model = fuzz_file.path, fuzz_file.raw, fuzz_file.model
    n = data.draw(st.integers(1, 4), label="mutations")
    blob = bytearray(raw)
    for _ in range(n):
        pos = data.draw(st.integers(0, len(raw) - 1), label="position")
        if data.draw(st.booleans(), label="flip a bit"):
            blob[pos] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        else:
            blob[pos] = data.draw(st.integers(0, 255), label="byte")
    target = path.with_name("mutated.cllm")
    target.write_bytes(bytes(blob))
    load_outcome(target, mmap=data.draw(st.booleans(), label="mmap"), want=model)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                     max_size=3), max_leaves=6)


def header_paths(node, prefix=()):
    """Every key path of a JSON document (the tokenizer's vocabulary and merges sampled, not listed)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("vocab", "merges"):
                yield prefix + (key,)
                continue
            yield from header_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node[:4]):
            yield from header_paths(value, prefix + (i,))


@settings(max_examples=1_500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_header_mutations_with_valid_checksum(fuzz_file, data):
    """Structural fuzzing past the header CRC: replace or delete any value of the header."""
    path, raw, model = fuzz_file.path, fuzz_file.raw, fuzz_file.model
    _, _, _, _, n, _ = ff.PREAMBLE.unpack_from(raw)
    paths = list(header_paths(json.loads(raw[32:32 + n])))
    chosen = data.draw(st.sampled_from(paths[1:]), label="path")
    replacement = data.draw(json_values, label="value")
    delete = data.draw(st.booleans(), label="delete")

    def edit(header):
        node = header
        for key in chosen[:-1]:
            node = node[key]
        if delete and isinstance(node, dict):
            del node[chosen[-1]]
        else:
            node[chosen[-1]] = replacement
    target = rewrite_header(path, edit, out=path.with_name("header-mutated.cllm"))
    load_outcome(target, mmap=data.draw(st.booleans(), label="mmap"), want=model, same_tokenizer=False)


# --- command line ----------------------------------------------------------------------------------------------

def test_cli_info(tmp_path, capsys):
    path = tmp_path / "ck.cllm"
    trained_checkpoint(path)
    assert cli(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "format 1.0" in out and "checksums OK" in out and "AdamW at step 2" in out and "267" not in out
    assert "vocab 300" in out and "byte-level BPE, 259 tokens (2 merges)" in out
    assert cli(["info", "--json", str(path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["parameters"] == TINY.n_params and doc["checkpoint"]["optimizer_step"] == 2
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert cli(["info", str(path)]) == 1  # a corrupt file: a failure, not a usage error
    assert "checksum mismatch" in capsys.readouterr().err
    assert cli(["info", str(tmp_path / "missing.cllm")]) == 1


def test_cli_export_safetensors(tmp_path, capsys):
    from safetensors.numpy import load_file

    path, model = write_small(tmp_path)
    out = tmp_path / "export"
    assert cli(["export", str(path), "--to", "safetensors", str(out)]) == 0
    weights = load_file(str(out / "model.safetensors"))
    assert weights.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(weights[name], value)
    config = json.loads((out / "config.json").read_text())
    assert config["d_model"] == TINY.d_model and config["architecture"] == "gpt2"
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_file(str(out / "tokenizer.json"))
    assert hf.encode("abc abcab").ids == model.tokenizer.encode("abc abcab")
    with pytest.raises(SystemExit) as exit_:
        cli(["export", str(path), "--to", "onnx", str(out)])
    assert exit_.value.code == 2
