"""Error types raised by the library.

Every message says what went wrong *and* what to do about it, because these strings reach users
verbatim through the CLI and (mapped to gRPC status codes) through the server.
"""

from __future__ import annotations


class AsrError(Exception):
    """Base class: anything the library raises on purpose."""


class AudioError(AsrError):
    """Audio that cannot be decoded or is unusable (empty, corrupt, NaN, too long)."""


class ConfigError(AsrError):
    """A configuration file, override or request option that is malformed or out of range."""


class CheckpointError(AsrError):
    """A model file that is missing, corrupt, or of an unsupported format version."""


class ManifestError(AsrError):
    """A manifest line that names a missing file, unreadable audio or an empty transcript."""


class LimitExceeded(AsrError):
    """A request beyond a configured limit (size, duration, concurrency, queue length)."""
