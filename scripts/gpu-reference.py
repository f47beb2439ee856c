#!/usr/bin/env python3
"""The reference for scripts/gpu-bench.py: the same GGUF model, prompts,
greedy decoding and token budget, run by PyTorch and transformers (which
read the GGUF through the `gguf` package and dequantize it), at the same
concurrency levels, each level as static batches of `c` prompts
(`model.generate` on a left-padded batch).

    scripts/gpu-reference.py --model models/X.gguf --device cuda \
        --concurrency 1,8,32 --max-tokens 128 --rounds 2 --out reference.json

Numbers per level, named as gpu-bench.py names them: aggregate tokens per
second (all generated tokens / summed batch wall time), TTFT (batch start
to the first decoding step's end, which every row shares) and per-row
decode rate (tokens after the first / time after the first step). A row's
tokens end at its first end-of-sequence token.
"""

import argparse
import json
import os
import statistics
import sys
import time


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--prompts", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu-prompts.json"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default=None, help="bfloat16 | float16 | float32 (default: bfloat16 on cuda, float32 on cpu)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    with open(args.prompts) as f:
        data = json.load(f)
    system, prompts = data["system"], data["prompts"]

    directory, name = os.path.split(os.path.abspath(args.model))
    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=dtype).to(args.device).eval()
    sync()
    load_s = time.perf_counter() - started
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    eos = tok.eos_token_id

    class FirstStep(StoppingCriteria):
        """Notes when the first new token exists; never stops anything."""

        def __init__(self):
            self.at = None

        def __call__(self, input_ids, scores, **kwargs):
            if self.at is None:
                sync()
                self.at = time.perf_counter()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def encode(batch):
        texts = [
            tok.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": p}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for p in batch
        ]
        return tok(texts, return_tensors="pt", padding=True).to(args.device)

    def generate(batch, max_tokens):
        inputs = encode(batch)
        clock = FirstStep()
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                stopping_criteria=StoppingCriteriaList([clock]),
            )
        sync()
        end = time.perf_counter()
        new = out[:, inputs["input_ids"].shape[1] :].tolist()
        counts = []
        for row in new:
            n = len(row)
            if eos in row:
                n = row.index(eos)
            counts.append(n)
        return start, clock.at, end, counts

    generate(prompts[:1], 8)  # warm-up: kernels, allocator
    report = {
        "engine": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "dtype": str(dtype).replace("torch.", ""),
        "load_s": load_s,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "levels": [],
    }
    for c in [int(x) for x in args.concurrency.split(",")]:
        wall, tokens, ttft, decode, rows = 0.0, 0, [], [], []
        for r in range(args.rounds):
            batch = [prompts[(r * c + i) % len(prompts)] for i in range(c)]
            start, first, end, counts = generate(batch, args.max_tokens)
            wall += end - start
            tokens += sum(counts)
            rows.extend(counts)
            ttft.extend([first - start] * c)
            decode.extend((n - 1) / (end - first) for n in counts if n > 1 and end > first)
        lv = {
            "concurrency": c,
            "requests": c * args.rounds,
            "completion_tokens": tokens,
            "wall_s": wall,
            "aggregate_tok_s": tokens / wall if wall > 0 else None,
            "ttft_p50_s": pct(ttft, 50),
            "ttft_p90_s": pct(ttft, 90),
            "decode_tok_s_per_stream_p50": pct(decode, 50),
            "mean_tokens_per_request": statistics.mean(rows) if rows else None,
        }
        report["levels"].append(lv)
        print(
            f"reference c={c}: {lv['aggregate_tok_s']:.1f} tok/s aggregate, TTFT p50 {lv['ttft_p50_s'] * 1000:.0f} ms, "
            f"decode p50 {lv['decode_tok_s_per_stream_p50'] or 0:.1f} tok/s/row",
            flush=True,
        )
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
