#!/usr/bin/env python3
"""Reference numbers for BENCHMARKS.md: the same SmolLM2 GGUF, prompt and
greedy settings as examples/bench_local.rs, run by llama.cpp through
llama-cpp-python (`pip install llama-cpp-python`). Prints one JSON line.

Usage: scripts/bench-llamacpp.py [--model models/...gguf] [--rounds 5] [--max-tokens 64] [--threads 2]
llama-cpp-python runs one sequence at a time, so this measures concurrency 1.
"""
import argparse
import json
import statistics
import time

from llama_cpp import Llama

PROMPT = "Card 4111 1111 1111 1111 was charged twice. Write three sentences about rivers."
SYSTEM = "You are a concise assistant."


def one(llm, max_tokens):
    # llama-cpp-python reuses the KV cache of a matching prompt prefix; the
    # other paths read the whole prompt every time, so this must too.
    llm.reset()
    started = time.perf_counter()
    ttft = None
    tokens = 0
    for chunk in llm.create_chat_completion(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
    ):
        delta = chunk["choices"][0]["delta"]
        if delta.get("content"):
            if ttft is None:
                ttft = time.perf_counter() - started
            tokens += 1
    return ttft, time.perf_counter() - started, tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    llm = Llama(model_path=args.model, n_ctx=8192, n_threads=args.threads, verbose=False)
    one(llm, 8)  # warm-up
    samples = [one(llm, args.max_tokens) for _ in range(args.rounds)]
    ttft = sorted(s[0] * 1000 for s in samples)
    decode = sorted((s[2] - 1) / (s[1] - s[0]) for s in samples if s[2] > 1)
    print(json.dumps({
        "mode": "llama.cpp",
        "concurrency": 1,
        "requests": len(samples),
        "max_tokens": args.max_tokens,
        "ttft_ms_p50": statistics.median(ttft),
        "ttft_ms_mean": statistics.mean(ttft),
        "decode_tok_s_per_stream_p50": statistics.median(decode) if decode else 0.0,
        "completion_tokens": sum(s[2] for s in samples),
    }))


if __name__ == "__main__":
    main()
