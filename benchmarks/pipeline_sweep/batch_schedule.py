"""batch_schedule.py STEPS THREADS B0 B1 SWITCH: the default's training with a batch-size schedule, B0 windows of
512 tokens a step until the fraction SWITCH of the steps, then B1. The trainer has no batch schedule, so this is a
loop of cllm's own pieces as the trainer uses them (windows in epoch_order, cut by seq_len_at, warmup 50 + cosine
over STEPS, Muon + AdamW); with B0 = B1 = 8 it reproduces the trainer's run bit for bit."""

import sys
import time

import cllm
from cllm.evaluate.metrics import evaluate
from cllm.optim import Muon, lr_at
from cllm.tokenizer.shards import TokenData
from cllm.train.batches import Windows, seq_len_at, split_windows
from variants import DEFAULT, OUT, TOKENS, record

if __name__ == "__main__":
    steps, threads = int(sys.argv[1]), int(sys.argv[2])
    b0, b1, switch = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    name, T, start = f"batch_schedule_{b0}_{b1}_{switch:g}", DEFAULT["seq_len"], time.time()
    cllm.set_num_threads(threads)
    data = TokenData(TOKENS)
    cfg = cllm.ModelConfig(vocab_size=-(-data.tokenizer.vocab_size // 64) * 64, context_length=T, d_model=192,
                           n_layers=4, n_heads=3, arch="llama", qk_norm=True)
    model = cllm.Model(cfg, seed=0)
    model.tokenizer = data.tokenizer
    opt = Muon(model, lr=DEFAULT["muon_lr"], weight_decay=0.1, adamw_lr=DEFAULT["lr"], adamw_weight_decay=0.1,
               grad_clip=1.0)
    windows = Windows(data.train, T)
    epoch, used, tokens, order = 0, 0, 0, windows.epoch_order(0, 0)
    for step in range(steps):
        batch = b0 if step / steps < switch else b1
        if used + batch > len(order):
            epoch, used = epoch + 1, 0
            order = windows.epoch_order(0, epoch)
        x, y = windows.batch(order[used:used + batch])
        used, tokens = used + batch, tokens + batch * T
        loss = model.forward_backward(*split_windows(x, y, seq_len_at(step / steps, T, DEFAULT["seq_len_start"], 0.5)))
        opt.step(lr_at(step, lr=DEFAULT["lr"], warmup=DEFAULT["warmup"], max_steps=steps))
    (OUT / name).mkdir(parents=True, exist_ok=True)
    model.save(OUT / name / "model.cllm")
    m = evaluate(cllm.load(OUT / name / "model.cllm"), TOKENS, max_tokens=1 << 18)
    record({"name": name, "steps": steps, "tokens": tokens, "train_loss": loss,
            **{k: m[k] for k in ("bits_per_byte", "loss", "perplexity", "top1", "top5")},
            "seconds": round(time.time() - start)}, "points.jsonl")
