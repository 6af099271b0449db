"""How a wave's decision reads, wherever it is shown: `study status`, the study's log (study/stages.py) and
the report (analysis/report.py). A decision is an entry of a study record's `waves[].decisions`
(study/adaptive.py writes them); both readers sit above this layer, so its words are kept here once."""

from __future__ import annotations

from typing import Any

OUTCOME_WORDS = {"a_better": "A better", "b_better": "B better", "equal": "equal within the margin"}


def decision_words(decision: dict[str, Any]) -> str:
    """`A better after 24`, `open at 64` (open at its maximum: final), `open after 8`."""
    outcome, n = decision["outcome"], decision["n"]
    if outcome == "open":
        return f"open at {n}" if decision["final"] else f"open after {n}"
    return f"{OUTCOME_WORDS.get(outcome, outcome)} after {n}"


def left_out_text(decision: dict[str, Any]) -> str | None:
    """The replicates left out because their runs failed for good (reported, never silently dropped)."""
    left = decision.get("left_out") or {}
    if left.get("a") or left.get("b"):
        return f"left out, failed: A {left.get('a') or '-'}, B {left.get('b') or '-'}"
    return None
