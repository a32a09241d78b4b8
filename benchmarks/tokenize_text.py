"""Tokenize throughput on 10,000 Twitter-style tweets.

Ours: `pipeline.tokenization.tokenize_tweets` (one batched fast-tokenizer call on the
pre-split words, then word-piece alignment from the word ids). Baseline: the loop the
published MNER code bases use, `tokenizer.tokenize(word)` once per word, then ids.
Both run on the same tweets with the same tokenizer in this one process; the ratio is
what to quote. The final line is JSON.

    .venv/bin/python benchmarks/tokenize_text.py [--tweets 10000] [--repeats 3]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the project root

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402


def per_word_baseline(tweets, tokenizer, max_length):
    rows = []
    for tweet in tweets:
        pieces, starts = [tokenizer.cls_token], []
        for word in tweet.words:
            starts.append(len(pieces))
            word_pieces = tokenizer.tokenize(word) or [tokenizer.unk_token]
            pieces.extend(word_pieces)
        pieces = pieces[: max_length - 1] + [tokenizer.sep_token]
        rows.append((tokenizer.convert_tokens_to_ids(pieces), starts))
    return rows


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tweets", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from pipeline.conll import write_conll
    from pipeline.tokenization import load_tokenizer, tokenize_tweets
    from pipeline.vocab import build_vocab
    from tests.helpers import twitter_style_tweets

    tweets = twitter_style_tweets(args.tweets, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        write_conll(tweets, Path(tmp) / "data" / "train.txt")
        build_vocab(Path(tmp) / "data", Path(tmp) / "tok", vocab_size=8000)
        tokenizer = load_tokenizer(str(Path(tmp) / "tok"))

    words = [t.words for t in tweets]
    call = lambda: tokenizer(words, is_split_into_words=True, add_special_tokens=False,  # noqa: E731
                             return_attention_mask=False, return_token_type_ids=False)
    tokenizer_s = best_of(args.repeats, call)
    ours_s = best_of(args.repeats, lambda: tokenize_tweets(tweets, tokenizer, 128, "bioes", "train"))
    baseline_s = best_of(args.repeats, lambda: per_word_baseline(tweets, tokenizer, 128))
    n_words = sum(len(w) for w in words)
    result = {
        "benchmark": "tokenize",
        "tweets": len(tweets),
        "words": n_words,
        "tokenizer_call_s": round(tokenizer_s, 4),
        "ours_total_s": round(ours_s, 4),
        "ours_tweets_per_s": round(len(tweets) / ours_s),
        "per_word_baseline_s": round(baseline_s, 4),
        "per_word_baseline_tweets_per_s": round(len(tweets) / baseline_s),
        "speedup_vs_per_word": round(baseline_s / ours_s, 2),
        "repeats": args.repeats,
    }
    print(f"{len(tweets)} tweets, {n_words} words: batched tokenizer call {tokenizer_s:.3f} s, "
          f"ours in all {ours_s:.3f} s ({result['ours_tweets_per_s']} tweets/s), "
          f"per-word baseline {baseline_s:.3f} s -> {result['speedup_vs_per_word']}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
