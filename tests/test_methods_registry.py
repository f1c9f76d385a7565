"""The method registry and recipes as configs: frozen, checked when made, round-tripping through plain dicts."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from srq.engine.distill import FinetuneConfig
from srq.errors import ConfigError, SrqError
from srq.methods import GBA, METHODS, OMSE, PTQ4SR, SPR2Q, AdaBM, MinMax, Percentile, Recipe
from srq.methods.base import RECIPE_VERSION, apply_params
from srq.methods.registry import get_method, list_methods, method_names, methods_markdown, register_method
from srq.quant import LayerRule

REPO = Path(__file__).resolve().parents[1]
NAMES = method_names()


def test_every_documented_method_is_registered_and_methods_maps_to_the_registry():
    assert {"minmax", "percentile", "omse", "minmax_ft", "percentile_ft", "ptq4sr", "adabm", "adabm_star", "gba",
            "gba_star", "spr2q"} <= set(NAMES)
    assert list(METHODS) == NAMES
    for info in list_methods():
        assert info.description and "\n" not in info.description and info.paper and "\n" not in info.paper
    assert [m.name for m in list_methods() if not m.savable] == ["adabm", "adabm_star"]


@pytest.mark.parametrize("name", NAMES)
def test_every_method_constructs_with_defaults_and_round_trips(name):
    recipe = METHODS[name]()
    info = get_method(name)
    assert isinstance(recipe, info.recipe) and all(getattr(recipe, k) == v for k, v in info.preset.items())
    d = recipe.to_dict()
    assert d["recipe_version"] == RECIPE_VERSION
    assert Recipe.from_dict(d) == recipe and type(Recipe.from_dict(d)) is type(recipe)
    assert info.recipe.from_dict(d) == recipe
    again = Recipe.from_dict(json.loads(json.dumps(d)))  # as read back from srq.json
    assert again == recipe and again.to_dict() == d
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.w_bits = 2  # type: ignore[misc]


def test_round_trip_keeps_changed_nested_configs_rules_and_tuples():
    recipe = GBA(w_bits=3, a_bits=2, mp_weights=True, candidates=(-2, 0, 2), rules=[LayerRule("body.0", w_bits=8)],
                 alloc=FinetuneConfig(lr=0.2, steps=7, outlier_factor=100), budget="bitops")
    back = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert back == recipe and back.rules == (LayerRule("body.0", w_bits=8),) and back.candidates == (-2, 0, 2)
    assert back.alloc.steps == 7 and back.to_dict()["method"] == "gba"
    assert Recipe.from_dict(SPR2Q(rectifier_lr=1e-3).to_dict()).rectifier_lr == 1e-3


def test_from_dict_reads_dicts_written_before_the_version_and_rejects_bad_ones():
    d = MinMax(fine_tune=True).to_dict()
    old = {k: v for k, v in d.items() if k != "recipe_version"}
    assert Recipe.from_dict(old) == MinMax(fine_tune=True)
    cases = [({**d, "nonsense": 1}, "unknown MinMax key(s) 'nonsense'"),
             ({**d, "finetune_config": {**d["finetune_config"], "lrr": 1}}, "unknown FinetuneConfig key(s) 'lrr'"),
             ({**d, "recipe_version": RECIPE_VERSION + 1}, "recipe_version"),
             ({**d, "method": "nosuch"}, "unknown method 'nosuch'"),
             ({**d, "fine_tune": False}, "fixes fine_tune=True"),
             ({**d, "a_observer": "omse"}, "a_observer 'omse'"),
             ({k: v for k, v in d.items() if k != "method"}, "needs its 'method'")]
    for bad, fragment in cases:
        with pytest.raises(ConfigError, match=re.escape(fragment)) as e:
            Recipe.from_dict(bad)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="not a GBA recipe"):
        GBA.from_dict(d)


# (recipe class, field overrides, fragment of the one-line error)
COMMON = [({"w_bits": 9}, "w_bits must be an integer from 1 to 8, got 9"), ({"a_bits": 0}, "a_bits must be"),
          ({"w_bits": 4.5}, "w_bits must be int"), ({"rules": [{"pattern": "x"}]}, "rules must be tuple"),
          ({"first_last": "16bit"}, "first_last must be one of 8bit, fp, same")]
SPECIFIC = [
    (MinMax, {"fine_tune": "yes"}, "fine_tune must be bool"),
    (MinMax, {"finetune_config": {"lr": 1}}, "finetune_config must be FinetuneConfig"),
    (OMSE, {"finetune_config": None}, "finetune_config must be FinetuneConfig"),
    (Percentile, {"rules": (LayerRule("x"), "y")}, "rules must be tuple"),
    (PTQ4SR, {"calib_batch": 0}, "calib_batch must be at least 1"),
    (PTQ4SR, {"act_phase": "fast"}, "act_phase must be FinetuneConfig"),
    (AdaBM, {"a_init": "median"}, "a_init must be one of"),
    (AdaBM, {"epochs": -1}, "epochs must be at least 0"),
    (AdaBM, {"batch": 0}, "batch must be at least 1"),
    (AdaBM, {"calib_batch": 0}, "calib_batch must be at least 1"),
    (AdaBM, {"lr_image": 0.0}, "lr_image must be above 0"),
    (AdaBM, {"w_bitloss": -1.0}, "w_bitloss must be at least 0"),
    (AdaBM, {"mp_weights": 1}, "mp_weights must be bool"),
    (GBA, {"offset_span": "wide"}, "offset_span must be one of candidates, full"),
    (GBA, {"budget": "flops"}, "budget must be one of size, bitops"),
    (GBA, {"dan": "batch"}, "dan must be one of none, range, std, capped"),
    (GBA, {"dan": "std", "dan_window": 8}, "dan_window needs dan='range'"),
    (GBA, {"dan_window": -1}, "dan_window must be at least 0"),
    (GBA, {"candidates": (-1, 1)}, "contain 0"),
    (GBA, {"candidates": (0, 0, 1)}, "distinct"),
    (GBA, {"candidates": (0, 9)}, "within -7"),
    (GBA, {"candidates": (0, 0.5)}, "candidates must be tuple[int, ...]"),
    (GBA, {"init_batch": 0}, "init_batch must be at least 1"),
    (GBA, {"init_epochs": 0}, "init_epochs must be at least 1"),
    (GBA, {"seed": "0"}, "seed must be int"),
    (SPR2Q, {"rank": -1}, "rank must be at least 0"),
    (SPR2Q, {"group_size": 0}, "group_size must be at least 1"),
    (SPR2Q, {"iterations": -5}, "iterations must be at least 0"),
    (SPR2Q, {"osrc_iterations": -1}, "osrc_iterations must be at least 0"),
    (SPR2Q, {"batch": 0}, "batch must be at least 1"),
    (SPR2Q, {"lr": 0.0}, "lr must be above 0"),
    (SPR2Q, {"rectifier_lr": -1e-3}, "rectifier_lr must be above 0"),
    (SPR2Q, {"lambda_feat": -1.0}, "lambda_feat must be at least 0"),
    (SPR2Q, {"osrc": "no"}, "osrc must be bool"),
]
INVALID = [(get_method(n).recipe, fields, fragment) for n in NAMES for fields, fragment in COMMON] + SPECIFIC


@pytest.mark.parametrize("cls, fields, fragment", INVALID,
                         ids=[f"{c.__name__}-{'-'.join(f)}-{i}" for i, (c, f, _) in enumerate(INVALID)])
def test_invalid_fields_fail_at_construction_with_one_line(cls, fields, fragment):
    with pytest.raises(ConfigError) as e:
        cls(**fields)
    message = str(e.value)
    assert fragment in message and "\n" not in message and message.startswith(cls.__name__)
    assert isinstance(e.value, ValueError) and isinstance(e.value, SrqError)  # CLI: one line, exit 2


@pytest.mark.parametrize("fields, fragment", [({"optimizer": "rmsprop"}, "optimizer must be one of adam, sgd"),
                                              ({"feature_loss": "l2"}, "feature_loss must be one of mse, mse_norm,"),
                                              ({"epochs": 0}, "epochs must be at least 1"),
                                              ({"steps": -1}, "steps must be at least 0"),
                                              ({"lambda_feat": -1.0}, "lambda_feat must be at least 0"),
                                              ({"outlier_factor": 1}, "outlier_factor must be above 1"),
                                              ({"lr": 0}, "lr must be above 0"), ({"batch": 2.0}, "batch must be int")])
def test_finetune_config_is_checked_too(fields, fragment):
    with pytest.raises(ConfigError, match=fragment):
        FinetuneConfig(**fields)


def test_values_are_stored_as_their_annotated_type():
    recipe = SPR2Q(lr=1, rules=[LayerRule("a")])
    assert isinstance(recipe.lr, float) and recipe.rules == (LayerRule("a"),)
    assert GBA(candidates=[-1, 0, 1]).candidates == (-1, 0, 1)


def test_variants_keep_their_preset_and_params_still_apply():
    assert METHODS["gba_star"](w_bits=3) == GBA(w_bits=3, mp_weights=True)
    assert METHODS["adabm_star"]().mp_weights and METHODS["percentile_ft"]().fine_tune
    with pytest.raises(ConfigError, match="method minmax_ft fixes fine_tune=True"):
        METHODS["minmax_ft"](fine_tune=False)
    recipe = apply_params(METHODS["gba_star"](), ["alloc.steps=3", "offset_span=full"])
    assert recipe.mp_weights and recipe.alloc.steps == 3 and recipe.offset_span == "full"
    with pytest.raises(SrqError, match="offset_span must be one of"):
        apply_params(GBA(), ["offset_span=wide"])


def test_registering_twice_or_with_an_unknown_preset_fails():
    with pytest.raises(ValueError, match="registered twice"):
        register_method("gba", description="x", paper="y")(GBA)
    with pytest.raises(ValueError, match="not fields of GBA"):
        register_method("gba_fast", description="x", paper="y", preset={"speed": 2})(GBA)
    assert "gba_fast" not in method_names()


def test_adabm_does_not_import_gba():
    tree = ast.parse((REPO / "src" / "srq" / "methods" / "adabm.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "gba" not in imported and "bit_slots" in imported


def test_readme_method_table_is_the_registry():
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- methods table:")
    table = readme[readme.index("\n", start) + 1:readme.index("<!-- end of methods table -->")]
    assert table == methods_markdown(), ("README's method table is out of date; paste the output of "
                                         "python -c 'from srq.methods.registry import methods_markdown as m; "
                                         "print(m(), end=\"\")'")


def _srq(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srq.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300)


def test_srq_methods_lists_every_method():
    proc = _srq("methods")
    assert proc.returncode == 0, proc.stderr
    listed = {line.split("│")[1].strip() for line in proc.stdout.splitlines() if line.count("│") > 2}
    assert set(NAMES) <= listed
    assert "PTQ4SR (Tu et al., CVPR 2023)" in proc.stdout and "Gradient Knows Best" in proc.stdout
    only = _srq("methods", "gba*")
    assert only.returncode == 0 and "gba_star" in only.stdout and "minmax" not in only.stdout
    bad = _srq("methods", "nosuch*")
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: no method matches"), bad.stderr
    helptext = _srq("quantize", "--help").stdout
    assert all(name in helptext for name in ("adabm_star", "percentile_ft", "spr2q"))


def test_the_cli_help_names_every_registered_method():
    from srq.cli import METHOD_NAMES

    assert list(METHOD_NAMES) == NAMES  # a new method: add its name to srq.cli.METHOD_NAMES
