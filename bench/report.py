"""Results table, Kirim/Postfix ratios and the machine description."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.install import find_tool


@dataclass
class Result:
    system: str
    mode: str
    messages: int  # delivered to the sink within the deadline
    rate: float  # delivered messages/s, first injection to last arrival
    accept_rate: float | None = None  # 202s/s (Kirim) or None
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_ms: float | None = None  # CPU ms per delivered message, whole process tree
    peak_mb: float | None = None  # peak PSS of the process tree
    notes: list[str] = field(default_factory=list)
    # Kirim: peak PSS from the start of ``kirim serve`` until it is stopped.
    peak_whole_mb: float | None = None
    preloaded: int = 0  # messages already in the database when the run began
    layout: str = ""  # Kirim: the processes of a scale-out run ("2 API + 2 worker")
    round: int = 1  # with --rounds: which pass over the plan this run belonged to
    speed_ms: float | None = None  # the host speed check just before this run

    @property
    def label(self) -> str:
        """The mode as a row shows it, with the layout when it is not the default one."""
        return f"{self.mode}, {self.layout}" if self.layout else self.mode


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


COLUMNS = ("system", "mode", "messages", "msgs/s", "accepts/s", "p50 ms", "p99 ms",
           "CPU ms/msg", "peak MB", "host ms")  # fmt: skip


def rows(results: list[Result]) -> list[tuple[str, ...]]:
    several = _rounds(results) > 1
    return [
        (
            r.system,
            r.label + (f", round {r.round}" if several else ""),
            f"{r.messages:,}",
            _cell(r.rate, 0),
            _cell(r.accept_rate, 0),
            _cell(r.p50_ms),
            _cell(r.p99_ms),
            _cell(r.cpu_ms, 2),
            _cell(r.peak_mb),
            _cell(r.speed_ms, 0),
        )
        for r in results
    ]


def _ratio(kirim: float | None, postfix: float | None) -> str:
    if kirim is None or postfix is None or postfix == 0:
        return "-"
    return f"{kirim / postfix:.2f}x"


def _paired(results: list[Result]) -> list[tuple[Result, Result]]:
    """Each Kirim run with the Postfix run it compares with (idle with idle, the rest with
    Postfix's throughput run) of the same round."""
    postfix = {(r.round, r.mode): r for r in results if r.system == "postfix"}
    out = []
    for r in results:
        base = postfix.get((r.round, "idle" if r.mode == "idle" else "throughput"))
        if r.system == "kirim" and base is not None:
            out.append((r, base))
    return out


def _pair_name(kirim: Result, postfix: Result) -> str:
    return f"kirim {kirim.label} / postfix {postfix.mode}"


def ratio_rows(results: list[Result]) -> list[tuple[str, ...]]:
    """Each Kirim row against its Postfix row (see ``_paired``)."""
    several = _rounds(results) > 1
    return [
        (
            _pair_name(r, base) + (f", round {r.round}" if several else ""),
            _ratio(r.rate, base.rate),
            _ratio(r.p50_ms, base.p50_ms),
            _ratio(r.p99_ms, base.p99_ms),
            _ratio(r.cpu_ms, base.cpu_ms),
            _ratio(r.peak_mb, base.peak_mb),
        )
        for r, base in _paired(results)
    ]


def run_notes(results: list[Result]) -> list[str]:
    """Each run's notes, once: the rounds of one mode all say the same."""
    return list(dict.fromkeys(f"{r.system} {r.label}: {note}" for r in results for note in r.notes))


def _rounds(results: list[Result]) -> int:
    return max((r.round for r in results), default=1)


def median_ratio_rows(results: list[Result]) -> list[tuple[str, ...]]:
    """With several rounds: per Kirim mode, the median of its per-round ratios.

    The host's speed swings within seconds (the speed check column), so one pair of runs
    can land on different sides of a swing; the median of pairs run back to back can not
    be moved by one such pair.
    """
    if _rounds(results) < 2:
        return []
    pairs: dict[str, list[tuple[Result, Result]]] = {}
    for r, base in _paired(results):
        pairs.setdefault(_pair_name(r, base), []).append((r, base))
    out = []
    for name, runs in pairs.items():
        cells = [
            _median_ratio([(k.rate, p.rate) for k, p in runs]),
            _median_ratio([(k.p50_ms, p.p50_ms) for k, p in runs]),
            _median_ratio([(k.p99_ms, p.p99_ms) for k, p in runs]),
            _median_ratio([(k.cpu_ms, p.cpu_ms) for k, p in runs]),
            _median_ratio([(k.peak_mb, p.peak_mb) for k, p in runs]),
        ]
        out.append((f"{name} (median of {len(runs)})", *cells))
    return out


def _median_ratio(pairs: list[tuple[float | None, float | None]]) -> str:
    ratios = [k / p for k, p in pairs if k is not None and p]
    return "-" if not ratios else f"{statistics.median(ratios):.2f}x"


RATIO_COLUMNS = ("ratio", "msgs/s", "p50", "p99", "CPU/msg", "peak MB")


def _text_line(line: tuple[str, ...], widths: list[int]) -> str:
    cells = zip(line, widths, strict=True)
    return "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(cells))


def text_table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [_text_line(line, widths) for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    aligns = ["---" if i < 2 else "---:" for i in range(len(header))]
    return "\n".join("| " + " | ".join(line) + " |" for line in [header, tuple(aligns), *body])


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU model": model,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
    }
    commit = subprocess.run(
        ["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if commit.returncode == 0:
        info["Kirim commit"] = commit.stdout.strip()
    postconf = find_tool("postconf")
    if postconf:
        done = subprocess.run(
            [postconf, "-d", "-h", "mail_version"], capture_output=True, text=True, timeout=30
        )
        if done.returncode == 0:
            info["Postfix"] = done.stdout.strip()
    return info


def speed_check(rounds: int = 3) -> float:
    """CPU milliseconds a fixed pure-Python loop takes on this machine now (best of a few).

    The cores are shared with other guests of the host: the same loop has taken from 340 to
    520 ms on one machine within an hour. Runs far apart compare only next to this figure;
    it also swings within seconds, so each run of a bench records it just before it starts.
    """
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        total = 0
        for i in range(3_000_000):
            total += i * i % 7
        best = min(best, time.process_time() - began)
    return best * 1000


def render_text(results: list[Result]) -> str:
    parts = [text_table(COLUMNS, rows(results))]
    ratios = ratio_rows(results) + median_ratio_rows(results)
    if ratios:
        parts.append(text_table(RATIO_COLUMNS, ratios))
    notes = run_notes(results)
    if notes:
        parts.append("\n".join(notes))
    return "\n\n".join(parts)


# -- growth: the same runs on an empty and on a preloaded database ------------------------

GROWTH_BEGIN = "<!-- growth:begin -->"
GROWTH_END = "<!-- growth:end -->"
GROWTH_COLUMNS = ("mode", "already stored", "messages", "msgs/s", "accepts/s", "p50 ms",
                  "p99 ms", "CPU ms/msg", "peak MB")  # fmt: skip
GROWTH_RATIO_COLUMNS = ("mode", "msgs/s", "accepts/s", "p50", "p99", "CPU/msg", "peak MB")
# Issue 8: with the history stored, rates drop by less than 20 %, memory stays under 300 MB.
GROWTH_MIN_RATIO = 0.80
GROWTH_MAX_MB = 300.0


def _whole_peak(r: Result) -> float | None:
    return r.peak_whole_mb if r.peak_whole_mb is not None else r.peak_mb


def growth_rows(results: list[Result]) -> list[tuple[str, ...]]:
    return [
        (
            r.mode,
            f"{r.preloaded:,}",
            f"{r.messages:,}",
            _cell(r.rate, 0),
            _cell(r.accept_rate, 0),
            _cell(r.p50_ms),
            _cell(r.p99_ms),
            _cell(r.cpu_ms, 2),
            _cell(_whole_peak(r)),
        )
        for r in results
        if r.system == "kirim"
    ]


def growth_pairs(results: list[Result]) -> list[tuple[Result, Result]]:
    """(empty, preloaded) for each mode that has both, in the order the modes ran."""
    empty = {r.mode: r for r in results if r.system == "kirim" and r.preloaded == 0}
    return [(empty[r.mode], r) for r in results
            if r.system == "kirim" and r.preloaded > 0 and r.mode in empty]  # fmt: skip


def growth_ratio_rows(results: list[Result]) -> list[tuple[str, ...]]:
    """Each mode's preloaded run against its empty run (with N / empty)."""
    return [
        (
            f"{full.mode}: {full.preloaded:,} / empty",
            _ratio(full.rate, empty.rate),
            _ratio(full.accept_rate, empty.accept_rate),
            _ratio(full.p50_ms, empty.p50_ms),
            _ratio(full.p99_ms, empty.p99_ms),
            _ratio(full.cpu_ms, empty.cpu_ms),
            _ratio(_whole_peak(full), _whole_peak(empty)),
        )
        for empty, full in growth_pairs(results)
    ]


def growth_checks(results: list[Result]) -> list[str]:
    """Issue 8's targets, one line each, met or not."""
    lines = []
    for empty, full in growth_pairs(results):
        for name, before, after in (
            ("msgs/s", empty.rate, full.rate),
            ("accepts/s", empty.accept_rate, full.accept_rate),
        ):
            if before and after is not None:
                ratio = after / before
                verdict = "met" if ratio >= GROWTH_MIN_RATIO else "NOT met"
                lines.append(
                    f"{full.mode} {name}: {ratio:.2f}x of the empty run "
                    f"(target >= {GROWTH_MIN_RATIO:.2f}x): {verdict}"
                )
    peaks = [p for r in results if r.system == "kirim" if (p := _whole_peak(r)) is not None]
    if peaks:
        verdict = "met" if max(peaks) < GROWTH_MAX_MB else "NOT met"
        lines.append(
            f"highest peak of kirim serve: {max(peaks):.1f} MB "
            f"(target < {GROWTH_MAX_MB:.0f} MB): {verdict}"
        )
    return lines


def growth_notes(results: list[Result]) -> list[str]:
    """Each distinct note once, with the runs it came from."""
    runs: dict[str, list[str]] = {}
    for r in results:
        for note in r.notes:
            runs.setdefault(note, []).append(f"{r.mode} ({r.preloaded:,} stored)")
    return [f"{', '.join(names)}: {note}" for note, names in runs.items()]


def render_growth_text(results: list[Result]) -> str:
    parts = [text_table(GROWTH_COLUMNS, growth_rows(results))]
    ratios = growth_ratio_rows(results)
    if ratios:
        parts.append(text_table(GROWTH_RATIO_COLUMNS, ratios))
    parts.append("\n".join(growth_checks(results)))
    parts.append("\n".join(growth_notes(results)))
    return "\n\n".join(p for p in parts if p)


def render_growth_markdown(
    results: list[Result], command: str, intro: str, facts: dict[str, str]
) -> str:
    """The "Growth" section, between markers so it can be replaced on its own."""
    parts = [
        GROWTH_BEGIN,
        "## Growth",
        intro.strip(),
        f"Command: `{command}`",
        "\n".join(f"- {key}: {value}" for key, value in facts.items()),
        markdown_table(GROWTH_COLUMNS, growth_rows(results)),
    ]
    ratios = growth_ratio_rows(results)
    if ratios:
        parts.append(markdown_table(GROWTH_RATIO_COLUMNS, ratios))
    checks = growth_checks(results)
    if checks:
        parts.append("\n".join(f"- {line}" for line in checks))
    notes = [f"- {line}" for line in growth_notes(results)]
    if notes:
        parts += ["### Notes from this run", "\n".join(notes)]
    parts.append(GROWTH_END)
    return "\n\n".join(parts) + "\n"


def _growth_span(page: str) -> tuple[int, int] | None:
    start = page.find(GROWTH_BEGIN)
    end = page.find(GROWTH_END, start)
    return None if start < 0 or end < 0 else (start, end + len(GROWTH_END))


def growth_section(page: str) -> str | None:
    """The growth section of a page (markers included), if it has one."""
    span = _growth_span(page)
    return None if span is None else page[span[0] : span[1]] + "\n"


def with_growth(page: str, section: str) -> str:
    """``page`` with its growth section replaced by ``section`` (appended if it has none)."""
    span = _growth_span(page)
    if span is None:
        return page.rstrip("\n") + "\n\n" + section
    return page[: span[0]] + section.rstrip("\n") + page[span[1] :]


def render_markdown(
    results: list[Result], command: str, intro: str, extra: dict[str, str] | None = None
) -> str:
    info = {**machine(), **(extra or {})}
    parts = [
        "# Benchmarks: Kirim next to Postfix",
        intro.strip(),
        f"Command: `{command}`",
        "## Results",
        markdown_table(COLUMNS, rows(results)),
    ]
    ratios = ratio_rows(results)
    if ratios:
        parts += ["## Kirim / Postfix", markdown_table(RATIO_COLUMNS, ratios)]
    medians = median_ratio_rows(results)
    if medians:
        parts += ["### Median over the rounds", markdown_table(RATIO_COLUMNS, medians)]
    notes = [f"- {line}" for line in run_notes(results)]
    if notes:
        parts += ["## Notes from this run", "\n".join(notes)]
    parts += ["## Machine", "\n".join(f"- {key}: {value}" for key, value in info.items())]
    return "\n\n".join(parts) + "\n"
