"""Settings that are valid but make a run's numbers mean less than they seem, at small scale.

The paper's recipe is written for ImageNet: 625 steps an epoch, 50+ epochs, a 50,000-image test set.
A short CPU run or a small data set can turn a default into something else without any error: an EMA
that is a plain copy, a warm-up that covers the whole run, an error counted over a few hundred images.
Each is a warning that names the value and what would make it meaningful; training logs them and
summary.json keeps them (`warnings`).
"""

from __future__ import annotations

import math

from stemsweep.config import RunConfig
from stemsweep.record.summary import MAX_INITIAL_SHARE

MIN_TEST_IMAGES = 1000  # below this one test image moves the error by more than 0.1 points


def scale_warnings(cfg: RunConfig, steps_per_epoch: int, train_images: int, test_images: int,
                   ema_alpha: float) -> list[str]:
    warnings = []
    schedule = cfg.schedule
    if 0 < schedule.warmup_epochs * steps_per_epoch < 1:
        warnings.append(f"schedule.warmup_epochs={schedule.warmup_epochs} is less than one of the "
                        f"{steps_per_epoch} steps an epoch: there is no warm-up")
    if schedule.step == "epoch" and 0 < schedule.warmup_epochs and math.ceil(schedule.warmup_epochs) >= cfg.epochs:
        warnings.append(f"schedule.step=epoch sets the lr once per epoch, so warmup_epochs="
                        f"{schedule.warmup_epochs} keeps all of its {_epochs(cfg.epochs)} at the warm-up lr "
                        f"({schedule.warmup_factor}× to start); use schedule.step=iteration or more epochs")
    if cfg.ema.enabled:
        if ema_alpha >= 1.0:
            warnings.append(f"ema: α = min(1, alpha · batch / epochs · period) is 1 at this scale (batch "
                            f"{cfg.batch_size}, {_epochs(cfg.epochs)}, {train_images} training images, period "
                            f"{cfg.ema.period}): the EMA is a copy of the model every {cfg.ema.period} steps, "
                            "not an average; set a smaller ema.alpha, or ema.enabled=false")
        elif schedule.warmup_epochs == 0:  # no plain copy during warm-up: the EMA starts as the initial model
            updates = cfg.epochs * (steps_per_epoch // cfg.ema.period + 1)
            share = (1.0 - ema_alpha) ** updates
            if share > MAX_INITIAL_SHARE:
                warnings.append(f"ema: after its {updates} updates (α={ema_alpha:.3g}, no warm-up) the EMA "
                                f"will still be {share:.0%} the untrained initial model: its error is not "
                                "the study's, the model's is (summary.json: study_error_source); set a "
                                "larger ema.alpha, schedule.warmup_epochs > 0, or more epochs")
    if test_images < MIN_TEST_IMAGES:
        warnings.append(f"the test errors are counted over {test_images} images (data.test_subset="
                        f"{cfg.data.test_subset}): each image is {100 / test_images:.2g} points, so differences "
                        f"of a point or two are noise; use {MIN_TEST_IMAGES} or more for results")
    return warnings


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"
