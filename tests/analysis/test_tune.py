"""`stemsweep tune`: each model's best lr/wd draw, as a conf/tuning/ option that runs resolve from."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from stemsweep.analysis.load import load_runs
from stemsweep.analysis.tune import tuning_yaml
from stemsweep.cli import main as cli
from stemsweep.compose import compose
from stemsweep.config import paths_unchecked, validated_config

SWEEPS = ["mini_lrwd_adamw", "mini_lrwd_sgd"]


def tune(records, out):
    return cli(["tune", str(records), "--sweeps", *SWEEPS, "--out", str(out)])


def test_tune_writes_each_models_best_finished_draw_per_optimizer(records_dir, tmp_path, capsys):
    out = tmp_path / "mini.yaml"
    assert tune(records_dir, out) == 0
    assert f"tuning written to {out}" in capsys.readouterr().out
    tuning = OmegaConf.to_container(OmegaConf.load(out))
    runs = load_runs(records_dir)
    draws = runs[runs["sweep"].isin(SWEEPS)].assign(stem=lambda t: t["stem"].fillna("none"))
    assert (draws["status"] == "diverged").any()  # ViT_P-XS with SGD: a diverged draw is never the best
    cells = 0
    for (size, stem, optimizer), group in draws.groupby(["size", "stem", "optimizer"]):
        best = group[group["status"] == "done"].sort_values("error").iloc[0]
        assert tuning[size][stem][optimizer] == pytest.approx({"lr": best["lr"], "wd": best["wd"]}, rel=1e-3)
        cells += 1
    assert cells == 6  # ViT_P-XS, ViT_C-XS, RegNetY-XS × AdamW, SGD
    assert set(tuning) == {"vit_xs", "regnety_xs"} and set(tuning["vit_xs"]) == {"patch", "conv"}


def test_a_run_resolves_its_lr_wd_from_the_tuning_unless_given(records_dir, tmp_path):
    out = tmp_path / "mini.yaml"
    assert tune(records_dir, out) == 0
    tuning = OmegaConf.load(out)

    def resolved(*overrides):
        cfg = compose(["model=vit_xs", "stem=conv", "optimizer=sgd", *overrides])
        OmegaConf.set_struct(cfg, False)  # merged into the schema, as composing `tuning=<option>` does
        cfg = OmegaConf.merge(cfg, {"tuning": tuning})
        with paths_unchecked():
            return validated_config(cfg).optimizer

    opt = resolved()
    assert (opt.lr, opt.wd) == pytest.approx((tuning.vit_xs.conv.sgd.lr, tuning.vit_xs.conv.sgd.wd))
    assert resolved("optimizer.lr=0.3").lr == 0.3  # a value given wins over the tuning
    regnety = compose(["model=regnety_xs", "optimizer=adamw"])
    with paths_unchecked():  # no tuning: the model's own tuned values (conf/model/family/cpu.yaml)
        assert validated_config(regnety).optimizer.lr == 1.6e-2


def test_tuning_from_a_sweep_without_runs_is_a_clear_error_that_writes_nothing(records_dir, tmp_path, capsys):
    out = tmp_path / "mini.yaml"
    assert cli(["tune", str(records_dir), "--sweeps", "mini_lrwd_adamw", "lrwd_sgd", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no runs of sweep lrwd_sgd found" in err and "mini_lrwd_sgd" in err  # names what there is
    assert not out.exists()


def test_tuned_values_read_back_as_floats():
    import pandas as pd

    table = pd.DataFrame([{"size": "vit_xs", "stem": "conv", "optimizer": "adamw", "lr": 1e-3, "wd": 5e-05,
                           "error": 12.5, "draws": 16, "finished": 16, "diverged": 0}])
    loaded = OmegaConf.create(tuning_yaml(table, ["mini_lrwd_adamw"]))
    assert isinstance(loaded.vit_xs.conv.adamw.lr, float) and loaded.vit_xs.conv.adamw.lr == 1e-3
    assert loaded.vit_xs.conv.adamw.wd == 5e-05


def test_a_tuning_name_is_written_to_conf_local_where_that_name_is_found_first(records_dir, capsys):
    import uuid

    from stemsweep.config import LOCAL_CONF_DIR

    name = f"test_{uuid.uuid4().hex[:8]}"
    path = LOCAL_CONF_DIR / "tuning" / f"{name}.yaml"
    try:
        assert tune(records_dir, name) == 0
        assert f"tuning written to {path}" in capsys.readouterr().out  # outside the tracked tree
        written = OmegaConf.load(path).vit_xs.conv.sgd
        with paths_unchecked():
            opt = validated_config(compose(["model=vit_xs", "stem=conv", "optimizer=sgd", f"tuning={name}"])).optimizer
        assert (opt.lr, opt.wd) == (written.lr, written.wd)
    finally:
        path.unlink(missing_ok=True)
