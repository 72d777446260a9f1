"""Hydra's ConfigStore, filled from the registries, and the check of a composed config against them.

``schema/loss/<name>`` is each registered loss's config dataclass (``configs/loss/<name>.yaml`` starts from
it); the model, data and optimiser groups share one schema each. ``--help`` lists the groups a user chooses
from, not these (``option_groups``, the resolver ``${imbalance_lab_groups:}`` in configs/hydra/default.yaml). A name that a type cannot check (which
model; a ``loss.name`` that disagrees with the loss option chosen; a ``trainer.mixup`` the loss cannot take; a
``method=decoupled`` run's ``decoupled`` settings) is checked here against the registries.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from .losses import LOSSES
from .models import BACKBONES
from .schema import Config, DataConfig, ModelConfig, OptimConfig, check, one_of, to_dataclasses


def register_configs() -> None:
    if not OmegaConf.has_resolver("imbalance_lab_groups"):
        OmegaConf.register_new_resolver("imbalance_lab_groups", option_groups)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    cs.store(group="schema/data", name="data", node=DataConfig)
    cs.store(group="schema/model", name="model", node=ModelConfig)
    cs.store(group="schema/optim", name="optim", node=OptimConfig)
    for name, loss in LOSSES.items():
        cs.store(group="schema/loss", name=name, node=loss.Config)


def option_groups() -> str:
    """The config groups a user chooses from, one line each with its options, for ``--help`` (Hydra's own list,
    ``$APP_CONFIG_GROUPS``, also shows the ``schema/*`` groups the YAML files are built on, which are no
    choice)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    loader = GlobalHydra.instance().config_loader()

    def groups(parent: str) -> list[str]:
        out = []
        for name in loader.list_groups(parent):
            group = f"{parent}/{name}" if parent else name
            if group.split("/")[0] in ("hydra", "schema"):
                continue
            if loader.get_group_options(group, ObjectType.CONFIG):
                out.append(group)
            out += groups(group)
        return out

    return "\n".join(f"{g}: {', '.join(sorted(loader.get_group_options(g)))}" for g in sorted(groups("")))


def validate(cfg: DictConfig) -> Config:
    """The composed config as dataclasses, every value range-checked (raises ``ConfigError``)."""
    config = to_dataclasses(cfg)
    one_of("model.name", config.model.name, BACKBONES)
    name = config.loss.name
    one_of("loss.name", name, LOSSES)
    check(isinstance(config.loss, LOSSES[name].Config), "loss.name", name,
          f"the name of the loss option chosen ({type(config.loss).name}); choose another loss with loss={name}")
    mixup = config.trainer.mixup
    if mixup is not None:
        from .train.mixup import MIXUPS

        check(mixup in MIXUPS, "trainer.mixup", mixup, "null or one of " + ", ".join(MIXUPS))
        check(config.method == "supervised", "trainer.mixup", mixup,
              f"null with method={config.method} (it mixes the labelled batches of supervised training)")
        refusal = LOSSES[name].mixup_refusal
        check(refusal is None, "trainer.mixup", mixup, f"null with loss={name}: {refusal}")
    if config.method == "decoupled":
        from .baselines.decoupled import check_config

        check_config(config)
    return config
