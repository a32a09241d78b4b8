"""A synthetic tweet corpus in which the image matters (`maf-pipe make-sample`).

Recipe (explained for users in data/README.md):

- Image-decided tweets (about 35%): an ambiguous name ("Rob", "Jordan", "Phoenix", ...) in
  a neutral context ("Handsome Rob after a fish dinner"), so the text cannot tell its type.
  The type is drawn at random and the image shows its cue class: a person (PER), a
  landscape (LOC), a building (ORG) or an animal (MISC), like the cat in the paper's
  Figure 1. These entities are listed in `annotations.jsonl` as image-decided.
- Text-decided tweets: unambiguous names in typed contexts ("flying to London tomorrow").
  About a third of all tweets come with an unrelated image (food, a screenshot, noise, or
  the cue class of a type absent from the tweet); the rest show the cue class of their
  first entity's type.
- A few text-decided tweets have no image file, and a few a broken one (zero bytes,
  truncated JPEG, or text named .jpg).
- The cue classes differ in colour and layout strongly enough for a randomly initialised,
  frozen CNN to tell them apart, so the effect shows without pretrained weights (for
  ResNet-152, with `--weights none`'s identity-start residual blocks; see data/README.md).

Everything is drawn from one `random.Random(seed)`; the same seed gives the same files.
"""
from __future__ import annotations

import io
import json
import logging
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pipeline.conll import Tweet, format_tweet
from pipeline.errors import DataError
from pipeline.files import atomic_directory, refuse_non_empty

logger = logging.getLogger(__name__)

ANNOTATIONS_FILE = "annotations.jsonl"

# Names whose type the text cannot decide; none of them appears among the typed names.
AMBIGUOUS = [
    "Rob", "Jordan", "Phoenix", "Madison", "Chelsea", "Apple", "Amazon", "Jaguar", "Mercury",
    "Orlando", "Georgia", "Tesla", "Hilton", "Ford", "Columbia", "Austin", "Victoria", "Sydney",
    "Florence", "Dakota", "Savannah", "Nova", "Bentley", "Raven", "Dallas", "Harper", "Aurora",
    "Sierra", "Valencia", "Blue Jay", "Red Star", "Silver Lake", "Big Ben", "Lucky Rose",
]
NEUTRAL_CONTEXTS = [
    "Handsome {} after a fish dinner", "Look at {} today", "{} never disappoints",
    "Throwback to {} last summer", "Nothing beats {}", "Can't stop thinking about {}",
    "Say hi to {}", "{} is everything", "All about {} today", "{} looking great",
    "Here is {} again", "Shoutout to {}", "So much love for {}", "What a day with {}",
    "Guess who ? {}", "{} this morning", "Still obsessed with {}", "Another one of {}",
]
TYPED_NAMES = {
    "PER": ["Barack Obama", "Taylor Swift", "LeBron James", "Kim Kardashian", "Justin Bieber",
            "Hillary Clinton", "Kevin Durant", "Lady Gaga", "Tom Brady", "Serena Williams",
            "Emma Watson", "Kanye West", "Ed Sheeran", "Rihanna", "Beyonce", "Drake", "Adele",
            "Messi", "Cristiano Ronaldo", "Bernie Sanders"],
    "LOC": ["New York", "London", "Los Angeles", "Texas", "Chicago", "Manchester", "Boston",
            "California", "Syria", "Tokyo", "San Francisco", "Miami", "Canada", "Brooklyn",
            "Australia", "Las Vegas", "Seattle", "Germany", "Ohio", "Dublin"],
    "ORG": ["Google", "NASA", "Microsoft", "NBA", "Starbucks", "CNN", "Real Madrid", "Lakers",
            "Twitter", "Facebook", "Nike", "FBI", "Netflix", "Walmart", "BBC", "Arsenal",
            "Samsung", "United Nations", "Harvard", "Coca-Cola"],
    "MISC": ["iPhone", "Super Bowl", "Christmas", "Star Wars", "Game of Thrones", "Olympics",
             "World Cup", "Oscars", "Grammys", "Halloween", "Xbox", "Android", "Coachella",
             "Pokemon Go", "Harry Potter", "Thanksgiving", "Siri", "Bitcoin", "Brexit", "Emmys"],
}
TYPED_CONTEXTS = {
    "PER": ["{} said he will be there", "Interview with {} tonight", "{} and his wife",
            "So proud of {} , she did it", "Happy birthday {} !", "{} scores 30 points",
            "{} tweeted about it", "Met {} at the airport"],
    "LOC": ["Flying to {} tomorrow", "Weather in {} is crazy", "Live from {}",
            "Moving to {} next month", "Earthquake hits {}", "Traffic in {} again",
            "Road trip across {}", "Streets of {} tonight"],
    "ORG": ["{} announced a new plan", "Shares of {} fell", "{} is hiring",
            "Just signed with {}", "{} CEO says no", "Boycott {} now",
            "{} fans are furious", "Statement from {} today"],
    "MISC": ["Watching {} tonight", "Can't wait for {}", "The new {} trailer",
             "{} tickets sold out", "Playing {} all day", "Who else loves {} ?",
             "Merry {} everyone", "{} spoilers ahead"],
}
FILLERS = ["lol", "omg", "so", "really", "today", "#tbt", "#love", "#news", "😂", "🔥", "❤", "!!", "..."]
CUE_CLASSES = {"PER": "person", "LOC": "landscape", "ORG": "building", "MISC": "animal"}
DISTRACTOR_CLASSES = ["food", "screenshot", "noise"]


@dataclass
class SampleTweet:
    tweet: Tweet
    relation: str  # "matched" or "unrelated": does the image show what the text is about?
    image_class: str
    image_file: str = "ok"  # "ok", "missing" or "broken"
    image_decided: list | None = None  # [(type, start, end)] of entities whose type the image decides


def _add_entity(words: list[str], labels: list[str], context: str, name: str, entity_type: str) -> tuple[int, int]:
    before, after = context.split("{}")
    words += before.split()
    start = len(words)
    parts = name.split()
    words += parts
    labels += ["O"] * (start - len(labels)) + [f"B-{entity_type}"] + [f"I-{entity_type}"] * (len(parts) - 1)
    words += after.split()
    labels += ["O"] * (len(words) - len(labels))
    return start, start + len(parts)


def _decorate(rng: random.Random, words: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """Twitter noise around the text: RT @user :, fillers, hashtags, emoji, a t.co link."""
    head, tail = [], []
    if rng.random() < 0.25:
        head = ["RT", f"@{rng.choice(['news', 'fan', 'daily', 'the'])}_{rng.randint(1, 999)}", ":"]
    if rng.random() < 0.5:
        tail.append(rng.choice(FILLERS))
    if rng.random() < 0.4:
        code = "".join(rng.choice("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(10))
        tail.append(f"https://t.co/{code}")
    return head + words + tail, ["O"] * len(head) + labels + ["O"] * len(tail)


def generate_tweets(n: int, seed: int = 0, image_decided: float = 0.35, unrelated: float = 1 / 3,
                    missing: float = 0.02, broken: float = 0.015) -> list[SampleTweet]:
    """The tweets of the sample corpus (text, labels, image class and role), no pixels."""
    rng = random.Random(seed)
    # tweets without an entity always get an unrelated image (a fifth of the text-decided
    # ones); the others get one with the probability that makes the total `unrelated`
    p_unrelated = min(1.0, max(0.0, (unrelated / (1 - image_decided) - 0.2) / 0.8))
    ids = rng.sample(range(100_000, 1_000_000), n)
    samples = []
    for image_id in ids:
        words: list[str] = []
        labels: list[str] = []
        decided = []
        kind = rng.random()
        if kind < image_decided:
            entity_type = rng.choice(list(CUE_CLASSES))
            span = _add_entity(words, labels, rng.choice(NEUTRAL_CONTEXTS), rng.choice(AMBIGUOUS), entity_type)
            decided.append((entity_type, *span))
            if rng.random() < 0.3:  # a second, text-decided entity in the same tweet
                other = rng.choice(list(TYPED_NAMES))
                words.append(rng.choice(["and", "with", "via", "|"]))
                labels.append("O")
                _add_entity(words, labels, rng.choice(TYPED_CONTEXTS[other]), rng.choice(TYPED_NAMES[other]), other)
            relation, image_class = "matched", CUE_CLASSES[entity_type]
        else:
            types = [rng.choice(list(TYPED_NAMES)) for _ in range(rng.choice([0, 1, 1, 1, 2]))]
            for i, entity_type in enumerate(types):
                if i:
                    words.append(rng.choice(["and", "but", "while", "|"]))
                    labels.append("O")
                _add_entity(words, labels, rng.choice(TYPED_CONTEXTS[entity_type]),
                            rng.choice(TYPED_NAMES[entity_type]), entity_type)
            if not types:
                words += rng.choice(["Good morning everyone", "Best day ever", "Can't sleep again",
                                     "This is so true", "Monday mood"]).split()
                labels += ["O"] * (len(words) - len(labels))
            # an unrelated image for about `unrelated` of all tweets
            if not types or rng.random() < p_unrelated:
                absent = [CUE_CLASSES[t] for t in CUE_CLASSES if t not in types]
                relation = "unrelated"
                image_class = rng.choice(DISTRACTOR_CLASSES + absent) if absent else rng.choice(DISTRACTOR_CLASSES)
            else:
                relation, image_class = "matched", CUE_CLASSES[types[0]]
        words, labels = _decorate(rng, words, labels)
        offset = 3 if words[:1] == ["RT"] else 0
        decided = [(t, s + offset, e + offset) for t, s, e in decided]
        sample = SampleTweet(Tweet(str(image_id), words, labels), relation, image_class, "ok", decided)
        if not decided:
            draw = rng.random()
            if draw < missing:
                sample.image_file = "missing"
            elif draw < missing + broken:
                sample.image_file = "broken"
        samples.append(sample)
    return samples


# ---------------------------------------------------------------------------------- images

def _jitter(rng: random.Random, rgb: tuple[int, int, int], amount: int = 25) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def draw_image(image_class: str, rng: random.Random):
    """A small RGB picture of one class, with random size, layout and colour jitter."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = rng.randint(72, 128), rng.randint(72, 128)
    if image_class == "noise":
        image = Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3))
        return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    background = {
        "person": _jitter(rng, (225, 225, 210)), "landscape": _jitter(rng, (90, 160, 235)),
        "building": _jitter(rng, (235, 235, 240)), "animal": _jitter(rng, (20, 10, 30)),
        "food": _jitter(rng, (190, 140, 90)), "screenshot": _jitter(rng, (250, 250, 250), 5),
    }[image_class]
    image = Image.new("RGB", (w, h), background)
    draw = ImageDraw.Draw(image)
    if image_class == "person":  # a face over a red shirt
        cx, cy, r = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.3, 0.45), min(w, h) * rng.uniform(0.18, 0.28)
        draw.rectangle([cx - 1.6 * r, cy + r, cx + 1.6 * r, h], fill=_jitter(rng, (200, 30, 40)))
        draw.ellipse([cx - r, cy - 1.2 * r, cx + r, cy + 1.2 * r], fill=_jitter(rng, (240, 180, 140), 15))
        for dx in (-0.4, 0.4):
            draw.ellipse([cx + dx * r - 3, cy - 0.2 * r - 3, cx + dx * r + 3, cy - 0.2 * r + 3], fill=(20, 20, 20))
    elif image_class == "landscape":  # sky over green hills, a sun
        horizon = h * rng.uniform(0.45, 0.65)
        draw.rectangle([0, horizon, w, h], fill=_jitter(rng, (40, 150, 50)))
        draw.polygon([(0, horizon), (w * rng.uniform(0.2, 0.5), horizon - h * 0.2), (w * 0.7, horizon)],
                     fill=_jitter(rng, (30, 120, 40)))
        sx, sy = w * rng.uniform(0.6, 0.9), h * rng.uniform(0.1, 0.25)
        draw.ellipse([sx - 8, sy - 8, sx + 8, sy + 8], fill=(250, 230, 80))
    elif image_class == "building":  # grey towers with a grid of lit windows
        for _ in range(rng.randint(1, 3)):
            x0, top = rng.uniform(0, w * 0.6), rng.uniform(h * 0.1, h * 0.4)
            x1 = min(w, x0 + rng.uniform(w * 0.3, w * 0.5))
            draw.rectangle([x0, top, x1, h], fill=_jitter(rng, (80, 80, 90), 15))
            for wy in range(int(top) + 4, h - 4, 9):
                for wx in range(int(x0) + 4, int(x1) - 4, 8):
                    draw.rectangle([wx, wy, wx + 4, wy + 5], fill=_jitter(rng, (250, 220, 60), 10))
    elif image_class == "animal":  # a magenta cat head with pointed ears on a dark ground
        cx, cy, r = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.45, 0.6), min(w, h) * rng.uniform(0.2, 0.3)
        fur = _jitter(rng, (200, 60, 200))
        draw.polygon([(cx - r, cy - 0.3 * r), (cx - 0.8 * r, cy - 1.6 * r), (cx - 0.2 * r, cy - 0.9 * r)], fill=fur)
        draw.polygon([(cx + r, cy - 0.3 * r), (cx + 0.8 * r, cy - 1.6 * r), (cx + 0.2 * r, cy - 0.9 * r)], fill=fur)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fur)
        for dx in (-0.4, 0.4):
            draw.ellipse([cx + dx * r - 3, cy - 0.2 * r - 2, cx + dx * r + 3, cy - 0.2 * r + 2], fill=(240, 240, 40))
    elif image_class == "food":  # a white plate with brown and orange bits
        cx, cy, r = w / 2, h / 2, min(w, h) * 0.4
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(245, 245, 245))
        for _ in range(rng.randint(3, 7)):
            bx, by, br = cx + rng.uniform(-r, r) * 0.5, cy + rng.uniform(-r, r) * 0.5, rng.uniform(4, 10)
            draw.ellipse(
                [bx - br, by - br, bx + br, by + br], fill=_jitter(rng, rng.choice([(120, 70, 30), (230, 130, 30)]))
            )
    elif image_class == "screenshot":  # lines of grey "text"
        for y in range(6, h - 6, 8):
            draw.rectangle([6, y, 6 + rng.uniform(0.3, 0.9) * (w - 12), y + 3], fill=(60, 60, 60))
    else:
        raise ValueError(f"unknown image class {image_class!r}")
    return image


def _broken_bytes(rng: random.Random, jpeg: bytes) -> bytes:
    kind = rng.choice(["empty", "truncated", "text"])
    if kind == "empty":
        return b""
    if kind == "truncated":
        return jpeg[: len(jpeg) // 3]
    return b"<html>404 Not Found</html>\n"


def make_sample(out_dir: str | os.PathLike, tweets: int = 1200, seed: int = 0,
                fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), overwrite: bool = False) -> dict:
    """Write the sample corpus to OUT_DIR: {train,valid,test}.txt, images/, annotations.jsonl.

    Returns counts per split and per image role. The directory appears complete or not at all.
    """
    out_dir = Path(out_dir)
    if tweets < 10:
        raise DataError(f"--tweets {tweets} is too few; at least 10 are needed for three splits")
    refuse_non_empty(out_dir, overwrite)
    samples = generate_tweets(tweets, seed)
    n_train = round(tweets * fractions[0])
    n_valid = round(tweets * fractions[1])
    splits = {"train": samples[:n_train], "valid": samples[n_train:n_train + n_valid],
              "test": samples[n_train + n_valid:]}

    with atomic_directory(out_dir) as tmp:
        (tmp / "images").mkdir()
        rng = random.Random(seed + 1)
        for split, items in splits.items():
            with open(tmp / f"{split}.txt", "w", encoding="utf-8", newline="\n") as handle:
                for item in items:
                    handle.write(format_tweet(item.tweet))
        with open(tmp / ANNOTATIONS_FILE, "w", encoding="utf-8", newline="\n") as handle:
            for split, items in splits.items():
                for item in items:
                    record = {
                        "split": split, "image_id": item.tweet.image_id, "relation": item.relation,
                        "image_class": item.image_class, "image_file": item.image_file,
                        "image_decided": [{"type": t, "start": s, "end": e, "text": " ".join(item.tweet.words[s:e])}
                                          for t, s, e in item.image_decided],
                    }
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        for item in samples:
            image = draw_image(item.image_class, rng)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=90)
            data = buffer.getvalue()
            if item.image_file == "missing":  # drawn all the same, so the rng stream stays in step
                continue
            if item.image_file == "broken":
                data = _broken_bytes(rng, data)
            (tmp / "images" / f"{item.tweet.image_id}.jpg").write_bytes(data)

    summary = {"out_dir": str(out_dir), "splits": {split: len(items) for split, items in splits.items()}}
    for key in ("relation", "image_file"):
        summary[key] = dict(Counter(getattr(item, key) for item in samples))
    summary["image_decided_entities"] = sum(len(item.image_decided) for item in samples)
    summary["entities"] = sum(label.startswith("B-") for item in samples for label in item.tweet.labels)
    return summary

