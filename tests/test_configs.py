"""One name in one place: the registries (losses, models, methods, samplers), the schemas stored in Hydra's
ConfigStore and the YAML folders agree; every experiment preset composes and validates for every value of
its sweep; no module imports from a layer above its own."""

import ast
from pathlib import Path

import pytest
import yaml
from conftest import REPO, compose_run, hydra_compose
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

import imbalance_lab.app  # noqa: F401  (fills the ConfigStore)
from imbalance_lab import run, schema
from imbalance_lab.losses import LOSSES
from imbalance_lab.models import BACKBONES
from imbalance_lab.train.samplers import epoch_indices

CONFIGS = REPO / "configs"


def options(group: str) -> set[str]:
    return {p.stem for p in (CONFIGS / group).glob("*.yaml")}


@pytest.fixture(scope="module")
def compose():
    with hydra_compose() as compose:
        yield compose


def test_every_registered_loss_has_its_schema_and_yaml_and_every_yaml_is_a_registered_loss(compose):
    stored = ConfigStore.instance().repo["schema"]["loss"]
    assert {name.removesuffix(".yaml") for name in stored} == set(LOSSES)
    assert set(LOSSES) <= options("loss")
    for option in sorted(options("loss")):
        config, _, chosen = compose_run(f"loss={option}", compose=compose)
        assert chosen == option
        assert type(config.loss) is LOSSES[config.loss.name].Config  # variants start from a registered loss
        if option in LOSSES:  # a registered loss's YAML states no default of its own
            assert config.loss == LOSSES[option].Config()
    assert all(loss.Config.name == name for name, loss in LOSSES.items())


def test_models_methods_and_samplers_are_one_list_each(compose):
    assert options("model") == set(BACKBONES)
    for option in sorted(options("model")):
        assert compose_run(f"model={option}", compose=compose)[0].model.name == option
    assert {*run.STACK_METHODS, *run.SOLO_METHODS} == set(schema.METHODS)
    import torch

    labels = torch.tensor([0, 0, 0, 1])
    for kind in schema.SAMPLERS:  # every sampler the schema allows is one the trainer draws
        assert len(epoch_indices(kind, labels, torch.bincount(labels), torch.Generator())) > 0


def test_a_loss_name_that_disagrees_with_the_option_is_refused(compose):
    with pytest.raises(schema.ConfigError, match=r"^loss.name='focal' is not allowed: the name of the loss "
                                                 r"option chosen \(ce\)"):
        compose_run("loss=ce", "loss.name=focal", compose=compose)


def sweep_points(params) -> list[list[str]]:
    """Override lists of a preset's sweep in which every value of every parameter (seeds aside) occurs at
    least once: point i takes each parameter's i-th value, cycling (a handful of composes, not the grid)."""
    values = {key: [v.strip() for v in str(vals).split(",")] for key, vals in params.items() if key != "seed"}
    return [[f"{key}={vals[i % len(vals)]}" for key, vals in values.items()]
            for i in range(max(map(len, values.values())))]


@pytest.mark.parametrize("preset", sorted(options("experiment")))
def test_every_experiment_preset_composes_and_validates_for_every_sweep_value(compose, preset):
    params = compose(f"experiment={preset}").hydra.sweeper.params
    assert params
    # a decoupled stage 2 is given its stage-1 folder on the command line (any folder passes the config-time check)
    stage1 = [f"decoupled.stage1={REPO}"] if compose(f"experiment={preset}").method == "decoupled" else []
    for point in sweep_points(params):
        compose_run(f"experiment={preset}", *point, *stage1, compose=compose)


# ----------------------------------------------------------------------------- one default per value
SCHEMAS = {"data": schema.DataConfig, "model": schema.ModelConfig, "optim": schema.OptimConfig}


def leaves(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def stated(path: Path) -> tuple[list, dict]:
    """A YAML file's defaults list and the values it states itself (Hydra's own settings aside)."""
    raw = yaml.safe_load(path.read_text()) or {}
    defaults = raw.pop("defaults", [])
    raw.pop("hydra", None)
    return defaults, leaves(raw)


@pytest.mark.parametrize("group", ["data", "model", "optim", "loss"])
def test_group_yaml_files_state_only_what_differs_from_what_they_start_from(compose, group):
    for path in sorted((CONFIGS / group).glob("*.yaml")):
        defaults, values = stated(path)
        parent = next(d for d in defaults if d != "_self_")
        if parent.startswith("/schema/"):  # the schema's defaults
            name = parent.split("/")[3].split("@")[0]
            base = OmegaConf.structured(LOSSES[name].Config if group == "loss" else SCHEMAS[group])
        else:  # another option of the group
            base = compose(f"{group}={parent}")[group]
        same = [key for key, value in values.items() if OmegaConf.select(base, key, default=object()) == value]
        assert not same, f"{path.relative_to(REPO)} restates {same}"


def test_experiment_presets_state_only_what_differs(compose):
    assert stated(CONFIGS / "config.yaml")[1] == {}  # the defaults are the schema's
    for path in sorted((CONFIGS / "experiment").glob("*.yaml")):
        defaults, values = stated(path)
        base = []
        for entry in defaults:
            if isinstance(entry, dict):  # override /group: option
                ((key, option),) = entry.items()
                base.append(f"{key.removeprefix('override /')}={option}")
            else:  # another preset it extends
                base.append(f"experiment={entry}")
        cfg = compose(*base)
        same = [key for key, value in values.items() if OmegaConf.select(cfg, key) == value]
        assert not same, f"{path.relative_to(REPO)} restates {same}"


# ----------------------------------------------------------------------------- import layers
# A module may import from its own layer and the ones before it, never from a later one.
LAYERS = [
    {"schema", "atomic", "runfolder", "worker", "preemption", "provenance"},
    {"data"},
    {"losses"},
    {"models"},
    {"train", "metrics", "plots"},
    {"evaluation", "record", "checkpoint", "baselines", "loggers"},
    {"run"},
    {"configstore", "app", "__main__", "report", "compare", "callbacks", "reference", "mirror", "__init__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def package_imports(path: Path) -> set[str]:
    """The top-level parts of imbalance_lab that a module imports (anywhere in it, functions included)."""
    parts = path.relative_to(REPO / "imbalance_lab").with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = list(parts[:-1])[: len(parts) - node.level]
                target = base + (node.module.split(".") if node.module else [a.name for a in node.names])
            elif (node.module or "").startswith("imbalance_lab"):
                target = node.module.split(".")[1:] or [a.name for a in node.names]
            else:
                continue
            found.add(target[0] if target else "__init__")
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("imbalance_lab.")}
    return found


def test_no_module_imports_from_a_later_layer():
    modules = sorted((REPO / "imbalance_lab").rglob("*.py"))
    upward = []
    for path in modules:
        own = path.relative_to(REPO / "imbalance_lab").with_suffix("").parts[0]
        assert own in LAYER, f"{own} is in no layer: add it to LAYERS"
        upward += [f"{path.relative_to(REPO)} imports {name}" for name in package_imports(path)
                   if LAYER[name] > LAYER[own]]
    assert not upward


def test_help_lists_the_groups_users_choose_from_not_the_schemas():
    from imbalance_lab.configstore import option_groups

    with hydra_compose() as compose:
        help_cfg = compose().hydra.help
        groups = option_groups()
        template = help_cfg.template  # resolved as --help resolves it
    lines = dict(line.split(": ", 1) for line in groups.splitlines())
    assert set(lines) == {"data", "debug", "experiment", "hparams_search", "logger", "loss", "model", "optim"}
    assert lines["loss"].split(", ") == sorted(p.stem for p in (REPO / "configs" / "loss").glob("*.yaml"))
    assert groups in template and "schema/" not in template and "--config-dir" in template
