"""Regenerate the committed Python code for ``asr_service.proto``.

Compiles from the repository root with ``-I .`` so the generated modules import each other as
``from protos import ...``; compiling with ``-I protos`` yields a bare ``import asr_service_pb2``,
which breaks once the package is installed. ``tests/test_protos.py`` runs this into a temporary
folder and fails when the committed files differ.

Usage: ``python protos/generate.py [--out DIR]`` (default: the repository root).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "protos/asr_service.proto"


def generate(out_dir: Path = ROOT) -> list[Path]:
    """Write ``protos/asr_service_pb2{.py,.pyi,_grpc.py}`` under ``out_dir``; returns their paths."""
    import grpc_tools
    from grpc_tools import protoc

    (out_dir / "protos").mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    stem = out_dir / "protos" / "asr_service"
    return [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), Path(f"{stem}_pb2_grpc.py")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT, help="root folder to write protos/… into")
    for path in generate(parser.parse_args(argv).out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
