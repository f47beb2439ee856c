#!/usr/bin/env python3
"""Presidio's analyzer on the same labelled data and with the same metrics as
`cargo run --release --example eval_pii -- FILE`, for comparison.

    python3 -m pip install presidio-analyzer  (plus a spaCy English model)
    python3 scripts/eval-presidio.py [--model NAME] [--threshold 0.4] FILE

Handles presidio-research JSON (`[{full_text, spans}]`). Entities are
matched by character-span overlap with a gold span of the same type; the
pattern entities sluice detects are reported apart from those needing NER.
Also prints analyzer time per text and per 1,000 tokens (4,000 chars).
"""
import argparse
import json
import time
from collections import defaultdict

# The entity types sluice has detectors for (see examples/eval_pii.rs).
PATTERN_ENTITIES = {
    "EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE", "IP_ADDRESS",
    "MAC_ADDRESS", "UK_NINO", "DATE_TIME", "US_PASSPORT", "US_DRIVER_LICENSE",
    "ABA_ROUTING_NUMBER", "CRYPTO",
}
# Presidio's names for dataset types that differ.
PRESIDIO_TO_DATASET = {"LOCATION": "GPE", "NRP": "NRP", "ORGANIZATION": "ORGANIZATION"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--model", default="en_core_web_sm")
    ap.add_argument("--threshold", type=float, default=0.4)
    args = ap.parse_args()

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": args.model}],
    }).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp, supported_languages=["en"])

    items = json.load(open(args.file))
    counts = defaultdict(lambda: [0, 0, 0, 0])  # gold, gold_found, predicted, correct
    total_chars = 0
    elapsed = 0.0
    for item in items:
        text = item["full_text"]
        gold = [(s["entity_type"], s["start_position"], s["end_position"]) for s in item["spans"]]
        t0 = time.perf_counter()
        results = analyzer.analyze(text=text, language="en", score_threshold=args.threshold)
        elapsed += time.perf_counter() - t0
        total_chars += len(text)
        pred = [(PRESIDIO_TO_DATASET.get(r.entity_type, r.entity_type), r.start, r.end) for r in results]
        overlaps = lambda a, b: a[1] < b[2] and b[1] < a[2]
        for g in gold:
            c = counts[g[0]]
            c[0] += 1
            c[1] += any(p[0] == g[0] and overlaps(p, g) for p in pred)
        for p in pred:
            c = counts[p[0]]
            c[2] += 1
            c[3] += any(g[0] == p[0] and overlaps(p, g) for g in gold)

    def ratio(a, b):
        return a / b if b else 0.0

    def row(name, c):
        p, r = ratio(c[3], c[2]), ratio(c[1], c[0])
        f = 2 * p * r / (p + r) if p + r else 0.0
        print(f"| {name} | {c[0]} | {c[1]} | {c[2]} | {c[3]} | {p:.3f} | {r:.3f} | {f:.3f} |")

    print(f"\n## Presidio ({args.model}, threshold {args.threshold}) on {args.file}\n")
    print("| entity | gold | found | predicted | correct | precision | recall | F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    pattern = [0, 0, 0, 0]
    for e in sorted(counts):
        if e in PATTERN_ENTITIES:
            row(e, counts[e])
            pattern = [a + b for a, b in zip(pattern, counts[e])]
    row("**pattern entities, micro**", pattern)
    print("\nOther entities (NER and types sluice does not detect):\n")
    print("| entity | gold | found | predicted | correct | precision | recall | F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    allc = [0, 0, 0, 0]
    for e in sorted(counts):
        allc = [a + b for a, b in zip(allc, counts[e])]
        if e not in PATTERN_ENTITIES:
            row(e, counts[e])
    row("**all entities, micro**", allc)
    per_text = elapsed / max(len(items), 1)
    per_1k_tokens = elapsed / max(total_chars, 1) * 4000
    print(f"\n{len(items)} texts, {total_chars} chars, {elapsed:.2f} s: "
          f"{per_text * 1e3:.2f} ms per text, {per_1k_tokens * 1e3:.2f} ms per 1,000 tokens (4,000 chars).")


if __name__ == "__main__":
    main()
