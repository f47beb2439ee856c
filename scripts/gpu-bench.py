#!/usr/bin/env python3
"""Checks and measures a running `sluice serve` whose policy keeps every
request local: the four ways a client can ask (OpenAI and Anthropic wire
formats, streamed and not), then time to first token and tokens per second
at each concurrency, all requests streamed.

Standard library only: it runs on the GPU machine's Python as it is.

    scripts/gpu-bench.py --url http://127.0.0.1:8080 --out bench.json \
        --concurrency 1,8,32 --max-tokens 128 --rounds 2

Each concurrency level runs `rounds` waves of `c` requests sent at once;
a wave ends when its last answer does. Per request: TTFT (sending to the
first text delta), completion tokens (the answer's own usage count) and
decode rate (tokens after the first over the time after the first). Per
level: aggregate tokens per second = all completion tokens of all waves /
the waves' summed wall time. Exits 1 when a check fails.
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

PROMPTS_FILE = "gpu-prompts.json"


def load_prompts(path):
    with open(path) as f:
        data = json.load(f)
    return data["system"], data["prompts"]


class Client:
    def __init__(self, url, timeout):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port or 80
        self.timeout = timeout

    def post(self, path, body, headers=None):
        """Send a POST; return (connection, response). The caller reads the
        body and closes the connection."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        h = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
        h.update(headers or {})
        conn.request("POST", path, body=json.dumps(body).encode(), headers=h)
        return conn, conn.getresponse()


def sse(resp):
    """Yield (event, data) for each server-sent event as it arrives."""
    event, data = None, []
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.decode().rstrip("\r\n")
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def openai_body(system, prompt, max_tokens, stream):
    body = {
        "model": "gpt-4o-mini",
        "stream": stream,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def anthropic_body(system, prompt, max_tokens, stream):
    return {
        "model": "claude-sonnet-4-5",
        "stream": stream,
        "max_tokens": max_tokens,
        "temperature": 0,
        "system": system,
        "messages": [{"role": "user", "content": prompt}],
    }


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def check_formats(client, system, prompt, max_tokens):
    """One request each way; every answer must come from the local model."""
    results = []

    def head(resp, name):
        expect(resp.status == 200, f"{name}: status {resp.status}")
        route = resp.getheader("x-sluice-route")
        expect(route == "local", f"{name}: x-sluice-route is {route!r}, not 'local'")

    conn, resp = client.post("/v1/chat/completions", openai_body(system, prompt, max_tokens, False))
    head(resp, "openai")
    a = json.loads(resp.read())
    conn.close()
    text = a["choices"][0]["message"]["content"]
    expect(text.strip(), "openai: empty answer")
    expect(a["usage"]["completion_tokens"] > 0, "openai: no completion tokens")
    results.append({"format": "openai", "stream": False, "model": a["model"], "tokens": a["usage"]["completion_tokens"]})

    conn, resp = client.post("/v1/chat/completions", openai_body(system, prompt, max_tokens, True))
    head(resp, "openai stream")
    text, usage, done, model = "", None, False, None
    for _, data in sse(resp):
        if data == "[DONE]":
            done = True
            break
        c = json.loads(data)
        model = c.get("model", model)
        for ch in c.get("choices", []):
            text += ch.get("delta", {}).get("content") or ""
        usage = c.get("usage") or usage
    conn.close()
    expect(done, "openai stream: no [DONE]")
    expect(text.strip(), "openai stream: empty answer")
    expect(usage and usage["completion_tokens"] > 0, "openai stream: no usage chunk")
    results.append({"format": "openai", "stream": True, "model": model, "tokens": usage["completion_tokens"]})

    conn, resp = client.post("/v1/messages", anthropic_body(system, prompt, max_tokens, False))
    head(resp, "anthropic")
    a = json.loads(resp.read())
    conn.close()
    expect(a["type"] == "message" and a["content"][0]["text"].strip(), "anthropic: empty answer")
    expect(a["usage"]["output_tokens"] > 0, "anthropic: no output tokens")
    results.append({"format": "anthropic", "stream": False, "model": a["model"], "tokens": a["usage"]["output_tokens"]})

    conn, resp = client.post("/v1/messages", anthropic_body(system, prompt, max_tokens, True))
    head(resp, "anthropic stream")
    names, text, out_tokens, model = [], "", 0, None
    for name, data in sse(resp):
        names.append(name)
        v = json.loads(data)
        if name == "message_start":
            model = v["message"]["model"]
        elif name == "content_block_delta":
            text += v["delta"].get("text", "")
        elif name == "message_delta":
            out_tokens = v["usage"]["output_tokens"]
    conn.close()
    expect(names[:1] == ["message_start"] and names[-1:] == ["message_stop"], f"anthropic stream: events {names[:3]}..{names[-2:]}")
    expect(text.strip(), "anthropic stream: empty answer")
    expect(out_tokens > 0, "anthropic stream: no output tokens")
    results.append({"format": "anthropic", "stream": True, "model": model, "tokens": out_tokens})
    return results


def one_streamed(client, system, prompt, max_tokens):
    """One streamed OpenAI request, timed."""
    start = time.perf_counter()
    conn, resp = client.post("/v1/chat/completions", openai_body(system, prompt, max_tokens, True))
    if resp.status != 200:
        body = resp.read()[:300]
        conn.close()
        return {"error": f"status {resp.status}: {body!r}"}
    first = last = None
    usage = None
    for _, data in sse(resp):
        if data == "[DONE]":
            break
        c = json.loads(data)
        for ch in c.get("choices", []):
            if ch.get("delta", {}).get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
        usage = c.get("usage") or usage
    conn.close()
    end = time.perf_counter()
    if first is None or not usage:
        return {"error": "no text or no usage"}
    n = usage["completion_tokens"]
    decode = (n - 1) / (last - first) if n > 1 and last > first else None
    return {"ttft_s": first - start, "total_s": end - start, "tokens": n, "decode_tok_s": decode,
            "prompt_tokens": usage["prompt_tokens"]}


def wave(client, system, prompts, c, max_tokens, offset):
    results = [None] * c

    def run(i):
        try:
            results[i] = one_streamed(client, system, prompts[(offset + i) % len(prompts)], max_tokens)
        except Exception as e:  # a broken request is a result, not a crash
            results[i] = {"error": repr(e)}

    threads = [threading.Thread(target=run, args=(i,)) for i in range(c)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, results


def pct(values, p):
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def level(client, system, prompts, c, max_tokens, rounds):
    wall, requests = 0.0, []
    for r in range(rounds):
        took, results = wave(client, system, prompts, c, max_tokens, r * c)
        wall += took
        requests.extend(results)
    ok = [r for r in requests if "error" not in r]
    tokens = sum(r["tokens"] for r in ok)
    ttft = [r["ttft_s"] for r in ok]
    decode = [r["decode_tok_s"] for r in ok if r["decode_tok_s"]]
    return {
        "concurrency": c,
        "requests": len(requests),
        "errors": [r["error"] for r in requests if "error" in r][:5],
        "failed": len(requests) - len(ok),
        "completion_tokens": tokens,
        "wall_s": wall,
        "aggregate_tok_s": tokens / wall if wall > 0 else None,
        "ttft_p50_s": pct(ttft, 50),
        "ttft_p90_s": pct(ttft, 90),
        "decode_tok_s_per_stream_p50": pct(decode, 50),
        "mean_tokens_per_request": statistics.mean(r["tokens"] for r in ok) if ok else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--prompts", default=None, help=f"prompts JSON (default: {PROMPTS_FILE} beside this script)")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import os

    prompts_path = args.prompts or os.path.join(os.path.dirname(os.path.abspath(__file__)), PROMPTS_FILE)
    system, prompts = load_prompts(prompts_path)
    client = Client(args.url, args.timeout)
    report = {"max_tokens": args.max_tokens, "rounds": args.rounds, "prompts": len(prompts)}
    try:
        report["formats"] = check_formats(client, system, prompts[0], min(args.max_tokens, 32))
        print("checks: openai and anthropic, streamed and not, all answered locally", flush=True)
    except (CheckFailed, KeyError, IndexError, ValueError, OSError) as e:
        report["check_failed"] = f"{type(e).__name__}: {e}"
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"check failed: {report['check_failed']}", file=sys.stderr)
        return 1
    # One unmeasured request: the first generation on a device pays one-off
    # costs (kernel loading, allocator growth) that are not throughput.
    one_streamed(client, system, prompts[0], args.max_tokens)
    report["levels"] = []
    for c in [int(x) for x in args.concurrency.split(",")]:
        lv = level(client, system, prompts, c, args.max_tokens, args.rounds)
        report["levels"].append(lv)
        print(
            f"c={c}: {lv['aggregate_tok_s']:.1f} tok/s aggregate, TTFT p50 {lv['ttft_p50_s'] * 1000:.0f} ms, "
            f"decode p50 {lv['decode_tok_s_per_stream_p50'] or 0:.1f} tok/s/stream, {lv['failed']} failed"
            if lv["aggregate_tok_s"] and lv["ttft_p50_s"] is not None
            else f"c={c}: all {lv['requests']} requests failed: {lv['errors']}",
            flush=True,
        )
        with open(args.out, "w") as f:  # after each level: a timeout still leaves numbers
            json.dump(report, f, indent=2)
    return 1 if any(lv["failed"] for lv in report["levels"]) else 0


if __name__ == "__main__":
    sys.exit(main())
