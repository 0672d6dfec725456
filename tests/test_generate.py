"""Generation: the sampled distribution against the exact filtered one (chi-square), the KV cache against full
recomputation (same bits, same tokens), batches, seeds, long sequences, streaming text and stop strings, bad input."""

import math

import numpy as np
import pytest

import cllm
from cllm.model.decoder import Decoder
from cllm.model.generate import Sampling, window_start

import tiny_lm

# --- sampling ------------------------------------------------------------------------------------------------------

LOGITS = np.array([2.1, -0.4, 1.7, 0.3, -1.2, 1.95, 0.8, -0.1, 1.1, -2.0, 0.55, 1.4], np.float32)
SEEN = np.zeros(LOGITS.size, bool)
SEEN[[0, 4, 6]] = True  # two positive logits and a negative one, for the repetition penalty


def reference_distribution(logits, temperature=1.0, top_k=None, top_p=None, penalty=1.0, seen=()):
    """The filtered distribution, written out plainly in float64 (the oracle for cllm.generate.Sampling)."""
    z = [float(v) for v in logits]
    for i in np.flatnonzero(seen):
        z[i] = z[i] / penalty if z[i] > 0 else z[i] * penalty
    probs = np.zeros(len(z))
    if temperature == 0:
        probs[max(range(len(z)), key=lambda i: (z[i], -i))] = 1.0
        return probs
    z = [v / temperature for v in z]
    keep = sorted(range(len(z)), key=lambda i: (-z[i], i))[:top_k]
    total = sum(math.exp(z[i]) for i in keep)
    p = {i: math.exp(z[i]) / total for i in keep}
    if top_p is not None:
        nucleus, mass = [], 0.0
        for i in sorted(keep, key=lambda i: (-p[i], i)):
            nucleus.append(i)
            mass += p[i]
            if mass >= top_p:
                break
        p = {i: p[i] / mass for i in nucleus}
    for i, v in p.items():
        probs[i] = v
    return probs


def chi_square(counts, expected_probs):
    """(statistic, degrees of freedom) over the outcomes of non-zero expected probability."""
    n, support = counts.sum(), expected_probs > 0
    expected = n * expected_probs[support]
    return float(((counts[support] - expected) ** 2 / expected).sum()), int(support.sum()) - 1


def chi_square_critical(df, z=3.719):
    """The chi-square quantile at 1 - 1e-4 (z: the normal's), by the Wilson-Hilferty approximation."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


SETTINGS = [dict(temperature=0.7), dict(temperature=1.0, top_k=4), dict(temperature=1.0, top_p=0.6),
            dict(temperature=1.0, repetition_penalty=1.8), dict(temperature=1.3, top_k=7, top_p=0.8,
                                                                  repetition_penalty=1.3)]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_sampled_distribution_matches_exact_filtered_distribution(settings):
    sampling = Sampling(**settings)
    ref = reference_distribution(LOGITS, settings["temperature"], settings.get("top_k"), settings.get("top_p"),
                                 settings.get("repetition_penalty", 1.0), SEEN)
    ids, p = sampling.distribution(LOGITS, SEEN)
    exact = np.zeros(LOGITS.size)
    exact[ids] = p
    np.testing.assert_allclose(exact, ref, rtol=1e-12, atol=1e-15)
    rng = np.random.default_rng(7)
    draws = [sampling.sample(LOGITS, rng, SEEN) for _ in range(12_000)]
    counts = np.bincount(draws, minlength=LOGITS.size)
    assert not counts[ref == 0].any(), "a filtered-out token was drawn"
    stat, df = chi_square(counts, ref)
    assert stat < chi_square_critical(df), f"chi-square {stat:.1f} with {df} degrees of freedom"
    unfiltered = reference_distribution(LOGITS, 1.0)  # the test can tell a wrong distribution
    assert chi_square(counts, unfiltered)[0] > 10 * chi_square_critical(LOGITS.size - 1)


def test_greedy_ties_and_penalty():
    logits = np.array([1.0, 3.0, 3.0, -2.0], np.float32)
    assert Sampling(temperature=0).sample(logits, None) == 1  # the lower id of a tie
    seen = np.array([False, True, True, False])
    assert Sampling(temperature=0, repetition_penalty=4.0).sample(logits, None, seen) == 0
    ids, _ = Sampling(top_k=2).distribution(np.array([0.5, 2.0, 0.5, 0.5, 1.0]))
    assert ids.tolist() == [1, 4]
    ids, _ = Sampling(top_k=2).distribution(np.array([2.0, 0.5, 0.5, 0.5]))
    assert ids.tolist() == [0, 1]  # the tie at the 2nd place goes to the lower id
    ids, p = Sampling(top_p=1e-9).distribution(LOGITS)
    assert ids.tolist() == [int(np.argmax(LOGITS))] and p.tolist() == [1.0]  # at least one token


# --- the cache against recomputation ---------------------------------------------------------------------------------

ARCHS = {"gpt2": {}, "llama": dict(arch="llama", mlp_hidden=40),
         "llama qk_norm untied": dict(arch="llama", qk_norm=True, tie_embeddings=False)}


@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_logits_are_model_forward_bits(isa, arch):
    """Prefill and decode steps give exactly Model.forward's logits, rows of a batch at their own positions (for
    llama: each rotated at its own position)."""
    cfg = cllm.ModelConfig(vocab_size=37, context_length=13, d_model=24, n_layers=2, n_heads=3, **ARCHS[arch])
    model = cllm.Model(cfg, seed=1)
    model.params *= 4  # sharper logits than at initialisation
    if arch != "gpt2":  # llama's output projections start at 0: give them weights
        for name, w in model.state_dict().items():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                w[...] = np.random.default_rng(len(name)).standard_normal(w.shape) * 0.3
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 37, n) for n in (13, 6, 2)]
    first = [10, 2, 1]  # prompt lengths; the rest is decoded
    dec = Decoder(model, slots=3)
    for b, s in enumerate(seqs):
        np.testing.assert_array_equal(dec.prefill(b, s[:first[b]]), model.forward(s[None, :first[b]])[0, -1])
    for step in range(3):
        rows = [b for b in (2, 0, 1) if first[b] + step < seqs[b].size]
        logits = dec.decode(rows, [seqs[b][first[b] + step] for b in rows])
        for i, b in enumerate(rows):
            np.testing.assert_array_equal(logits[i], model.forward(seqs[b][None, :first[b] + step + 1])[0, -1])
    with pytest.raises(ValueError, match="Decoder.decode: slot 0 is full"):
        dec.decode([0], [1])


@pytest.mark.parametrize("prompt_len", [3, 40])  # 40 > the context of 24: the window slides from the start
def test_greedy_with_cache_equals_full_recomputation(prompt_len):
    model = tiny_lm.code_model()
    ids = model.tokenizer.encode(tiny_lm.CODE_TEXT * 3)[:prompt_len]
    cached = model.generate_ids(ids, 60, temperature=0)
    assert cached == model.generate_ids(ids, 60, temperature=0, use_cache=False)
    assert len(cached) == 60  # several slides of the window on the way
    sampled = dict(temperature=1.2, top_k=20, repetition_penalty=1.2, seed=5)
    assert model.generate_ids(ids, 40, **sampled) == model.generate_ids(ids, 40, **sampled, use_cache=False)


@pytest.mark.parametrize("arch", ARCHS)
def test_untrained_model_cache_equals_recomputation(arch):
    """Near-ties everywhere: only equal bits give equal tokens."""
    model = cllm.Model(cllm.ModelConfig(vocab_size=50, context_length=16, d_model=32, n_layers=2, n_heads=4,
                                        **ARCHS[arch]), seed=3)
    ids = [[1, 2, 3], [7] * 20]
    assert model.generate_ids(ids, 30, temperature=0) == model.generate_ids(ids, 30, temperature=0, use_cache=False)


def test_window_start():
    assert [window_start(n, 24) for n in (1, 24, 25, 30, 31, 36, 37)] == [0, 0, 6, 6, 12, 12, 18]
    assert all(0 < n - window_start(n, 24) <= 24 for n in range(1, 200))
    assert window_start(5, 1) == 4 and window_start(5, 3) == 2


def test_batch_rows_equal_single_prompts():
    model = tiny_lm.code_model()
    tok = model.tokenizer
    prompts = [tok.encode("def add"), tok.encode(tiny_lm.CODE_TEXT)[:30], tok.encode("    return")]
    batch = model.generate_ids(prompts, 25, temperature=0)
    assert batch == [model.generate_ids(p, 25, temperature=0) for p in prompts]
    sampled = model.generate_ids(prompts, 25, temperature=1.5, seed=11)
    assert sampled[0] == model.generate_ids(prompts[0], 25, temperature=1.5, seed=11)  # stream 0 either way
    assert model.generate(["def", "    ret"], 10, temperature=0) == [model.generate("def", 10, temperature=0),
                                                                     model.generate("    ret", 10, temperature=0)]


def test_seed_reproduces_and_stop_ids():
    model = tiny_lm.code_model()
    ids = model.tokenizer.encode("def")
    run = lambda seed: model.generate_ids(ids, 30, temperature=2.0, top_p=0.95, seed=seed)
    assert run(1) == run(1) and run(1) != run(2)
    greedy = model.generate_ids(ids, 30, temperature=0)
    stop = greedy[5]
    assert model.generate_ids(ids, 30, temperature=0, stop=[stop]) == greedy[:greedy.index(stop)]
    assert model.generate_ids(ids, 0) == [] and model.generate("def", 0) == ""


# --- text --------------------------------------------------------------------------------------------------------

def test_stream_never_splits_a_utf8_character():
    model = tiny_lm.byte_model()  # one token per byte: every non-ASCII character spans several tokens
    ids = model.generate_ids(model.tokenizer.encode("日本"), 50, temperature=0)
    text = model.tokenizer.decode_bytes(ids)
    assert any(b >= 0x80 for b in text)
    pieces = list(model.generate_stream("日本", 50, temperature=0))
    assert "".join(pieces) == model.generate("日本", 50, temperature=0) == model.tokenizer.decode(ids)
    assert len(pieces) > 10 and not any("\ufffd" in p for p in pieces[:-1])
    assert "".join(pieces).startswith("語のテキスト")


def test_stop_strings_and_special_tokens():
    model = tiny_lm.code_model()
    full = model.generate("def", 40, temperature=0)
    assert "\n" in full
    assert model.generate("def", 40, temperature=0, stop="\n") == full[:full.index("\n")]
    assert "".join(model.generate_stream("def", 40, temperature=0, stop=["return", "(a"])) == full[:full.index("(a")]
    byte = tiny_lm.byte_model()
    assert byte.generate("", 5, temperature=0)  # an empty prompt starts from <|endoftext|>


def healed_reference(model, prompt: str, n: int) -> str:
    """Token healing written out plainly: the prompt less its last token, the first token the most probable of
    those whose bytes start with that token's, then greedy; the text after the bytes taken back."""
    tok = model.tokenizer
    ids = tok.encode(prompt)
    taken = tok.token_bytes(ids[-1])
    kept = ids[:-1]
    logits = model.forward(np.array([kept[window_start(len(kept), model.config.context_length):]], np.int32))[0, -1]
    allowed = [i for i in range(tok.vocab_size) if i not in tok.special_tokens.values()
               and tok.token_bytes(i).startswith(taken)]
    first = max(allowed, key=lambda i: (logits[i], -i))
    rest = model.generate_ids(ids[:-1] + [first], n - 1, temperature=0)
    return (tok.token_bytes(first)[len(taken):] + tok.decode_bytes(rest)).decode("utf-8", errors="replace")


def test_token_healing_equals_its_plain_reference():
    model = tiny_lm.code_model()
    text = tiny_lm.CODE_TEXT * 2
    prompts = [text[:k] for k in range(30, 75)]  # cut everywhere: inside tokens, at line starts, mid-indent
    healed = model.generate(prompts, 6, temperature=0, token_healing=True)
    assert healed == [healed_reference(model, p, 6) for p in prompts]
    assert healed != model.generate(prompts, 6, temperature=0)
    assert "".join(model.generate_stream(prompts[7], 6, temperature=0, token_healing=True)) == healed[7]
    sampled = model.generate(prompts[:3], 6, temperature=1.2, seed=3, token_healing=True)  # row 0: stream 0
    assert sampled[0] == model.generate(prompts[0], 6, temperature=1.2, seed=3, token_healing=True)
    one_token = model.tokenizer.decode([model.tokenizer.encode("def")[0]])  # nothing to take back from
    assert model.generate(one_token, 6, temperature=0, token_healing=True) == model.generate(one_token, 6,
                                                                                          temperature=0)
    ends_special = "def<|endoftext|>"
    assert model.generate(ends_special, 6, temperature=0, token_healing=True) == model.generate(ends_special, 6,
                                                                                             temperature=0)
    with pytest.raises(ValueError, match="token_healing must be True or False"):
        model.generate("def", 5, token_healing="yes")


def test_bad_arguments_name_themselves():
    model = tiny_lm.code_model()
    ids = [1, 2]
    for kwargs, match in [(dict(top_p=0.0), "top_p must be None or a number in \\(0, 1\\] \\(got 0.0\\)"),
                          (dict(top_p=1.5), "top_p must be"),
                          (dict(temperature=-1), "temperature must be a number >= 0"),
                          (dict(temperature=float("nan")), "temperature must be"), (dict(top_k=0), "top_k must be"),
                          (dict(repetition_penalty=0), "repetition_penalty must be a number > 0"),
                          (dict(seed=-1), "seed must be None or an integer >= 0"), (dict(stop=[1000]), "stop must be")]:
        with pytest.raises(ValueError, match=match):
            model.generate_ids(ids, 5, **kwargs)
    V = model.config.vocab_size
    with pytest.raises(ValueError, match=rf"generate_ids: ids\[1\] = {V} is outside \[0, {V}\)"):
        model.generate_ids([1, V], 5)
    with pytest.raises(ValueError, match=r"generate_ids: ids\[1\]\[0\] = -1 is outside"):
        model.generate_ids([[1], [-1]], 5)
    with pytest.raises(ValueError, match="ids must be a non-empty sequence of token ids"):
        model.generate_ids([], 5)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 0"):
        model.generate_ids(ids, -1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'topk'"):
        model.generate("def", 5, topk=3)
    with pytest.raises(ValueError, match="stop must be a non-empty string"):
        model.generate("def", 5, stop="")
    with pytest.raises(ValueError, match="top_p must be"):
        model.generate_stream("def", 5, top_p=2)  # at the call, not at the first piece
    bare = cllm.Model(model.config)
    with pytest.raises(ValueError, match="the model has no tokenizer"):
        bare.generate("def")
    bare.tokenizer = cllm.Tokenizer([], special_tokens=())
    with pytest.raises(ValueError, match="prompt is empty and the tokenizer has no <\\|endoftext\\|> token"):
        bare.generate("")
