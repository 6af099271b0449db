"""Config validation raises one ConfigError line, also for a value found through a resolver."""

from __future__ import annotations

import pytest

from stemsweep.compose import compose
from stemsweep.config import ConfigError, paths_unchecked, validated_config


def test_a_bad_value_in_the_fine_tuning_source_is_its_one_line_config_error(tmp_path):
    # init_from is `${run_signature:…}`: validating the fine-tuning run validates its source's config
    # inside OmegaConf's resolver, which wraps what it raises.
    composed = compose(["+sweeps=peak", "+stage=in1k_finetune", "model=regnety_4gf", "stem=conv",
                        f"runs_root={tmp_path}"])
    message = r"^stem=conv is not allowed with model=regnety_4gf: RegNetY has its own stem \(stem=none\)$"
    with paths_unchecked(), pytest.raises(ConfigError, match=message):
        validated_config(composed)
