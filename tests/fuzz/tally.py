"""The figures of a fuzz run: per decoder, how many cases were tried and what became of them.

Every example a fuzz test tries runs inside `tally.case(decoder)`, which records exactly one
outcome: refused (a typed error, or a 4xx JSON answer), dropped (and counted by the code
under test), accepted, or crash (any unexpected exception: the test fails anyway).
`examples()` sizes every test from LOA_FUZZ_EXAMPLES, so `make soak` can run thousands.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings

OUTCOMES = ("refused", "dropped", "accepted", "crashes")
DEFAULT_EXAMPLES = 40  # keeps tests/fuzz under 90 s on a loaded two-core machine


def examples(scale: float = 1.0) -> int:
    """Examples per test: LOA_FUZZ_EXAMPLES (default DEFAULT_EXAMPLES) times `scale`."""
    raw = os.environ.get("LOA_FUZZ_EXAMPLES", "")
    base = int(raw) if raw.strip().isdigit() else DEFAULT_EXAMPLES
    return max(1, round(base * scale))


def fuzz_settings(scale: float = 1.0) -> settings:
    """Hypothesis settings for a fuzz test: sized by examples(); no deadline (the machine is
    shared and inputs are big); no health check that only complains about slowness or size."""
    return settings(
        max_examples=examples(scale),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
    )


@dataclass
class Case:
    """One example: exactly one outcome is recorded."""

    outcome: str | None = None

    def _set(self, outcome: str) -> None:
        if self.outcome is not None and self.outcome != outcome:
            raise AssertionError(f"case already {self.outcome}, now {outcome}")
        self.outcome = outcome

    def refused(self) -> None:
        self._set("refused")

    def dropped(self) -> None:
        self._set("dropped")

    def accepted(self) -> None:
        self._set("accepted")


@dataclass
class Tally:
    """Counts per decoder, kept for the whole pytest session."""

    rows: dict[str, Counter[str]] = field(default_factory=dict)

    @contextmanager
    def case(self, decoder: str) -> Iterator[Case]:
        row = self.rows.setdefault(decoder, Counter())
        current = Case()
        try:
            yield current
        except BaseException:
            row["cases"] += 1
            row["crashes"] += 1
            raise
        if current.outcome is None:
            row["cases"] += 1
            row["crashes"] += 1
            raise AssertionError(f"{decoder}: the case recorded no outcome")
        row["cases"] += 1
        row[current.outcome] += 1

    def as_json(self) -> list[dict[str, Any]]:
        return [
            {"decoder": name, "cases": row["cases"], **{o: row[o] for o in OUTCOMES}}
            for name, row in sorted(self.rows.items())
        ]

    def merge(self, rows: list[dict[str, Any]]) -> None:
        """Add another process's counts (as_json): a parallel run's workers each keep one."""
        for item in rows:
            row = self.rows.setdefault(item["decoder"], Counter())
            row.update({k: item[k] for k in ("cases", *OUTCOMES)})

    def lines(self) -> list[str]:
        header = "decoder | cases | refused | dropped+counted | accepted | crashes"
        out = [header]
        for item in self.as_json():
            out.append(
                f"{item['decoder']} | {item['cases']} | {item['refused']} | {item['dropped']}"
                f" | {item['accepted']} | {item['crashes']}"
            )
        total = Counter[str]()
        for row in self.rows.values():
            total.update(row)
        out.append(
            f"TOTAL | {total['cases']} | {total['refused']} | {total['dropped']}"
            f" | {total['accepted']} | {total['crashes']}"
        )
        return out

    def write(self, path: Path) -> None:
        total = Counter[str]()
        for row in self.rows.values():
            total.update(row)
        doc = {
            "examples_per_test": examples(),
            "decoders": self.as_json(),
            "total": {"cases": total["cases"], **{o: total[o] for o in OUTCOMES}},
        }
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
