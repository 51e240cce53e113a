"""The dependency arrows of STYLE.md §3.1, checked by parsing imports (no module is executed)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# package prefix -> project prefixes it must never import
FORBIDDEN = {
    "asr.config": ["asr.audio", "asr.tokenizer", "asr.features", "asr.models", "asr.decoding", "asr.data"],
    "asr.errors": ["asr."],
    "asr.audio": ["asr.features", "asr.models", "asr.decoding", "asr.data", "asr.training", "asr.inference"],
    "asr.tokenizer": ["asr.features", "asr.models", "asr.decoding", "asr.data", "asr.training", "asr.inference"],
    "asr.features": ["asr.models", "asr.decoding", "asr.data", "asr.training", "asr.inference", "asr.checkpoint"],
    "asr.models": ["asr.features", "asr.decoding", "asr.data", "asr.training", "asr.inference", "asr.checkpoint"],
    "asr.decoding": ["asr.features", "asr.models", "asr.tokenizer", "asr.data", "asr.training", "asr.inference"],
    "asr.checkpoint": ["asr.inference", "asr.streaming", "asr.data", "asr.training", "asr.cli"],
    "asr.inference": ["asr.data", "asr.training", "asr.cli", "server", "client"],
    "asr.data": ["asr.training", "asr.inference", "asr.cli", "asr.models", "asr.decoding"],
    "server": ["asr.training", "asr.data", "client"],
    "client": ["asr", "server", "torch"],
    "asr": ["server", "client", "tests", "benchmarks"],
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def matches(name: str, prefix: str) -> bool:
    return name == prefix.rstrip(".") or name.startswith(prefix if prefix.endswith(".") else prefix + ".")


def test_no_reversed_dependency_arrows():
    violations = []
    for folder in ("asr", "server", "client"):
        for path in (ROOT / folder).rglob("*.py"):
            mod = module_name(path)
            for owner, banned in FORBIDDEN.items():
                if not matches(mod, owner):
                    continue
                for imported in imports_of(path):
                    if any(matches(imported, b) for b in banned):
                        violations.append(f"{mod} imports {imported} (forbidden for {owner})")
    assert not violations, "\n".join(violations)
