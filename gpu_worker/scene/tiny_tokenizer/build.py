"""Rebuilds vocab.json and merges.txt in this folder (they are committed; run only to change them).

    .venv/bin/python gpu_worker/scene/tiny_tokenizer/build.py

A CLIP-format byte-level BPE vocabulary small enough for the tiny text encoders: the 256
byte symbols, the same with CLIP's end-of-word marker, 400 merges learned from the words
scene prompts and light hints use, and the two special tokens. Any text still tokenizes
(unknown words fall back to single bytes); common prompt words become one token.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

CORPUS = """
a an the of on in at with and from by to for under over behind beside near next into onto
soft warm cool bright dark golden morning evening sunset sunrise noon night light lighting lit
shadow shadows sun sunlight window daylight studio lamp candle glow glowing diffuse gentle
coming left right above below front back side overhead top camera frontal directional
modern rustic wooden wood marble stone concrete granite tile tiles brick glass metal steel
kitchen counter table desk shelf floor wall room interior living bedroom bathroom office cafe
beach sand sea ocean waves water lake river garden grass flowers flower trees tree forest park
temple festival lights courtyard haveli palace street city urban rooftop mountain snow desert
notebook plant plants pot vase books book cup coffee fruit bowl leaves leaf fabric linen silk
product photo photograph photography professional commercial catalogue lifestyle scene background
realistic detailed high quality sharp focus depth field bokeh blurry blur lowres low resolution
extra objects object duplicate product products text letters words caption watermark logo
signature border frame people person hands hand deformed distorted cropped jpeg artifacts noisy
color colors colour colours white black grey gray red green blue yellow orange pink purple brown
is comes falls from the left from the right from above from the front
""".split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(c) for c in codes]))


def learn_merges(words: list[str], count: int) -> list[tuple[str, str]]:
    b2u = bytes_to_unicode()
    frequency = collections.Counter(words)
    symbols = {w: tuple(b2u[b] for b in w.encode()[:-1]) + (b2u[w.encode()[-1]] + "</w>",) for w in frequency}
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: collections.Counter = collections.Counter()
        for word, parts in symbols.items():
            for pair in zip(parts, parts[1:]):
                pairs[pair] += frequency[word]
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for word, parts in symbols.items():
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            symbols[word] = tuple(merged)
    return merges


def main() -> None:
    here = Path(__file__).resolve().parent
    base = list(bytes_to_unicode().values())
    tokens = base + [c + "</w>" for c in base]
    merges = learn_merges(CORPUS, 400)
    tokens += [a + b for a, b in merges if a + b not in tokens]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    (here / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    (here / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    print(f"{len(vocab)} tokens, {len(merges)} merges")


if __name__ == "__main__":
    main()
