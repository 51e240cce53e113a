"""Corpus importers on tiny fake layouts (real wav/flac/mp3 files), splits, and shared-corpus preparation."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.cli import main
from asr.data.corpora import CORPUS_KINDS, import_corpus, split_by_speaker
from asr.data.manifest import ManifestEntry, read_manifest
from asr.data.prepare import prepare_shared_corpora, split_fsdd, split_ljspeech, split_speech_commands
from asr.errors import ManifestError


def write_audio(path: Path, seconds: float, rate: int = 16000, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    noise = 0.1 * np.random.default_rng(len(path.name)).standard_normal(int(seconds * rate))
    sf.write(path, noise.astype(np.float32), rate, format=fmt)
    return path


def test_librispeech_layout(tmp_path: Path) -> None:
    chapter = tmp_path / "dev-clean" / "1988" / "24833"
    write_audio(chapter / "1988-24833-0000.flac", 0.5)
    write_audio(chapter / "1988-24833-0001.flac", 0.75)
    (chapter / "1988-24833.trans.txt").write_text("1988-24833-0000 THE TWO KITTENS\n1988-24833-0001 AT HOME\n")
    entries = import_corpus("librispeech", tmp_path)
    assert [(e.text, e.speaker) for e in entries] == [("THE TWO KITTENS", "1988"), ("AT HOME", "1988")]
    assert [e.duration for e in entries] == pytest.approx([0.5, 0.75])
    assert all(Path(e.audio).is_absolute() for e in entries)


def test_librispeech_row_without_audio_is_skipped_with_its_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chapter = tmp_path / "84" / "121"
    write_audio(chapter / "84-121-0000.flac", 0.5)
    (chapter / "84-121.trans.txt").write_text("84-121-0000 HELLO\n84-121-0001 MISSING\n")
    with caplog.at_level(logging.WARNING):
        entries = import_corpus("librispeech", tmp_path)
    assert len(entries) == 1
    assert "84-121.trans.txt:2" in caplog.text


def test_common_voice_layout(tmp_path: Path) -> None:
    write_audio(tmp_path / "clips" / "common_voice_en_1.mp3", 1.0, fmt="MP3")
    write_audio(tmp_path / "clips" / "common_voice_en_2.mp3", 0.5, fmt="MP3")
    (tmp_path / "validated.tsv").write_text(
        "client_id\tpath\tsentence\tup_votes\n"
        'abc\tcommon_voice_en_1.mp3\tHe said "hello".\t2\n'
        "def\tcommon_voice_en_2.mp3\tGood morning!\t3\n"
    )
    entries = import_corpus("common_voice", tmp_path)
    assert [(e.text, e.speaker) for e in entries] == [('He said "hello".', "abc"), ("Good morning!", "def")]
    assert entries[0].duration == pytest.approx(1.0, abs=0.1)


def test_common_voice_without_tsv_says_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"validated\.tsv does not exist"):
        import_corpus("common_voice", tmp_path)


def test_ljspeech_layout_prefers_the_normalized_column(tmp_path: Path) -> None:
    write_audio(tmp_path / "wavs" / "LJ001-0001.wav", 0.5, rate=22050)
    write_audio(tmp_path / "wavs" / "LJ001-0002.wav", 0.25, rate=22050)
    (tmp_path / "metadata.csv").write_text(
        "LJ001-0001|In 1465 they printed|In fourteen sixty-five they printed\nLJ001-0002|modern.|\n"
    )
    entries = import_corpus("ljspeech", tmp_path)
    assert [e.text for e in entries] == ["In fourteen sixty-five they printed", "modern."]
    assert {e.speaker for e in entries} == {"LJ"}
    assert entries[0].duration == pytest.approx(0.5)


def test_speech_commands_layout_skips_background_noise(tmp_path: Path) -> None:
    write_audio(tmp_path / "yes" / "0a7c2a8d_nohash_0.wav", 1.0)
    write_audio(tmp_path / "no" / "0a7c2a8d_nohash_1.wav", 1.0)
    write_audio(tmp_path / "no" / "e41a903b_nohash_0.wav", 1.0)
    write_audio(tmp_path / "_background_noise_" / "white_noise.wav", 2.0)
    write_audio(tmp_path / "_unknown_" / "marvin_f264e0df_nohash_2.wav.wav", 1.0)
    entries = import_corpus("speech_commands", tmp_path)
    assert sorted((e.text, e.speaker) for e in entries) == [
        ("marvin", "f264e0df"),
        ("no", "0a7c2a8d"),
        ("no", "e41a903b"),
        ("yes", "0a7c2a8d"),
    ]


def test_speech_commands_on_the_bundled_samples(samples_dir: Path) -> None:
    entries = import_corpus("speech_commands", samples_dir / "speech_commands")
    assert sorted(e.text for e in entries) == ["down", "left", "no", "stop", "up", "yes"]
    assert all(e.speaker[0] in "ef" for e in entries)


def make_an4(root: Path) -> None:
    """AN4's published layout: NIST SPHERE audio, etc/*.transcription and etc/*.fileids."""
    (root / "etc").mkdir(parents=True)
    for folder, split, utts in (
        ("an4_clstk", "train", [("an251-fash-b", "P L E A S A N T"), ("cen7-fash-b", "JUNE TWENTIETH")]),
        ("an4test_clstk", "test", [("cen1-fcaw-b", "NO")]),
    ):
        ids, lines = [], []
        for utt, text in utts:
            speaker = utt.split("-")[1]
            write_audio(root / "wav" / folder / speaker / f"{utt}.sph", 0.4, fmt="NIST")
            ids.append(f"{folder}/{speaker}/{utt}")
            lines.append(f"<s> {text} </s> ({utt})")
        (root / "etc" / f"an4_{split}.fileids").write_text("\n".join(ids) + "\n")
        (root / "etc" / f"an4_{split}.transcription").write_text("\n".join(lines) + "\nnot a transcription line\n")


def test_an4_layout_reads_sphere_audio_and_keeps_the_official_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_an4(tmp_path)
    with caplog.at_level(logging.WARNING):
        entries = import_corpus("an4", tmp_path)
    got = sorted((e.text, e.speaker, e.split) for e in entries)
    assert got == [("JUNE TWENTIETH", "fash", "train"), ("NO", "fcaw", "test"), ("P L E A S A N T", "fash", "train")]
    assert all(e.duration == pytest.approx(0.4) and e.audio.endswith(".sph") for e in entries)
    assert "an4_train.transcription:3" in caplog.text  # the malformed line, named


def test_asr_prepare_writes_a_corpus_with_its_own_split_as_split_files(tmp_path: Path) -> None:
    make_an4(tmp_path / "an4")
    assert main(["prepare", "an4", str(tmp_path / "an4"), "--out", str(tmp_path / "out")]) == 0
    splits = {name: read_manifest(tmp_path / "out" / f"{name}.jsonl") for name in ("train", "dev", "test")}
    assert [len(splits[n]) for n in ("train", "dev", "test")] == [2, 0, 1]
    assert {e.speaker for e in splits["test"]} == {"fcaw"}


def test_arctic_layout(tmp_path: Path) -> None:
    voice = tmp_path / "cmu_us_slt_arctic"
    write_audio(voice / "wav" / "arctic_a0001.wav", 0.5)
    write_audio(voice / "wav" / "arctic_a0002.wav", 0.6)
    (voice / "etc").mkdir()
    (voice / "etc" / "arctic.data").write_text(
        '( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )\n'
        '( arctic_a0002 "Not at this particular case, Tom, apologized Whittemore." )\n'
    )
    entries = import_corpus("arctic", voice)
    assert [(e.text, e.speaker) for e in entries] == [
        ("Author of the danger trail, Philip Steels, etc.", "slt"),
        ("Not at this particular case, Tom, apologized Whittemore.", "slt"),
    ]


def make_kaldi(root: Path) -> None:
    """speechocean762's layout: train/ and test/ Kaldi data dirs, paths relative to the corpus root."""
    for split, speaker, utt in (("train", "0001", "000010011"), ("test", "0003", "000030012")):
        write_audio(root / "WAVE" / f"SPEAKER{speaker}" / f"{utt}.WAV", 0.5)
        data = root / split
        data.mkdir(parents=True)
        (data / "wav.scp").write_text(f"{utt}\tWAVE/SPEAKER{speaker}/{utt}.WAV\nmissing WAVE/none.WAV\n")
        (data / "text").write_text(f"{utt} WE CALL IT BEAR\nmissing NOTHING\n")
        (data / "utt2spk").write_text(f"{utt} {speaker}\nmissing {speaker}\n")


def test_kaldi_data_directories_give_speakers_and_official_splits(tmp_path: Path) -> None:
    make_kaldi(tmp_path)
    entries = import_corpus("kaldi", tmp_path)
    assert sorted((Path(e.audio).name, e.text, e.speaker, e.split) for e in entries) == [
        ("000010011.WAV", "WE CALL IT BEAR", "0001", "train"),
        ("000030012.WAV", "WE CALL IT BEAR", "0003", "test"),
    ]


def test_kaldi_piped_wav_scp_uses_the_file_and_runs_nothing(tmp_path: Path) -> None:
    audio = write_audio(tmp_path / "audio" / "a1.sph", 0.3, fmt="NIST")
    data = tmp_path / "data" / "dev"
    data.mkdir(parents=True)
    (data / "wav.scp").write_text(f"a1 sph2pipe -f wav -p -c 1 {audio} |\n")
    (data / "text").write_text("a1 HELLO\n")
    (entry,) = import_corpus("kaldi", data)
    assert (entry.audio, entry.speaker, entry.split) == (str(audio), "a1", "dev")


def test_kaldi_segments_are_refused_with_what_to_do(tmp_path: Path) -> None:
    make_kaldi(tmp_path)
    (tmp_path / "train" / "segments").write_text("utt1 rec1 0.0 1.5\n")
    with pytest.raises(ManifestError, match="extract-segments"):
        import_corpus("kaldi", tmp_path)


def test_generic_folder_pairs_audio_with_same_name_txt(tmp_path: Path) -> None:
    write_audio(tmp_path / "alice" / "one.wav", 0.5)
    (tmp_path / "alice" / "one.txt").write_text("  Hello   world \n")
    write_audio(tmp_path / "bob" / "two.flac", 0.25, rate=8000)
    (tmp_path / "bob" / "two.txt").write_text("Good bye")
    write_audio(tmp_path / "bob" / "untranscribed.wav", 0.25)
    entries = import_corpus("folder", tmp_path)
    assert [(e.text, e.speaker) for e in entries] == [("Hello world", "alice"), ("Good bye", "bob")]


def test_folder_with_manifest_jsonl(samples_dir: Path) -> None:
    entries = import_corpus("manifest", samples_dir)
    assert len(entries) == 15 and entries[0].text == "three"


def test_unknown_kind_and_missing_folder_are_clear(tmp_path: Path) -> None:
    assert set(CORPUS_KINDS) == {
        *("librispeech", "common_voice", "ljspeech", "speech_commands", "an4", "arctic", "kaldi", "folder", "manifest")
    }
    with pytest.raises(ManifestError, match="unknown corpus kind 'timit'"):
        import_corpus("timit", tmp_path)
    with pytest.raises(ManifestError, match="does not exist"):
        import_corpus("folder", tmp_path / "absent")
    with pytest.raises(ManifestError, match="no usable LibriSpeech"):
        import_corpus("librispeech", tmp_path)


def fake_entries(num_speakers: int, per_speaker: int) -> list[ManifestEntry]:
    return [
        ManifestEntry(f"/x/{s}_{i}.wav", "word", 1.0, f"spk{s:02d}")
        for s in range(num_speakers)
        for i in range(per_speaker)
    ]


def test_split_by_speaker_is_disjoint_deterministic_and_near_the_fractions() -> None:
    entries = fake_entries(20, 5)
    split = split_by_speaker(entries, dev_fraction=0.1, test_fraction=0.2, seed=3)
    speakers = [{e.speaker for e in part} for part in split]
    assert not (speakers[0] & speakers[1] or speakers[0] & speakers[2] or speakers[1] & speakers[2])
    assert (len(split.train), len(split.dev), len(split.test)) == (70, 10, 20)
    assert sorted(split.train + split.dev + split.test, key=lambda e: e.audio) == sorted(entries, key=lambda e: e.audio)
    assert split_by_speaker(entries, 0.1, 0.2, seed=3) == split
    assert split_by_speaker(entries, 0.1, 0.2, seed=4) != split


def test_split_by_speaker_keeps_a_single_speaker_in_train() -> None:
    split = split_by_speaker(fake_entries(1, 10), 0.2, 0.2, seed=0)
    assert (len(split.train), len(split.dev), len(split.test)) == (10, 0, 0)


def fsdd_entry(digit: int, speaker: str, take: int) -> ManifestEntry:
    return ManifestEntry(f"/fsdd/recordings/{digit}_{speaker}_{take}.wav", str(digit), 0.5, speaker)


def test_fsdd_split_follows_the_readme() -> None:
    entries = [fsdd_entry(d, s, t) for d in (0, 7) for s in ("jackson", "lucas") for t in (0, 24, 25, 49)]
    split = split_fsdd(entries)
    assert {e.speaker for e in split.train} == {"jackson"} and len(split.train) == 8
    assert sorted(Path(e.audio).stem for e in split.dev) == ["0_lucas_0", "0_lucas_24", "7_lucas_0", "7_lucas_24"]
    assert sorted(Path(e.audio).stem for e in split.test) == ["0_lucas_25", "0_lucas_49", "7_lucas_25", "7_lucas_49"]


def test_speech_commands_split_uses_the_first_speaker_character() -> None:
    speakers = ["0a1", "9ff", "a12", "c34", "d56", "e78", "f90"]
    split = split_speech_commands([ManifestEntry(f"/{s}.wav", "yes", 1.0, s) for s in speakers])
    assert [[e.speaker for e in part] for part in split] == [["0a1", "9ff", "a12", "c34"], ["d56"], ["e78", "f90"]]


def test_ljspeech_split_is_all_train_unless_asked() -> None:
    entries = [ManifestEntry(f"/LJ001-{i:04d}.wav", "text", 2.0, "LJ") for i in range(32)]
    assert len(split_ljspeech(entries).train) == 32
    split = split_ljspeech(entries, dev_count=4)
    assert (len(split.train), len(split.dev)) == (28, 4)
    assert split.dev[0].audio == "/LJ001-0028.wav"


def make_shared_root(root: Path) -> None:
    """A miniature of /work/shared/data: each corpus folder ships manifest.jsonl with relative paths."""
    layout = {
        "fsdd": [
            (f"recordings/{d}_{s}_{t}.wav", str(d), s) for d in (1, 2) for s in ("theo", "lucas") for t in (3, 30)
        ],
        "speech_commands": [(f"test_v0.02/yes/{s}_nohash_0.wav", "yes", s) for s in ("0abc", "d123", "e456", "f789")],
        "ljspeech_sample": [(f"wavs/LJ001-000{i}.wav", "In 1465", "LJ") for i in range(1, 4)],
        "librispeech_sample": [("dev-clean-2/1988/24833/1988-24833-0000.flac", "THE TWO STRAY KITTENS", "1988")],
    }
    for folder, rows in layout.items():
        lines = []
        for audio, text, speaker in rows:
            write_audio(root / folder / audio, 0.3)
            lines.append(json.dumps({"audio": audio, "text": text, "speaker": speaker, "duration": 0.3}))
        (root / folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def add_split_corpus(root: Path, folder: str, splits: dict[str, str], *, with_field: bool = True) -> None:
    """A corpus of one utterance per speaker; ``with_field`` writes each speaker's split into the manifest."""
    lines = []
    for speaker, split in splits.items():
        audio = f"{speaker}/{speaker}-0001.wav"
        write_audio(root / folder / audio, 0.3)
        record = {"audio": audio, "text": "A SENTENCE", "speaker": speaker, "duration": 0.3}
        lines.append(json.dumps({**record, "split": split} if with_field else record))
    (root / folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")


def test_prepare_shared_corpora_writes_speaker_disjoint_manifests(tmp_path: Path) -> None:
    make_shared_root(tmp_path / "shared")
    written = prepare_shared_corpora(tmp_path / "shared", tmp_path / "out")
    assert {"train", "dev", "test", "test_fsdd", "dev_fsdd", "test_speech_commands", "dev_librispeech"} <= set(written)
    train, dev, test = (read_manifest(written[k]) for k in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (4 + 1 + 3, 2 + 1 + 1, 2 + 2)
    for held_out in (dev, test):
        assert not {e.speaker for e in train} & {e.speaker for e in held_out}
    assert {e.speaker for e in dev} & {e.speaker for e in test} == {"lucas"}  # README: lucas's takes split dev/test
    assert all(Path(e.audio).is_absolute() and Path(e.audio).is_file() for e in train + dev + test)
    assert {Path(e.audio).stem for e in read_manifest(written["test_fsdd"])} == {"1_lucas_30", "2_lucas_30"}


def test_prepare_keeps_same_speaker_ljspeech_dev_out_of_the_combined_dev(tmp_path: Path) -> None:
    make_shared_root(tmp_path / "shared")
    written = prepare_shared_corpora(tmp_path / "shared", tmp_path / "out", ljspeech_dev_count=1)
    assert len(read_manifest(written["dev_ljspeech"])) == 1
    assert "LJ" not in {e.speaker for e in read_manifest(written["dev"])}


def test_prepare_takes_every_corpus_folder_and_follows_its_split_field(tmp_path: Path) -> None:
    make_shared_root(tmp_path / "shared")
    add_split_corpus(
        tmp_path / "shared", "mini_librispeech", {"19": "test", "226": "dev", "103": "train", "32": "train"}
    )
    speakers = {f"s{i:02d}": "" for i in range(20)}
    add_split_corpus(tmp_path / "shared", "my_corpus", speakers, with_field=False)
    (tmp_path / "shared" / "not_a_corpus").mkdir()  # no manifest.jsonl: ignored
    written = prepare_shared_corpora(tmp_path / "shared", tmp_path / "out")
    speakers_in = {name: {e.speaker for e in read_manifest(path)} for name, path in written.items()}
    assert speakers_in["test_mini_librispeech"] == {"19"}
    assert speakers_in["dev_mini_librispeech"] == {"226"}
    assert speakers_in["train_mini_librispeech"] == {"103", "32"}
    assert {"19", "226"} <= speakers_in["test"] | speakers_in["dev"] and "103" in speakers_in["train"]
    # No split field: speaker-disjoint 80/10/10 by speaker, every speaker in exactly one split.
    parts = [speakers_in[f"{split}_my_corpus"] for split in ("train", "dev", "test")]
    assert [len(p) for p in parts] == [16, 2, 2]
    assert set().union(*parts) == set(speakers)
    assert [e.split for e in read_manifest(written["test_mini_librispeech"])] == ["test"]


def test_a_split_field_outside_train_dev_test_is_refused(tmp_path: Path) -> None:
    add_split_corpus(tmp_path, "corpus", {"a": "validation"})
    with pytest.raises(ManifestError, match="'split' must be one of"):
        read_manifest(tmp_path / "corpus" / "manifest.jsonl")


def test_prepare_skips_absent_corpora(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    written = prepare_shared_corpora(tmp_path / "shared", tmp_path / "out")
    assert set(written) == {"train", "dev", "test"}
    assert read_manifest(written["train"]) == []
