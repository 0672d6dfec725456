"""llama.cpp itself (through llama-cpp-python, from ``.[peers]``) runs what ``cllm export --to gguf`` writes.
Not in the default run (it needs a build of llama.cpp): ``pytest -m llama_cpp``. docs/interop.md has the figures
for the pipeline's model (benchmarks/gguf_agreement.py)."""

import numpy as np
import pytest

import cllm
from interop_models import PROMPTS, VARIANTS, held_out_texts, saved, trained

pytestmark = pytest.mark.llama_cpp
llama_cpp = pytest.importorskip("llama_cpp")

F32 = 0  # GGML_TYPE_F32: a float32 KV cache, so that f32 logits are not rounded through llama.cpp's f16 cache


def _llama(path, ctx: int, f32_cache: bool):
    cache = {"type_k": F32, "type_v": F32} if f32_cache else {}
    return llama_cpp.Llama(str(path), n_ctx=ctx, n_batch=ctx, n_threads=2, logits_all=True, verbose=False, **cache)


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_llama_cpp_loads_tokenizes_and_decodes_like_cllm(tmp_path, variant, pattern):
    gguf = tmp_path / "m.gguf"
    cllm.export(saved(tmp_path, variant, pattern), gguf, to="gguf", dtype="f32")
    model = trained(variant, pattern)
    llm = _llama(gguf, 64, f32_cache=True)
    for text in held_out_texts():
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == model.tokenizer.encode(text)
    for prompt in PROMPTS:
        ids = model.tokenizer.encode(prompt)
        ours = model.generate_ids(ids, 24, temperature=0)
        llm.reset()
        theirs = []
        for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            if len(theirs) == len(ours) or token == llm.token_eos():
                break
            theirs.append(token)
        assert theirs == ours[:len(theirs)] and (len(theirs) == len(ours) or ours[len(theirs)] == llm.token_eos())


@pytest.mark.parametrize("dtype, floor", [("f16", 0.97), ("q8_0", 0.9)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_llama_cpp_half_and_q8_0_agree_with_f32(tmp_path, variant, dtype, floor):
    """Top-1 agreement of llama.cpp's next-token choice with cllm's f32 logits over held-out text. The floor is a
    sanity check for these 60-step models, not the 99% target (measured on the pipeline's model)."""
    gguf = tmp_path / "m.gguf"
    cllm.export(saved(tmp_path, variant), gguf, to="gguf", dtype=dtype)
    model = trained(variant)
    llm = _llama(gguf, 64, f32_cache=False)
    same = total = 0
    for text in held_out_texts():
        ids = model.tokenizer.encode(text)[:64]
        llm.reset()
        llm.eval(ids)
        theirs = np.array(llm.scores[:len(ids), :model.config.vocab_size]).argmax(-1)
        ours = model.forward(np.array([ids], np.int32))[0].argmax(-1)
        same, total = same + int((theirs == ours).sum()), total + len(ids)
    print(f"{variant} {dtype}: top-1 agreement {same / total:.4f} over {total} positions")
    assert same / total >= floor
