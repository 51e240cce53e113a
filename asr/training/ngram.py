"""Estimate an interpolated Kneser-Ney n-gram from text and write it as ARPA.

Counts follow KenLM's lmplz: the highest order uses raw counts, lower orders use continuation
counts (how many distinct words precede the n-gram), except n-grams starting with ``<s>``, which
cannot be preceded and keep raw counts. Discounts are modified KN (Chen & Goodman: D1, D2, D3+
per order from counts-of-counts) or one absolute discount. The interpolated model is written in
back-off form: a seen n-gram stores its interpolated probability and every context stores its
interpolation weight as back-off, so each context's distribution sums to 1.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from asr.config import LMConfig
from asr.decoding.ngram import BOS, EOS, UNK
from asr.errors import ConfigError

Ngram = tuple[str, ...]
Tables = list[dict[Ngram, tuple[float, float]]]  # per order: n-gram -> (log10 p, log10 backoff)
_LOG10_ZERO = -99.0  # ARPA convention for p(<s>) = 0


def estimate_ngram(
    sentences: Iterable[str], cfg: LMConfig, *, split: Callable[[str], list[str]] | None = None
) -> Tables:
    """Interpolated KN n-gram of order ``cfg.order`` as log10 tables (``NgramLM(tables)`` reads them).

    ``split`` turns a sentence into units: whitespace words by default, or tokenizer pieces for
    ``cfg.unit == "token"`` (then required).
    """
    if cfg.order < 1:
        raise ConfigError(f"lm.order must be >= 1, got {cfg.order}")
    if not 0.0 < cfg.discount < 1.0:
        raise ConfigError(f"lm.discount must be in (0, 1), got {cfg.discount}")
    if cfg.unit == "token" and split is None:
        raise ConfigError("lm.unit 'token' needs the tokenizer to split sentences into pieces")
    counts = _raw_counts(sentences, cfg.order, split or str.split)
    if not counts[0]:
        raise ConfigError("no text to estimate an n-gram from (all sentences empty)")
    adjusted = _adjusted_counts(counts)
    vocab = sorted({g[0] for g in counts[0]} - {BOS} | {UNK})
    tables: Tables = []
    lower: dict[Ngram, float] = {(w,): 1.0 / len(vocab) for w in vocab}  # order-0 base: uniform
    for n, order_counts in enumerate(adjusted, start=1):
        discounts = _discounts(order_counts, cfg)
        if n == 1:
            order_counts = {**{(w,): 0 for w in vocab}, **order_counts}  # <unk> may be unseen
        probs, gammas = _interpolate(order_counts, discounts, lower, n)
        tables.append({g: (math.log10(p) if p > 0 else _LOG10_ZERO, 0.0) for g, p in probs.items()})
        if n > 1:
            prev = tables[n - 2]
            for context, gamma in gammas.items():
                if context in prev:
                    prev[context] = (prev[context][0], math.log10(gamma) if gamma > 0 else _LOG10_ZERO)
        lower = probs
    _fix_unigram_bos(tables)
    if cfg.min_counts:
        _prune(tables, counts, cfg.min_counts)
    return tables


def _prune(tables: Tables, counts: list[Counter[Ngram]], min_counts: tuple[int, ...]) -> None:
    """Drop n-grams of order >= 2 seen fewer than ``min_counts[n - 2]`` times, renormalising back-offs.

    Kept n-grams keep their interpolated probabilities; a pruned one is scored by back-off,
    ``bo(h) · p(w | h[1:])``. Each context's back-off is recomputed so that its distribution still
    sums to 1: ``bo(h) = (1 − Σ_kept p(w | h)) / (1 − Σ_kept p_lower(w | h[1:]))`` (as SRILM and
    KenLM do). Prefixes and suffixes of kept n-grams are always kept, since back-off reads them.
    """
    order = len(tables)
    if len(min_counts) > order - 1 or any(c < 1 for c in min_counts):
        raise ConfigError(f"lm.min_counts needs at most {order - 1} counts >= 1 (bigrams up), got {list(min_counts)}")
    keep: list[set[Ngram]] = [set(tables[0])] + [set() for _ in range(order - 1)]
    for n in range(order, 1, -1):
        threshold = min_counts[n - 2] if n - 2 < len(min_counts) else 1
        kept = {g for g in tables[n - 1] if counts[n - 1][g] >= threshold}
        if n < order:
            kept |= {g[:-1] for g in keep[n]} | {g[1:] for g in keep[n]}
        keep[n - 1] = kept
    for n in range(2, order + 1):
        tables[n - 1] = {g: v for g, v in tables[n - 1].items() if g in keep[n - 1]}
        kept_mass: dict[Ngram, float] = defaultdict(float)
        lower_mass: dict[Ngram, float] = defaultdict(float)
        for g, (logp, _) in tables[n - 1].items():
            kept_mass[g[:-1]] += 10.0**logp
            lower_mass[g[:-1]] += 10.0 ** _backoff_log10(tables, g[1:])
        for h, (logp, _) in tables[n - 2].items():
            numerator, denominator = 1.0 - kept_mass.get(h, 0.0), 1.0 - lower_mass.get(h, 0.0)
            backoff = numerator / denominator if numerator > 0 and denominator > 0 else 1.0
            tables[n - 2][h] = (logp, math.log10(backoff))


def _backoff_log10(tables: Tables, ngram: Ngram) -> float:
    """log10 p(ngram[-1] | ngram[:-1]) from ``tables`` with back-off (the orders below the one being pruned)."""
    backoff = 0.0
    while True:
        entry = tables[len(ngram) - 1].get(ngram)
        if entry is not None:
            return backoff + entry[0]
        context = tables[len(ngram) - 2].get(ngram[:-1]) if len(ngram) > 1 else None
        backoff += context[1] if context is not None else 0.0
        ngram = ngram[1:]
        if not ngram:
            return _LOG10_ZERO


def write_arpa(tables: Tables, path: str | Path) -> Path:
    """Write tables in ARPA format (back-off omitted when it is log10 1 = 0)."""
    path = Path(path)
    lines = ["\\data\\"]
    lines += [f"ngram {n}={len(t)}" for n, t in enumerate(tables, start=1)]
    for n, table in enumerate(tables, start=1):
        lines += ["", f"\\{n}-grams:"]
        for ngram in sorted(table):
            logp, backoff = table[ngram]
            fields = [f"{logp:.7g}", " ".join(ngram)]
            if n < len(tables) and backoff != 0.0:
                fields.append(f"{backoff:.7g}")
            lines.append("\t".join(fields))
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def build_arpa(
    text: str | Path | Iterable[str],
    out_path: str | Path,
    cfg: LMConfig,
    *,
    split: Callable[[str], list[str]] | None = None,
) -> Path:
    """Estimate from a text file (one sentence per line) or an iterable of sentences; write ARPA."""
    if isinstance(text, (str, Path)):
        source = Path(text)
        if not source.is_file():
            raise ConfigError(f"LM training text {source} does not exist")
        with source.open(encoding="utf-8") as lines:
            tables = estimate_ngram(lines, cfg, split=split)
    else:
        tables = estimate_ngram(text, cfg, split=split)
    return write_arpa(tables, out_path)


def _raw_counts(sentences: Iterable[str], order: int, split: Callable[[str], list[str]]) -> list[Counter[Ngram]]:
    counts: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    for sentence in sentences:
        units = split(sentence.strip())
        if not units:
            continue
        if any(not u or u.split() != [u] for u in units):
            raise ConfigError(f"LM units must be non-empty and contain no whitespace (ARPA splits on it): {units}")
        padded = [BOS, *units, EOS]
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                counts[n - 1][tuple(padded[i : i + n])] += 1
    return counts


def _adjusted_counts(counts: list[Counter[Ngram]]) -> list[dict[Ngram, int]]:
    """Raw counts for the top order and for n-grams starting with <s>; continuation counts otherwise."""
    adjusted: list[dict[Ngram, int]] = []
    for n in range(len(counts)):
        if n == len(counts) - 1:
            adjusted.append(dict(counts[n]))
            continue
        continuation: Counter[Ngram] = Counter(g[1:] for g in counts[n + 1])
        adjusted.append({g: c if g[0] == BOS else continuation[g] for g, c in counts[n].items()})
    return adjusted


def _discounts(order_counts: dict[Ngram, int], cfg: LMConfig) -> tuple[float, float, float]:
    """(D1, D2, D3+): Chen & Goodman's estimates when valid, else ``cfg.discount`` for all."""
    fallback = (cfg.discount,) * 3
    if not cfg.modified:
        return fallback
    of = Counter(min(c, 4) for c in order_counts.values())
    n1, n2, n3, n4 = of[1], of[2], of[3], of[4]
    if min(n1, n2, n3, n4) == 0:
        return fallback
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0 < di < i for i, di in enumerate(d, start=1)):
        return fallback
    return d


def _interpolate(
    order_counts: dict[Ngram, int], discounts: tuple[float, float, float], lower: dict[Ngram, float], n: int
) -> tuple[dict[Ngram, float], dict[Ngram, float]]:
    """p(w | h) = max(a(hw) - D, 0) / a(h*) + gamma(h) p_lower(w | h[1:]), and gamma per context h."""
    totals: dict[Ngram, int] = defaultdict(int)
    mass: dict[Ngram, float] = defaultdict(float)
    for g, c in order_counts.items():
        if g == (BOS,):
            continue
        totals[g[:-1]] += c
        mass[g[:-1]] += discounts[min(c, 3) - 1] if c > 0 else 0.0
    gammas = {h: mass[h] / totals[h] for h in totals if totals[h] > 0}
    probs: dict[Ngram, float] = {}
    for g, c in order_counts.items():
        h = g[:-1]
        if g == (BOS,) or h not in gammas:
            probs[g] = 0.0
            continue
        discounted = max(c - discounts[min(c, 3) - 1], 0.0) / totals[h] if c > 0 else 0.0
        probs[g] = discounted + gammas[h] * lower[g[1:] if n > 1 else g]
    return probs, gammas


def _fix_unigram_bos(tables: Tables) -> None:
    """<s> is never predicted: log10 p = -99, keeping its back-off."""
    entry = tables[0].get((BOS,))
    if entry is not None:
        tables[0][(BOS,)] = (_LOG10_ZERO, entry[1])
