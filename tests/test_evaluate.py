"""cllm eval (loss, perplexity, bits per byte, accuracy, compressor baselines), cllm complete, and the generate /
eval / complete commands."""

import gzip
import json
import lzma
import math

import numpy as np
import pytest

import cllm
from cllm import cli
from cllm.evaluate import complete, evaluate
from cllm.tokenizer.stage import tokenize_corpus

import tiny_lm


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    docs = [tiny_lm.CODE_TEXT * 3, "def mul(a, b):\n    return a * b\n" * 2 + "# é ✓\n"]
    for i, d in enumerate(docs):
        (folder / f"doc{i}.py").write_text(d, encoding="utf-8")
    return folder, [d.encode() for d in docs]


def reference_metrics(model, tokens):
    """Loss (float64 log-softmax), top-1 and top-5 over the windows evaluate() uses, written out plainly."""
    T = model.config.context_length
    nll, top1, top5 = 0.0, 0, 0
    for s in range(0, tokens.size - 1, T):
        window = tokens[s:s + T + 1]
        logits = model.forward(window[None, :-1])[0].astype(np.float64)
        for row, target in zip(logits, window[1:]):
            nll += np.log(np.exp(row - row.max()).sum()) + row.max() - row[target]
            above = (row > row[target]).sum()
            top1 += above < 1
            top5 += above < 5
    n = tokens.size - 1
    return nll / n, top1 / n, top5 / n


def test_evaluate_text_files(text_files):
    folder, docs = text_files
    model = tiny_lm.code_model()
    tok = model.tokenizer
    eot = tok.special_tokens["<|endoftext|>"]
    tokens = np.array(sum((tok.encode_bytes(d) + [eot] for d in docs), []))
    r = evaluate(model, folder, batch_size=2)  # several batches, and a last window shorter than the others
    assert r["tokens"] == tokens.size - 1 and tokens.size - 1 > 2 * model.config.context_length
    loss, top1, top5 = reference_metrics(model, tokens)
    assert abs(r["loss"] - loss) <= 1e-5 * loss
    assert r["top1"] == pytest.approx(top1) and r["top5"] == pytest.approx(top5)
    assert r["perplexity"] == pytest.approx(math.exp(r["loss"]))
    text = b"".join(docs)[len(tok.token_bytes(tokens[0])):]  # the bytes of the predicted tokens, separators aside
    assert r["bytes"] == len(text)
    assert r["bits_per_byte"] == pytest.approx(r["loss"] * r["tokens"] / math.log(2) / len(text))
    assert r["xz_bits_per_byte"] == 8 * len(lzma.compress(text, preset=9 | lzma.PRESET_EXTREME)) / len(text)
    assert r["gzip_bits_per_byte"] == 8 * len(gzip.compress(text, compresslevel=9)) / len(text)
    assert r["bits_per_byte"] < r["gzip_bits_per_byte"]  # the model learned this text
    assert 0.5 < r["top1"] <= r["top5"] <= 1
    assert evaluate(model, [folder / "doc0.py"], max_tokens=10)["tokens"] == 10


def test_evaluate_token_shards(tmp_path):
    model = tiny_lm.code_model()
    model.tokenizer.save(tmp_path / "tokenizer.json")
    (tmp_path / "docs").mkdir()
    for i in range(8):  # documents go to val by a hash of their bytes: about half of them here
        (tmp_path / "docs" / f"{i}.py").write_text(f"# {i}\n" + tiny_lm.CODE_TEXT, encoding="utf-8")
    stats = tokenize_corpus([tmp_path / "docs"], tmp_path / "tokens", tokenizer=tmp_path / "tokenizer.json",
                            val_fraction=0.5, progress=False, shard_tokens=40)
    assert len(stats["val"]["shards"]) > 1
    r = evaluate(model, tmp_path / "tokens")
    assert r["tokens"] == stats["val"]["tokens"] - 1 and "val shards" in r["data"]
    assert r["bits_per_byte"] > 0 and r["top5"] >= r["top1"]
    other = cllm.Model(model.config)
    other.tokenizer = cllm.Tokenizer(model.tokenizer.merges[:-1])
    with pytest.raises(ValueError, match="made with another tokenizer than the model's"):
        evaluate(other, tmp_path / "tokens")


def test_evaluate_rejects_bad_input(tmp_path, text_files):
    model = tiny_lm.code_model()
    with pytest.raises(ValueError, match="evaluate: data .*missing.txt does not exist"):
        evaluate(model, tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="holds 1 token\\(s\\); at least 2 are needed"):
        evaluate(model, tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="evaluate: batch_size must be an integer >= 1 \\(got 0\\)"):
        evaluate(model, text_files[0], batch_size=0)


def test_complete_on_cllm_sources():
    model = tiny_lm.source_model()
    r = complete(model, tiny_lm.SOURCES, positions=6, seed=1, max_new_tokens=24, examples=3)
    assert r["positions"] == 6 and len(r["examples"]) == 3
    assert 0 <= r["exact_match"] <= r["similarity"] <= 1 or r["exact_match"] == 0
    for case in r["examples"]:
        lines = open(case["file"], encoding="utf-8").read().split("\n")
        assert lines[case["line"] - 1].strip() == case["target"] and "\n" not in case["predicted"]
    again = complete(model, tiny_lm.SOURCES, positions=6, seed=1, max_new_tokens=24, examples=3)
    assert again["examples"] == r["examples"]
    with pytest.raises(ValueError, match="complete: positions must be an integer >= 1"):
        complete(model, tiny_lm.SOURCES, positions=0)
    with pytest.raises(ValueError, match="complete: source .*nope.py does not exist"):
        complete(model, ["nope.py"])


# --- the commands ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "code.cllm"
    tiny_lm.code_model().save(path)
    return str(path)


def test_cli_generate(model_file, capsys):
    model = cllm.load(model_file)
    assert cli.main(["generate", model_file, "--prompt", "def", "--temperature", "0", "--max-tokens", "30"]) == 0
    expected = model.generate("def", 30, temperature=0)
    assert capsys.readouterr().out == expected + "\n"
    args = ["generate", model_file, "--prompt", "def", "--max-tokens", "30", "--seed", "4", "--top-k", "5",
            "--top-p", "0.9", "--temperature", "1.5", "--repetition-penalty", "1.1", "--threads", "1"]
    assert cli.main(args + ["--stream"]) == 0
    streamed = capsys.readouterr().out
    assert cli.main(args) == 0
    assert capsys.readouterr().out == streamed == model.generate("def", 30, temperature=1.5, top_k=5, top_p=0.9,
                                                                 repetition_penalty=1.1, seed=4) + "\n"
    assert cli.main(["generate", model_file, "--prompt", "def add(a, b):\n", "--temperature", "0", "--max-tokens", "8",
                     "--token-healing"]) == 0
    assert capsys.readouterr().out == model.generate("def add(a, b):\n", 8, temperature=0, token_healing=True) + "\n"
    assert cli.main(["generate", model_file, "--prompt", "def", "--top-p", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cllm generate: error: top_p must be") and err.count("\n") == 1


def test_cli_eval_and_complete(model_file, text_files, capsys):
    assert cli.main(["eval", model_file, "--data", str(text_files[0])]) == 0
    out = capsys.readouterr().out
    assert "bits/byte" in out and "xz -9e" in out and "top-5" in out
    assert cli.main(["eval", model_file, "--data", str(text_files[0] / "doc0.py"), "--json", "--max-tokens", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == 20
    source = str(tiny_lm.SOURCES[0])
    assert cli.main(["complete", model_file, "--source", source, "--positions", "3", "--max-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "3 held-out lines" in out and "expected:" in out and "predicted:" in out
    for healing in ("--token-healing", "--no-token-healing"):
        assert cli.main(["complete", model_file, "--source", source, "--positions", "2", "--json", healing]) == 0
        expected = complete(cllm.load(model_file), source, positions=2, token_healing=healing == "--token-healing")
        got = json.loads(capsys.readouterr().out)
        assert got["positions"] == 2 and got["examples"] == expected["examples"]
    assert cli.main(["eval", model_file, "--data", "no/such/path"]) == 2
    assert "does not exist" in capsys.readouterr().err
