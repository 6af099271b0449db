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


def test_a_per_step_warm_up_as_long_as_the_run_is_fitted_to_half_of_it():
    from stemsweep.identity import run_signature

    with paths_unchecked():
        first = validated_config(compose(["epochs=1"]))  # the short schedule's 1-epoch warm-up, the first sweep
        assert first.schedule.warmup_epochs == 0.5
        # the fitted value is what the run means: the same run as one that asked for it
        assert run_signature(first) == run_signature(validated_config(compose(["epochs=1",
                                                                                "schedule.warmup_epochs=0.5"])))
        assert validated_config(compose(["epochs=2"])).schedule.warmup_epochs == 1.0  # it fits: kept
        message = (r"^schedule.warmup_epochs=5.0 is not allowed with epochs=1 and schedule.step=epoch: warm-up must "
                   r"end before the last epoch; lower it, or use schedule=short")
        with pytest.raises(ConfigError, match=message):  # per epoch, it would hold the whole run at the start
            validated_config(compose(["epochs=1", "schedule=paper"]))
