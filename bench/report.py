"""Figures, baselines and the markdown report."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class Figure:
    """One measured quantity over repeated runs."""

    name: str
    unit: str
    samples: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.samples.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def cells(self) -> str:
        s = sorted(self.samples)
        return f"{fmt(s[0])} | {fmt(self.median)} | {fmt(s[-1])}"


@dataclass
class Comparison:
    """A subject measured beside its baseline in the same runs; ratio = subject / baseline."""

    title: str
    subject: Figure
    baseline: Figure

    def ratios(self) -> Figure:
        pairs = zip(self.subject.samples, self.baseline.samples, strict=True)
        return Figure("ratio", "×", [s / b for s, b in pairs if b > 0])


@dataclass
class Section:
    title: str
    intro: str
    comparisons: list[Comparison] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.intro, ""]
        if self.comparisons:
            lines += [
                "| measured | unit | min | median | max | runs |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for c in self.comparisons:
                r = c.ratios()
                n = len(c.subject.samples)
                lines.append(f"| **{c.title}**: {c.subject.name} | {c.subject.unit} | "
                             f"{c.subject.cells()} | {n} |")  # fmt: skip
                lines.append(f"| baseline: {c.baseline.name} | {c.baseline.unit} | "
                             f"{c.baseline.cells()} | {n} |")  # fmt: skip
                lines.append(f"| ratio subject / baseline | × | {r.cells()} | {n} |")
            lines.append("")
        if self.figures:
            lines += ["| figure | unit | min | median | max | runs |",
                      "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
            for f in self.figures:
                lines.append(f"| {f.name} | {f.unit} | {f.cells()} | {len(f.samples)} |")
            lines.append("")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def timed(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _version(cmd: Sequence[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "?"


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, {platform.system()} "
        f"{platform.release()}",
        f"- Python {platform.python_version()}; {_version(['ffmpeg', '-version'])}; "
        f"{_version(['espeak-ng', '--version'])}; mosquitto "
        f"{_version(['dpkg-query', '-W', '-f', '${Version}', 'mosquitto'])}",
    ]


def write_report(path: os.PathLike[str] | str, sections: Sequence[Section], command: str) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench`; do not edit by hand. Each figure is measured beside a "
        "baseline in the same run, on the same machine, and reported as min / median / max "
        "over repeated runs. Read the ratios: absolute times depend on the machine and on "
        "what else it was doing.",
        "",
        *machine(),
        f"- Reproduce: `{command}`",
        "",
    ]
    body = "\n".join(lines) + "\n" + "\n".join(s.markdown() for s in sections)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(body)
