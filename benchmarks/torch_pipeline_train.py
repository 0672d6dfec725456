"""The PyTorch peer of ``cllm pipeline``'s train stage: the same model, data, recipe and wall time, in PyTorch, scored
by the same evaluation. It answers whether cllm's kernel speed shows up as model quality.

    python benchmarks/torch_pipeline_train.py --workdir cllm-run --seconds 836 --out /tmp/torch-peer [--threads 2]

``--workdir`` is a finished ``cllm pipeline`` folder run with the default recipe (PipelineOptions): its ``tokens/`` are
the data and its ``model/model.cllm`` gives the model configuration. Same as cllm's run:

- the weights start from ``cllm.Model(config, seed=0)`` (copied into benchmarks/peers/torch_llama.py's Llama);
- the steps read the same windows in the same order (cllm's ``Windows.epoch_order``), cut into the same shorter
  sequences early on (``seq_len_at`` of the run's progress by time);
- ``torch.optim.Muon`` (momentum 0.95, Nesterov, 5 Newton–Schulz steps, lr·√max(1, A/B), weight decay 0.1) for the
  hidden matrices, ``torch.optim.AdamW`` (betas 0.9/0.95, eps 1e-8; weight decay 0.1 on the embedding and head, none
  on the norms) for the rest, global-norm clipping to 1.0 first;
- warmup then cosine by time to lr/10 at the end of ``--seconds`` (cllm's ``_lr`` with a time budget);
- attention: ``F.scaled_dot_product_attention``; threads: ``torch.set_num_threads``.

The peer does not evaluate during training (cllm does, ten times, inside its budget), so the comparison slightly
favours it. At the end its weights are copied back into a cllm model with the run's tokenizer, written to
``--out/model.cllm`` and scored by ``cllm.evaluate`` on the same held-out tokens as the pipeline's evaluate stage;
one JSON line is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers.torch_llama import Llama  # noqa: E402


def main() -> int:
    import cllm
    from cllm.evaluate.metrics import evaluate
    from cllm.optim import lr_at
    from cllm.optim.muon import is_hidden_matrix
    from cllm.pipeline import EVAL_TOKENS, PipelineOptions
    from cllm.tokenizer.shards import TokenData
    from cllm.train.batches import Windows, seq_len_at, split_windows
    from cllm.train.config import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="a finished cllm pipeline folder")
    p.add_argument("--seconds", type=float, required=True, help="training wall time (cllm's train stage's)")
    p.add_argument("--out", required=True, help="folder for model.cllm and metrics.jsonl")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    work, out = Path(args.workdir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    cllm.set_num_threads(args.threads)
    o, t = PipelineOptions(), TrainConfig()
    reference = cllm.load(work / "model" / "model.cllm")
    cfg = reference.config
    data = TokenData(work / "tokens")
    windows = Windows(data.train, o.seq_len)
    steps_per_epoch = len(windows) // o.batch_size
    planned = 100 * steps_per_epoch  # the pipeline's epochs=100: the time budget ends the run
    min_lr = o.lr / 10

    start_model = cllm.Model(cfg, seed=t.seed)
    net = Llama(cfg)
    net.load_from_numpy(start_model.state_dict())
    named = dict(net.named_parameters())
    hidden = [w for n, w in named.items() if is_hidden_matrix(n, tuple(w.shape))]
    decayed = [w for n, w in named.items() if not is_hidden_matrix(n, tuple(w.shape)) and "norm" not in n]
    plain = [w for n, w in named.items() if not is_hidden_matrix(n, tuple(w.shape)) and "norm" in n]
    muon = torch.optim.Muon(hidden, lr=o.muon_lr, weight_decay=t.weight_decay, momentum=0.95, nesterov=True,
                            ns_steps=5, adjust_lr_fn="original")
    adamw = torch.optim.AdamW([{"params": decayed, "weight_decay": t.weight_decay},
                               {"params": plain, "weight_decay": 0.0}], lr=o.lr, betas=(0.9, 0.95), eps=1e-8)

    def scheduled_lr(step: int, elapsed: float) -> float:  # cllm's Trainer._lr with a time budget
        if step >= o.warmup:
            step = max(step, o.warmup + round(min(1.0, elapsed / args.seconds) * (planned - o.warmup)))
        return lr_at(step, lr=o.lr, warmup=o.warmup, max_steps=planned, min_lr=min_lr)

    metrics = open(out / "metrics.jsonl", "w", encoding="utf-8")
    step, order, order_epoch, tokens = 0, None, None, 0
    began = time.perf_counter()
    while (elapsed := time.perf_counter() - began) < args.seconds:
        epoch, k = divmod(step, steps_per_epoch)
        if order_epoch != epoch:
            order, order_epoch = windows.epoch_order(t.seed, epoch), epoch
        lr = scheduled_lr(step, elapsed)
        length = seq_len_at(max(step / planned, elapsed / args.seconds), o.seq_len, o.seq_len_start,
                            t.seq_len_warmup)
        x, y = split_windows(*windows.batch(order[k * o.batch_size:(k + 1) * o.batch_size]), length)
        x, y = torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64))
        _, loss = net(x, y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), t.grad_clip)
        for group in adamw.param_groups:
            group["lr"] = lr
        for group in muon.param_groups:
            group["lr"] = o.muon_lr * lr / o.lr
        adamw.step()
        muon.step()
        adamw.zero_grad(set_to_none=True)
        muon.zero_grad(set_to_none=True)
        step, tokens = step + 1, tokens + o.batch_size * o.seq_len
        metrics.write(json.dumps({"type": "step", "step": step, "loss": float(loss.detach()), "lr": lr, "seq_len": length,
                                  "grad_norm": float(norm), "elapsed": time.perf_counter() - began}) + "\n")
    seconds = time.perf_counter() - began
    metrics.close()

    trained = cllm.Model(cfg, seed=t.seed)
    for name, w in trained.state_dict().items():
        w[...] = named[name].detach().numpy()
    trained.tokenizer = data.tokenizer
    trained.save(out / "model.cllm")
    result = evaluate(trained, work / "tokens", max_tokens=EVAL_TOKENS)
    print(json.dumps({"impl": "torch", "threads": args.threads, "steps": step, "tokens": tokens,
                      "seconds": round(seconds, 1), "tokens_per_s": round(tokens / seconds),
                      "bits_per_byte": result["bits_per_byte"], "loss": result["loss"],
                      "perplexity": result["perplexity"], "top1": result["top1"], "top5": result["top5"],
                      "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
