"""The stem vocabulary (models/stems.py) is the one source: the config, conf/stem/ and the models all
take their stems from it, and "no stem" converts the same way everywhere."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path

import pytest

from stemsweep.config import CONF_DIR, ConfigError, StemConfig, StemTuning
from stemsweep.models import SIZES, paper_name
from stemsweep.models.stems import (
    CONFIG_STEMS,
    NO_STEM,
    PAPER_LETTER,
    VIT_STEMS,
    config_stem,
    record_stem,
    uses_channels_last,
)


def test_the_config_takes_its_stems_from_the_vocabulary():
    assert {path.stem for path in Path(CONF_DIR, "stem").glob("*.yaml")} == set(CONFIG_STEMS)  # stem=NAME
    assert tuple(field.name for field in dataclasses.fields(StemTuning)) == CONFIG_STEMS  # conf/tuning/
    for name in CONFIG_STEMS:
        StemConfig(name=name)
    allowed = ", ".join(CONFIG_STEMS)
    with pytest.raises(ConfigError, match=rf"^stem='patchify' is not allowed: choose one of {allowed}$"):
        StemConfig(name="patchify")


def test_every_vit_stem_names_a_model_of_the_paper():
    assert set(PAPER_LETTER) == set(VIT_STEMS)
    names = {paper_name("vit_4gf", stem) for stem in VIT_STEMS}
    assert names == {"ViT_P-4GF", "ViT_C-4GF"}


@pytest.mark.parametrize("stem", CONFIG_STEMS)
def test_no_stem_converts_between_config_record_and_table(stem):
    recorded = record_stem(stem)
    assert recorded == (None if stem == NO_STEM else stem)
    assert config_stem(recorded) == stem
    if recorded is None:
        assert config_stem(math.nan) == NO_STEM  # a pandas column holds RegNetY's stem as NaN


@pytest.mark.parametrize("size", sorted(SIZES))
def test_channels_last_for_convolutions_only(size):
    spec = SIZES[size]
    if spec.family == "regnety":
        assert uses_channels_last(None, spec.family)
    else:
        assert [uses_channels_last(stem, spec.family) for stem in VIT_STEMS] == [False, True]  # patch, conv


def test_the_size_table_and_the_config_import_no_torch():
    """Config validation and sweep planning (a re-launched sweep whose runs are done) never load torch."""
    code = ("import sys, stemsweep.config, stemsweep.models, stemsweep.plan.runs, stemsweep.identity; "
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
