"""What ``asr synth`` makes the voices say: sentences from a text file, or prompts for the shared corpora.

Every prompt is a :class:`Prompt` whose spoken form *is* its normalised transcript: the engines
read "mr" or "1984" in their own ways, and a label that differs from the audio teaches the
model the wrong thing, so the engines are given exactly the words of the label.

No PyPI package was found that ships public-domain English sentences for offline use (the
``gutenberg*`` packages download books at run time), so the text sources are a file the user
supplies, and prompts built here from the vocabulary of the shared corpora.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from asr.errors import ConfigError
from asr.tokenizer import normalize_text

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The 35 words of Speech Commands v0.02 (Warden 2018): ten commands, the digits, and fillers.
COMMAND_WORDS = (
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
    *DIGITS,
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "backward", "forward", "follow", "learn", "visual",
)  # fmt: skip
# Short carrier phrases around a command word: varied context without drowning the word itself.
CARRIERS = ("{}", "say {}", "the word is {}", "{} please", "now {}", "{} again", "i said {}")


@dataclass(frozen=True)
class Prompt:
    text: str  # normalised transcript, also what the engine is asked to read
    source: str  # where it came from ("file:NAME:LINE" or "commands"), for tracing a bad sample back


def read_sentences(path: str | Path) -> list[Prompt]:
    """One prompt per non-empty line of a UTF-8 text file, normalised, first occurrence kept."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"text file {path} does not exist; give a UTF-8 file with one sentence per line")
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = normalize_text(line)
        if text and text not in seen:
            seen.add(text)
            prompts.append(Prompt(text, f"file:{path.name}:{number}"))
    if not prompts:
        raise ConfigError(f"text file {path} holds no words after normalisation")
    return prompts


def command_prompts(seed: int = 0, *, digit_strings: int = 200) -> list[Prompt]:
    """Every command word alone and in each carrier phrase, plus random digit strings.

    The digit strings (2–5 digits, like FSDD's words run together) cover the digit vocabulary
    in connected speech, which isolated words do not. Deterministic for a given ``seed``.
    """
    texts = [carrier.format(word) for word in COMMAND_WORDS for carrier in CARRIERS]
    rng = random.Random(seed)
    texts += [" ".join(rng.choices(DIGITS, k=rng.randint(2, 5))) for _ in range(digit_strings)]
    return [Prompt(t, "commands") for t in dict.fromkeys(texts)]
