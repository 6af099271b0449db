"""Every committed record's signature still follows from its config.yaml (golden: results/).

Folder names, summary signatures and the settings that group seed repeats all come from the run's
identity; a change to the identity code that moved one of them would orphan every record written before
it. No torch here: config → identity → hash only.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from stemsweep.config import RunConfig, paths_unchecked

ROOT = Path(__file__).resolve().parents[1]
STUDIES = {"results/mini-study": 153, "results/mini-study-4ep": 102, "results/mini-adaptive": 160}  # 415 records


@functools.cache
def schema():
    return OmegaConf.structured(RunConfig)  # made once: it is most of a merge's time, and merging copies it


def signatures_from_config(config_yaml: Path) -> tuple[str, str]:
    """(run signature, setting signature) recomputed from a record's config.yaml through the public
    identity API, as a run computes them (paths unchecked: a record names data that may not be here)."""
    from stemsweep.config import validated_config
    from stemsweep.identity import identity_signature, run_identity, setting_signature

    with paths_unchecked():
        cfg = validated_config(OmegaConf.merge(schema(), OmegaConf.load(config_yaml)))
    identity = run_identity(cfg)
    return identity_signature(identity), setting_signature(identity)


@pytest.mark.parametrize("study", list(STUDIES))
def test_every_committed_record_signature_is_recomputed_from_its_config(study):
    records = sorted(p for p in (ROOT / study).iterdir() if p.is_dir() and not p.name.startswith("."))  # .studies/
    assert len(records) == STUDIES[study]  # a lost folder fails here, not silently below
    wrong = []
    for record in records:
        summary = json.loads((record / "summary.json").read_text())
        signature, setting = signatures_from_config(record / "config.yaml")
        if not (signature == record.name == summary["signature"] and setting == summary["setting"]):
            wrong.append(f"{record.name}: config gives {signature} (setting {setting}), summary says "
                         f"{summary['signature']} (setting {summary['setting']})")
    assert not wrong, "\n".join(wrong)

