"""The experiment presets are the sources' recipes: each composes and validates with the key values read in the
authors' own training scripts (RECIPES, with where each was found), its header names the command that runs it,
and it trains one epoch on tiny data with its own loss and optimiser. (That every preset composes for every value
of its sweep is tests/test_configs.py's test.)

A recipe changed on purpose changes its row here too, with the source line that justifies it."""

import pytest
from conftest import REPO, compose_run, hydra_compose, run_in_process
from omegaconf import OmegaConf

from imbalance_lab.run import method_name

PRESETS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))

# The SGD recipe shared by Cui et al. (richardaecn/class-balanced-loss src/cifar_main.py:554-600: 200 epochs,
# batch 128, momentum 0.9, weight decay 2e-4, lr 0.1, boundaries 5/160/180 with multipliers 1, 0.01, 0.0001 from
# cifar_im_trainval*.sh:10, linear warm-up to epoch 5 in learning_rate_schedule, :27-48) and Cao et al.
# (kaidic/LDAM-DRW cifar_train.py:43-55 and adjust_learning_rate, :366-378). Crop + flip: Cui src/cifar.py:89-96,
# Cao cifar_train.py:142-143.
CIFAR_LT_SGD = {
    "model.name": "resnet32", "data.augment": True,
    "optim.name": "sgd", "optim.lr": 0.1, "optim.momentum": 0.9, "optim.nesterov": False,
    "optim.weight_decay": 2e-4, "optim.schedule": "multistep", "optim.milestones": [160, 180], "optim.gamma": 0.01,
    "optim.warmup_epochs": 5, "trainer.epochs": 200, "trainer.batch_size": 128,
}
# koshian2/affinity-loss: step_decay (÷5 at epochs 50 and 80), compile("adam", ...), fit(epochs=100), no weight
# decay, no augmentation; F1Callback scores the test set after every epoch and the script prints the maximum.
AFFINITY_ADAM = {
    "optim.name": "adam", "optim.weight_decay": 0.0, "optim.schedule": "multistep", "optim.milestones": [50, 80],
    "optim.gamma": 0.2, "optim.warmup_epochs": 0, "trainer.epochs": 100, "trainer.eval_every": 1,
    "data.augment": False, "loss.reg_weight": 1.0,  # affinity_loss.py:74, L_mm + rw
}
RATIOS_N = "2,5,10,20,50,100"  # minority test count n = 500 ... 10 of the sources' sweep (datasets.py, n ↔ 1000/r)

# preset -> (values of the composed preset, values under another option of its sweep, its sweep)
RECIPES = {
    "affinity_mnist": (
        {**AFFINITY_ADAM, "data.name": "mnist_even", "model.name": "cnn_mnist",
         "optim.lr": 1e-3,  # cnn_mnist_affinity.py:39-43 step_decay x = 1e-3
         "trainer.batch_size": 128,  # cnn_mnist_affinity.py:69-70
         "loss.name": "affinity", "loss.m": 1, "loss.sigma": 10.0,  # :29 ClusteringAffinity(10, 1, 10.0)
         "loss.lam": 0.75},  # :64 affinity_loss(0.75)
        {"loss=affinity_m5": {"loss.m": 5, "loss.sigma": 10.0, "loss.lam": 0.75}},  # article 001: m = 1, 5
        {"data.imbalance": RATIOS_N, "loss": "ce,affinity,affinity_m5", "seed": "0,1,2,3,4"},  # 5 runs each
    ),
    "affinity_cifar10": (
        {**AFFINITY_ADAM, "data.name": "cifar10_even", "model.name": "cnn_cifar",
         "optim.lr": 5e-3,  # cnn_cifar_affinity.py:47-51 step_decay x = 5e-3
         "trainer.batch_size": 640,  # cnn_cifar_affinity.py:82-83
         "loss.name": "affinity", "loss.m": 1, "loss.sigma": 90.0,  # :34 ClusteringAffinity(10, 1, 90.0)
         "loss.lam": 0.43},  # :71 affinity_loss(0.43)
        {"loss=affinity_cifar_m5": {"loss.m": 5, "loss.sigma": 90.0, "loss.lam": 0.43}},
        {"data.imbalance": RATIOS_N, "loss": "ce,affinity_cifar,affinity_cifar_m5", "seed": "0,1,2,3,4"},
    ),
    "cb_cifar10_lt": (
        {**CIFAR_LT_SGD, "data.name": "cifar10_lt", "data.profile": "exp",
         "trainer.eval_every": 2,  # cifar_main.py:569 --eval-epochs 2
         "loss.name": "cb", "loss.base": "softmax",
         "loss.gamma": 1.0},  # cifar_im_trainval*.sh:16 GAMMA=1.0
        {"loss.base=focal": {"loss.base": "focal", "loss.gamma": 1.0}},
        # Cui Table 2 ratios; cifar_im_trainval.sh:7 BETA=0, cifar_im_trainval_cb.sh:7 BETA=0.9999
        {"data.imbalance": "200,100,50,20,10,1", "loss.base": "softmax,sigmoid,focal", "loss.beta": "0,0.9999",
         "seed": "0,1,2"},
    ),
    "cb_cifar100_lt": (
        {**CIFAR_LT_SGD, "data.name": "cifar100_lt", "data.source": "cifar100", "data.profile": "exp",
         "trainer.eval_every": 2, "loss.name": "cb", "loss.gamma": 1.0},
        {},
        {"data.imbalance": "200,100,50,20,10,1", "loss.base": "softmax,sigmoid,focal", "loss.beta": "0,0.9999",
         "seed": "0,1,2"},
    ),
    "ldam_drw_cifar10_lt": (
        {**CIFAR_LT_SGD, "data.name": "cifar10_lt", "data.profile": "exp",
         "trainer.eval_every": 1,  # cifar_train.py:224-228 validates every epoch, keeps best_acc1
         "loss.name": "ce"},  # README: --loss_type CE --train_rule None
        {"loss=ldam": {"loss.max_margin": 0.5, "loss.s": 30.0, "loss.drw_epoch": None},  # cifar_train.py:213
         # cifar_train.py:199-206: idx = epoch // 160 (0-based) -> beta 0.9999 from the 161st epoch;
         # losses.py:45 F.cross_entropy(weight=w): sum(w l) / sum(w)
         "loss=ldam_drw": {"loss.max_margin": 0.5, "loss.s": 30.0, "loss.drw_epoch": 161, "loss.drw_beta": 0.9999,
                           "loss.drw_reduction": "weighted_mean"}},
        {"data.imbalance": "100,10", "loss": "ce,ldam,ldam_drw", "seed": "0,1,2"},
    ),
    # google-research logit_adjustment/utils.py dataset_mappings()['cifar10-lt']: 1241 epochs, schedule
    # (1.0, 20) (0.1, 604) (0.01, 926) (0.001, 1128) with a linear warm-up to epoch 20 (LearningRateSchedule);
    # main.py: batch 128, SGD(0.1, momentum=0.9, nesterov=True), tau 1.0; models.py: L2 1e-4 = weight decay 2e-4;
    # utils.py _process_image: crop + flip.
    "logit_adjusted_cifar10_lt": (
        {"data.name": "cifar10_lt", "data.profile": "exp", "data.augment": True, "model.name": "resnet32",
         "optim.name": "sgd", "optim.lr": 0.1, "optim.momentum": 0.9, "optim.nesterov": True,
         "optim.weight_decay": 2e-4, "optim.schedule": "multistep", "optim.milestones": [604, 926, 1128],
         "optim.gamma": 0.1, "optim.warmup_epochs": 20, "trainer.epochs": 1241, "trainer.batch_size": 128,
         "trainer.eval_every": 5,  # the source reports the end of training; ours always evaluates the last epoch
         "loss.name": "logit_adjusted", "loss.tau": 1.0, "loss.posthoc": False},  # --mode=loss
        {"loss=logit_adjusted_posthoc": {"loss.tau": 1.0, "loss.posthoc": True},  # --mode=posthoc
         "loss=ce": {"loss.name": "ce"}},  # --mode=baseline
        {"data.imbalance": "100,10", "loss": "ce,logit_adjusted_posthoc,logit_adjusted", "seed": "0,1,2"},
    ),
    # Article 000 (seeds/000): airplane vs automobile; its exercise script is not reachable, the rest is SPEC §6.
    "focal_cifar2": (
        {"data.name": "cifar2", "data.classes": [0, 1], "model.name": "cnn_small", "optim.name": "adam",
         "optim.lr": 1e-3, "optim.weight_decay": 0.0, "optim.schedule": "constant", "trainer.epochs": 30,
         "trainer.batch_size": 128, "loss.name": "focal", "loss.alpha": None},
        {},
        {"data.imbalance": "1,10,100", "loss.gamma": "0,0.5,1,2,5", "seed": "0,1,2"},
    ),
    # USB (microsoft/Semi-supervised-learning), config/classic_cv_imb/fixmatch_debiaspl/
    # fixmatch_debiaspl_cifar10_lb1500_100_ulb3000_100_0.yaml: net wrn_28_2, num_labels 1500, lb_imb_ratio 100,
    # ulb_num_labels 3000, ulb_imb_ratio 100 (-100: reversed), optim SGD, lr 0.03, momentum 0.9, weight_decay 5e-4
    # (get_optimizer: not on BN or bias), cosine num_cycles 7/16 without warm-up, batch_size 64, uratio 2,
    # p_cutoff 0.95, ulb_loss_ratio 1.0, ema_m 0.999, num_train_iter 262144 (58 steps x 4520 epochs here),
    # num_eval_iter 1024 (every 18 epochs here); debiaspl.py: debiaspl_tau 0.4, debiaspl_ema_p 0.999, p_hat
    # initialised uniform. The official DebiasPL code: main_DebiasPL.py --tau default 1.0 (:145; its scripts pass
    # 0.4), --qhat_m 0.999 (:157). The schedule of each USB row as USB ran it (semilearn at 4499503, the commit of
    # results/classic_cv_imb.csv): supervised and fixmatch set no imb_algorithm, so AlgorithmBase.set_optimizer
    # (core/algorithmbase.py:175-184) gives the cosine; fixmatch_debiaspl sets imb_algorithm: debiaspl, and
    # get_imb_algorithm (imb_algorithms/__init__.py:10-19) builds DummyClass(DebiasPL, FixMatch), whose method
    # resolution order takes ImbAlgorithmBase.set_optimizer (algorithmbase.py:523-532): scheduler = None (:531), a
    # constant lr. Its DebiasPL is FixMatch besides (debiaspl.py:52, delta_p = probs.mean(): q_hat stays uniform;
    # mean(dim=0) only from 4595a7c to 639cfbf). Hence the sweep's optim.schedule: fixmatch_cosine (USB's fixmatch
    # and supervised rows; ours) and constant (USB's debiaspl rows).
    "debiaspl_cifar10_lt": (
        {"method": "fixmatch", "data.name": "cifar10_lt", "data.n_max": 1500, "data.imbalance": 100.0,
         "data.augment": True, "model.name": "wrn28_2", "optim.name": "sgd", "optim.lr": 0.03,
         "optim.momentum": 0.9, "optim.nesterov": True, "optim.weight_decay": 5e-4,
         "optim.decay_norm_and_bias": False, "optim.schedule": "fixmatch_cosine", "optim.warmup_epochs": 0,
         "trainer.batch_size": 64, "trainer.epochs": 4520, "trainer.eval_every": 18, "ssl.mu": 2,
         "ssl.threshold": 0.95, "ssl.lambda_u": 1.0, "ssl.ema": 0.999, "ssl.debias": False,
         "ssl.unlabelled_n_max": 3000, "ssl.unlabelled_imbalance": 100.0, "ssl.unlabelled_profile": "exp"},
        {"ssl.debias=true": {"ssl.tau": 0.4, "ssl.qhat_momentum": 0.999},
         "ssl.unlabelled_profile=exp_reversed": {"ssl.unlabelled_imbalance": 100.0},
         "optim.schedule=constant": {"optim.lr": 0.03, "optim.warmup_epochs": 0, "optim.schedule": "constant"}},
        {"optim.schedule": "fixmatch_cosine,constant", "ssl.debias": "false,true",
         "ssl.unlabelled_profile": "exp,exp_reversed", "seed": "0,1,2"},
    ),
    # Not a source's recipe: debiaspl_cifar10_lt reduced to minutes on a CPU (the protocol's N1:M1 = 1:2 kept).
    "debiaspl_cifar10_lt_cpu": (
        {"method": "fixmatch", "data.name": "cifar10_lt", "data.n_max": 300, "ssl.unlabelled_n_max": 600,
         "ssl.mu": 3, "ssl.ema": 0.99, "trainer.batch_size": 32, "model.name": "cnn_small", "optim.name": "adam",
         "optim.lr": 1e-3, "optim.schedule": "constant"},
        {},
        {"ssl.debias": "false,true", "seed": "0"},
    ),
    # BagofTricks-LT (zhangyongshun/BagofTricks-LT at ce7859a), configs/cao_cifar/two_stage/classifier_balance/
    # cRT/cifar10_im100.yaml (LWS/ the same but CLASSIFIER.TYPE): PRETRAINED_MODEL .../baseline/models/epoch_200.pth,
    # MAX_EPOCH 30, BATCH_SIZE 128, SGD BASE_LR 0.1, MOMENTUM 0.9, WEIGHT_DECAY 5e-4, LR_SCHEDULER warmup LR_STEP
    # [10, 20] LR_FACTOR 0.1 WARM_EPOCH 5, SAMPLER weighted sampler / balance, TRAIN_TRANSFORMS random_crop +
    # random_horizontal_flip, LOSS CrossEntropy, VALID_STEP 1 (the best test epoch is kept); tau_norm/
    # cifar10_im100.yaml: TEST.TAU_NORM.TAU 1.0, the bias kept (lib/net/network.py load_model). Ratios and rows:
    # documents/trick_gallery.md:94-96 (CIFAR-10-LT-100, -50).
    "decoupled_cifar10_lt": (
        {"method": "decoupled", "data.name": "cifar10_lt", "data.profile": "exp", "data.augment": True,
         "model.name": "resnet32", "sampler": "oversample", "optim.name": "sgd", "optim.lr": 0.1, "optim.momentum": 0.9,
         "optim.nesterov": False, "optim.weight_decay": 5e-4, "optim.schedule": "multistep", "optim.milestones": [10, 20],
         "optim.gamma": 0.1, "optim.warmup_epochs": 5, "trainer.epochs": 30, "trainer.batch_size": 128,
         "trainer.eval_every": 1, "loss.name": "ce", "decoupled.mode": "crt"},
        {"decoupled.mode=tau_norm": {"decoupled.tau": 1.0, "decoupled.tau_norm_bias": True},
         "decoupled.mode=lws": {"loss.name": "ce", "sampler": "oversample"}},
        {"data.imbalance": "100,50", "decoupled.mode": "crt,tau_norm,lws", "seed": "0,1,2"},
    ),
    # No source: every loss on whatever the command line sets.
    "compare_losses": (
        {},
        {},
        {"loss": "ce,weighted_ce,focal,cb,affinity,logit_adjusted,ldam,ldam_drw,debiased"},
    ),
}


@pytest.fixture(scope="module")
def compose():
    with hydra_compose() as compose:
        yield compose


def stage1_for(preset: str, compose) -> list[str]:
    """A decoupled stage 2 is given its stage-1 folder on the command line; any folder passes the config-time check."""
    return [f"decoupled.stage1={REPO}"] if compose(f"experiment={preset}").method == "decoupled" else []


def differences(preset: str, overrides: list[str], expected: dict, compose) -> list[str]:
    """``preset: key = ours, the source's value`` for every key of ``expected`` that the composed and validated
    preset (with ``overrides``) does not have; a key it lacks (a typo) counts as a difference."""
    _, resolved, _ = compose_run(f"experiment={preset}", *overrides, *stage1_for(preset, compose), compose=compose)
    cfg = OmegaConf.create(resolved)
    missing = object()
    out = []
    for key, value in expected.items():
        ours = OmegaConf.select(cfg, key, default=missing)
        ours = OmegaConf.to_container(ours) if OmegaConf.is_config(ours) else ours
        if ours is missing or ours != value or isinstance(ours, bool) != isinstance(value, bool):
            where = "".join(f" {o}" for o in overrides)
            shown = "(no such key)" if ours is missing else repr(ours)
            out.append(f"{preset}{where}: {key} = {shown}, the source's {value!r}")
    return out


def test_every_preset_has_a_recipe_row():
    assert set(RECIPES) == set(PRESETS), "add the new preset's source recipe to RECIPES (or drop a stale row)"


@pytest.mark.parametrize("preset", sorted(RECIPES))
def test_preset_composes_with_its_sources_recipe(compose, preset):
    values, variants, sweep = RECIPES[preset]
    wrong = differences(preset, [], values, compose)
    for override, expected in variants.items():
        wrong += differences(preset, [override], expected, compose)
    params = OmegaConf.to_container(compose(f"experiment={preset}").hydra.sweeper.params)
    stated = {key: ",".join(v.strip() for v in str(value).split(",")) for key, value in params.items()}
    if stated != sweep:
        wrong.append(f"{preset}: sweep {stated}, the source's {sweep}")
    assert not wrong, "\n".join(wrong)


def test_debiaspl_preset_runs_the_sources_number_of_steps_and_evaluations():
    """USB trains 2^18 steps and evaluates every 1024; our trainer counts epochs of the labelled split (the
    incomplete last batch dropped), so the preset's epochs and eval_every must land within one epoch of those."""
    from imbalance_lab.data.profiles import exp_counts

    values = RECIPES["debiaspl_cifar10_lt"][0]
    steps = sum(exp_counts(values["data.n_max"], 10, values["data.imbalance"])) // values["trainer.batch_size"]
    assert 0 <= steps * values["trainer.epochs"] - 2 ** 18 < steps
    assert abs(steps * values["trainer.eval_every"] - 1024) < steps


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_header_gives_the_command_that_runs_it(preset):
    """A user copies the command from the header: it must name this preset (a copied preset often keeps the
    command of the one it was copied from)."""
    text = (REPO / "configs" / "experiment" / f"{preset}.yaml").read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    commands = [line for line in header if "python -m imbalance_lab" in line]
    assert commands, f"{preset}.yaml: no command in the header"
    # a two-stage preset's 'stage 1:' command runs another preset, which it names
    own = [line for line in commands if "stage 1:" not in line]
    assert all(f"experiment={preset}" in line.split() for line in own), own
    assert all(any(f"experiment={p}" in line.split() for p in PRESETS) for line in commands if line not in own)
    if preset != "compare_losses":
        assert f"experiment={preset} -m" in text, f"{preset}.yaml: the header's command does not run the sweep"


# ----------------------------------------------------------------------------- one epoch on tiny data
# Tiny data per preset, with the preset's model, loss and optimiser: a few real images per class (MNIST and the
# offline CIFAR-10 copy; the reduce profiles keep every image of the unreduced classes, so the exp profile from a
# small n_max replaces them here), a synthetic 100-class source for CIFAR-100 (not in the offline mirror).
REAL_TINY = ["data.profile=exp", "data.n_max=12", "data.imbalance=2", "data.test_policy=reduced",
             "data.test_n_max=6"]
TINY_DATA = {
    "mnist_even": REAL_TINY,
    "cifar10_even": REAL_TINY,
    "cifar10_lt": REAL_TINY,
    "cifar2": REAL_TINY,
    "cifar100_lt": ["data=synthetic", "data.synthetic.num_classes=100", "data.synthetic.train_per_class=3",
                    "data.synthetic.test_per_class=1", "data.synthetic.image_size=16", "data.imbalance=1.5"],
}
# One thread: these runs are a few small batches each, where a second thread mostly waits (and spins on a busy
# machine); the run sets it for the process, so the fixture below gives the session its count back.
ONE_EPOCH = ["trainer.epochs=1", "trainer.batch_size=16", "trainer.bn_recalibration_batches=1",
             "trainer.progress=false", "trainer.device=cpu", "trainer.threads=1"]


@pytest.fixture
def restore_threads():
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def last_loss_setting(preset: str, compose) -> list[str]:
    """The last value of each loss parameter the preset sweeps (ldam_drw, the focal base, gamma 5, ...; and
    ssl.debias=true): the preset's most specific loss, not the plain CE its composed default may be."""
    params = compose(f"experiment={preset}").hydra.sweeper.params
    return [f"{key}={str(value).split(',')[-1].strip()}" for key, value in params.items()
            if key.startswith(("loss", "ssl.debias"))]


@pytest.mark.parametrize("preset", sorted(RECIPES))
def test_preset_trains_one_epoch_on_tiny_data(tmp_path, mirror, restore_threads, preset):
    with hydra_compose() as compose:  # closed before the run, which initialises Hydra itself
        loss_setting = last_loss_setting(preset, compose)
        data_name = compose(f"experiment={preset}").data.name
        config, recipe, option = compose_run(f"experiment={preset}", *loss_setting, *stage1_for(preset, compose),
                                             compose=compose)
    # a semi-supervised preset's unlabelled split shrinks with its labelled one (and mu with it: the batch is
    # (1 + 2 mu) x 16 images through the preset's model, WRN-28-2 for the full protocol)
    tiny_ssl = ["ssl.unlabelled_n_max=24", "ssl.unlabelled_imbalance=2", "ssl.mu=1"] if config.method == "fixmatch" \
        else []
    stage1 = []
    if config.method == "decoupled":  # its stage 1: the preset's data and model trained as a plain run
        run_in_process(tmp_path / "stage1", f"experiment={preset}", "method=supervised", "sampler=uniform",
                       *TINY_DATA[data_name], *ONE_EPOCH)
        stage1 = [f"decoupled.stage1={tmp_path / 'stage1'}"]
    metrics = run_in_process(tmp_path, f"experiment={preset}", *loss_setting, *TINY_DATA[data_name], *tiny_ssl,
                             *stage1, *ONE_EPOCH)
    assert metrics["status"] == "done", metrics.get("reason")
    # what ran is the preset's loss and optimiser, untouched by the tiny-data overrides
    assert metrics["config"]["loss"] == recipe["loss"] and metrics["config"]["optim"] == recipe["optim"]
    assert metrics["method"] == method_name(config, option)  # e.g. ldam_drw; debiaspl for fixmatch + debias
    (epoch,) = metrics["history"]
    assert 0.0 <= epoch["test_macro_f1"] <= 1.0  # evaluated after the (last) epoch
    optim = recipe["optim"]
    steps = sum(metrics["data"]["class_counts"]["train"]) // 16
    if optim["warmup_epochs"]:  # one epoch of a W-epoch linear warm-up: about 1/W of the base rate
        warm = optim["lr"] / optim["warmup_epochs"]
        assert warm <= epoch["lr"] <= warm * (steps + 1) / steps
    elif optim["schedule"] in ("cosine", "fixmatch_cosine"):  # one epoch is the whole (1-epoch) cosine: near its end
        assert 0.0 <= epoch["lr"] < optim["lr"]
    else:  # no milestone in the first epoch
        assert epoch["lr"] == pytest.approx(optim["lr"])
