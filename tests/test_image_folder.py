"""Your own data (``data=image_folder``) and ``model=resnet18``: exact class counts of a folder of generated PNG
and JPEG images (natural and imposed imbalance), greyscale, the decode cache, one-line refusals of bad input,
a run end to end; ResNet-18's stems, pretrained weights and vmapped stack."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import TINY, compose_run, hydra_compose, run_cli, run_in_process
from PIL import Image

from imbalance_lab.data import build_split, image_folder
from imbalance_lab.data.profiles import exp_counts
from imbalance_lab.losses import build_loss
from imbalance_lab.losses.ce import CELossConfig
from imbalance_lab.models import build_model
from imbalance_lab.schema import ConfigError, DataConfig, OptimConfig, TrainerConfig
from imbalance_lab.train import Member, Precision
from imbalance_lab.train.stack import VmapEngine, make_engine

COUNTS = {"ant": 40, "bee": 12, "cat": 4}  # the folder's natural imbalance
TRAIN, TEST = [32, 10, 3], [8, 2, 1]  # data.test_fraction 0.2 per class: round(0.2 n), at least 1


def write_images(folder: Path, counts: dict[str, int], grey: bool = False, seed: int = 0) -> None:
    """``folder/<class>/<i>.png|jpg``: noise of varying sizes, every other image a JPEG."""
    rng = np.random.default_rng(seed)
    for name, n in counts.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (20 + i % 5, 24 + i % 3) if grey else (20 + i % 5, 24 + i % 3, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(
                folder / name / f"{i:03d}.{'jpg' if i % 2 else 'png'}")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("images")
    write_images(base / "flat", COUNTS)
    for part, counts in (("train", {"a": 6, "b": 3}), ("test", {"a": 2, "b": 2}), ("val", {"a": 1, "b": 1})):
        write_images(base / "split" / part, counts, grey=True, seed=len(part))
    return base


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch):
    """Every test of the file shares one decode cache of its own (``~/.cache/imbalance_lab`` is left alone)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def data(path, **kw) -> DataConfig:
    return DataConfig(name="image_folder", source="image_folder", path=str(path), **kw)


def refusal(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- counts
def test_natural_imbalance_class_names_and_channel_statistics(folders):
    split = build_split(data(folders / "flat"))
    assert split.class_names == list(COUNTS)
    assert split.class_counts == {"train": TRAIN, "val": [0, 0, 0], "test": TEST}
    assert split.train_x.shape == (sum(TRAIN), 3, 32, 32) and split.train_x.dtype == np.uint8
    assert np.allclose(split.mean, (split.train_x / 255).mean(axis=(0, 2, 3)))
    summary = split.summary()
    assert summary["details"]["images"] == 56 and summary["details"]["skipped_unreadable"] == 0
    # the split is seeded: another subset_seed holds out other images, as many
    other = build_split(data(folders / "flat", subset_seed=1))
    assert other.class_counts == split.class_counts and other.fingerprint != split.fingerprint
    assert build_split(data(folders / "flat", test_fraction=0.5)).class_counts["test"] == [20, 6, 2]


def test_imposed_imbalance_has_the_built_in_datasets_exact_counts(folders):
    exp = build_split(data(folders / "flat", profile="exp", imbalance=2, n_max=10))
    assert exp_counts(10, 3, 2) == [10, 7, 5]
    assert exp.class_counts["train"] == [10, 7, 3]  # a class smaller than its profile count gives what it has
    reduce = build_split(data(folders / "flat", profile="reduce", reduced_classes=[0], imbalance=4))
    assert reduce.class_counts["train"] == [32 // 4, 10, 3]
    assert reduce.class_counts["test"] == TEST  # test_policy balanced: the held-out images, all of them
    with pytest.raises(ConfigError) as exc:  # the largest class (32) is known once the folder is read
        build_split(data(folders / "flat", profile="exp", imbalance=40))
    assert refusal(exc).startswith("data.imbalance=40 is not allowed: at most 32") and "'cat'" in refusal(exc)


def test_train_test_val_folders_of_greyscale_images_give_one_channel_and_colour_makes_rgb(folders, tmp_path):
    split = build_split(data(folders / "split", image_size=64))
    assert split.class_counts == {"train": [6, 3], "val": [1, 1], "test": [2, 2]}
    assert split.train_x.shape[1:] == (1, 64, 64) and len(split.mean) == 1
    mixed = tmp_path / "mixed"
    shutil.copytree(folders / "split", mixed)
    Image.new("RGB", (30, 30), (200, 10, 10)).save(mixed / "test" / "b" / "red.png")
    split = build_split(data(mixed))
    assert split.in_channels == 3 and split.class_counts["test"] == [2, 3]
    red = split.test_x[split.test_y == 1]
    assert any((img[0] == 200).all() and (img[1] == 10).all() for img in red)  # its colour survives


# ----------------------------------------------------------------------------- the decode cache
def test_the_cache_is_reused_rechecked_and_rebuilt_when_damaged_or_the_folder_changes(folders, tmp_path,
                                                                                     monkeypatch, caplog):
    folder = tmp_path / "cached"
    write_images(folder, COUNTS)  # new files: new modification times, hence a cache of their own
    decodes = []
    real = image_folder.decode_all
    monkeypatch.setattr(image_folder, "decode_all", lambda *a: decodes.append(1) or real(*a))
    first = build_split(data(folder))
    cache = Path(first.details["cache"])
    stamp = cache.stat().st_mtime_ns
    again = build_split(data(folder))
    assert len(decodes) == 1 and cache.stat().st_mtime_ns == stamp  # read, not decoded or written again
    assert again.pixels_sha256 == first.pixels_sha256
    raw = bytearray(cache.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one damaged byte in the pixels
    cache.write_bytes(bytes(raw))
    repaired = build_split(data(folder))
    assert len(decodes) == 2 and "does not match its checksum" in caplog.text
    assert repaired.pixels_sha256 == first.pixels_sha256
    write_images(folder, {"cat": 6}, seed=9)  # the folder changed: another key, decoded afresh
    changed = build_split(data(folder))
    assert len(decodes) == 3 and changed.details["cache"] != str(cache) and changed.class_counts["train"][2] == 5


# ----------------------------------------------------------------------------- refusals: one line, before training
def split_without_bee_in_test(folder: Path) -> None:
    (folder / "train").mkdir()
    for name in COUNTS:
        shutil.move(folder / name, folder / "train" / name)
    shutil.copytree(folder / "train", folder / "test", ignore=lambda d, names: ["bee"] if d.endswith("train") else [])


def broken(folders, tmp_path, change) -> Path:
    folder = tmp_path / "bad"
    shutil.copytree(folders / "flat", folder)
    change(folder)
    return folder


@pytest.mark.parametrize("change, settings, key, says", [
    (lambda f: shutil.rmtree(f / "cat") or (f / "cat").mkdir(), {}, "data.path", "cat has no file named *.jpg"),
    (lambda f: (f / "bee" / "zz.jpg").write_bytes(b"not an image"), {}, "data.path",
     "bee/zz.jpg cannot: UnidentifiedImageError"),
    (lambda f: [p.write_bytes(b"x") for p in (f / "cat").iterdir()], {"skip_unreadable": True}, "data.path",
     "cat has none: its 4 image file(s) cannot be decoded"),
    (lambda f: None, {"profile": "reduce", "reduced_classes": [2], "imbalance": 33}, "data.imbalance",
     "no training image"),
    (split_without_bee_in_test, {}, "data.path", "only in train/: bee; only in test/: none"),
], ids=["empty_class_folder", "unreadable_image", "no_readable_image", "ratio_empties_a_class",
        "train_test_disagree"])
def test_bad_input_is_refused_in_one_line(folders, tmp_path, change, settings, key, says):
    with pytest.raises(ConfigError) as exc:
        build_split(data(broken(folders, tmp_path, change), **settings))
    assert refusal(exc).startswith(f"{key}=") and says in refusal(exc)


def test_the_yaml_files_compose_and_a_missing_folder_or_weights_file_is_refused_when_the_config_is_read(
        folders, tmp_path):
    with hydra_compose() as compose:
        config, _, _ = compose_run("data=image_folder", f"data.path={folders / 'flat'}", "model=resnet18",
                                   compose=compose)
        assert (config.data.source, config.data.image_size, config.model.name) == ("image_folder", 32, "resnet18")
        assert config.data.num_classes == 3
        refuse_missing_files(compose, tmp_path)


def refuse_missing_files(compose, tmp_path):
    with pytest.raises(ConfigError) as exc:
        compose_run("data=image_folder", f"data.path={tmp_path}/nowhere", compose=compose)
    assert refusal(exc).startswith("data.path=") and "does not exist" in refusal(exc)
    with pytest.raises(ConfigError) as exc:
        compose_run("data=image_folder", "model=resnet18", f"data.path={tmp_path}",
                    f"model.pretrained={tmp_path}/weights.pt", compose=compose)
    assert refusal(exc).startswith("model.pretrained=") and "nothing is downloaded" in refusal(exc)


def test_the_command_line_refuses_an_unreadable_image_with_exit_code_2(folders, tmp_path):
    folder = broken(folders, tmp_path, lambda f: (f / "ant" / "zz.png").write_bytes(b"\x89PNG broken"))
    result = run_cli("data=image_folder", f"data.path={folder}", f"hydra.run.dir={tmp_path / 'run'}",
                     "trainer.device=cpu")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: data.path=") and "ant/zz.png cannot" in lines[-1]
    assert "data.skip_unreadable=true" in lines[-1] and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- a run
def test_a_run_on_an_image_folder_skipping_an_unreadable_image(folders, tmp_path):
    folder = broken(folders, tmp_path, lambda f: (f / "bee" / "zz.jpg").write_bytes(b"not an image"))
    settings = [o for o in TINY if not o.startswith(("data", "trainer.batch_size"))] + ["trainer.batch_size=16"]
    metrics = run_in_process(tmp_path / "run", "data=image_folder", f"data.path={folder}",
                             "data.skip_unreadable=true", *settings)
    assert metrics["status"] == "done"
    assert metrics["data"]["class_names"] == list(COUNTS)
    assert metrics["data"]["class_counts"]["train"] == TRAIN
    assert metrics["data"]["details"]["skipped_unreadable"] == 1
    assert metrics["data"]["details"]["skipped_files"] == ["bee/zz.jpg"]
    assert "bee/zz.jpg" in metrics["data"]["note"]
    assert [row["name"] for row in metrics["test"]["per_class"]] == list(COUNTS)
    assert (tmp_path / "run" / "confusion.png").is_file()


# ----------------------------------------------------------------------------- resnet18
def test_resnet18_has_torchvisions_layers_and_a_small_image_stem():
    small = build_model("resnet18", 1, 5, [0.5], [0.25], image_size=32)
    conv = small.backbone.conv1
    assert (conv.in_channels, conv.kernel_size, conv.stride) == (1, (3, 3), (1, 1))
    assert isinstance(small.backbone.maxpool, torch.nn.Identity)
    large = build_model("resnet18", 3, 5, [0.5] * 3, [0.25] * 3, image_size=96)
    assert (large.backbone.conv1.kernel_size, large.backbone.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(large.backbone.maxpool, torch.nn.MaxPool2d)
    reference = torchvision.models.resnet18(weights=None, num_classes=5)
    assert sum(p.numel() for p in large.parameters()) == sum(p.numel() for p in reference.parameters())
    with torch.no_grad():  # smaller inputs than the sizes the stems are for: the shapes, cheaply
        assert small(torch.rand(2, 1, 8, 8)).shape == (2, 5)
        assert small.features(torch.rand(2, 1, 8, 8)).shape == (2, 512)
        assert large(torch.rand(2, 3, 32, 32)).shape == (2, 5)


def test_resnet18_starts_from_a_state_dict_it_is_given(tmp_path):
    torchvision_file = tmp_path / "resnet18.pt"
    theirs = torchvision.models.resnet18(weights=None).state_dict()  # 1000 classes: its fc does not fit
    torch.save(theirs, torchvision_file)
    model = build_model("resnet18", 3, 4, [0.5] * 3, [0.25] * 3, image_size=96, pretrained=str(torchvision_file))
    assert torch.equal(model.backbone.layer4[1].conv2.weight, theirs["layer4.1.conv2.weight"])
    assert torch.equal(model.backbone.conv1.weight, theirs["conv1.weight"])
    assert model.head.weight.shape == (4, 512)  # fc skipped, the head kept
    small = build_model("resnet18", 3, 4, [0.5] * 3, [0.25] * 3, image_size=32, pretrained=str(torchvision_file))
    assert torch.equal(small.backbone.layer1[0].bn1.running_mean, theirs["layer1.0.bn1.running_mean"])
    assert small.backbone.conv1.weight.shape == (64, 3, 3, 3)  # the 7x7 stem does not fit a 3x3 one: skipped
    run_file = tmp_path / "model.pt"  # a run's model.pt, head included
    torch.save(small.state_dict(), run_file)
    again = build_model("resnet18", 3, 4, [0.1] * 3, [0.2] * 3, pretrained=str(run_file))
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in small.state_dict().items() if k not in ("mean", "std"))
    assert torch.allclose(again.mean, torch.tensor(0.1))  # normalisation comes from this run's data
    other = tmp_path / "resnet32.pt"
    torch.save(build_model("resnet32", 3, 4, [0.5] * 3, [0.25] * 3).state_dict(), other)
    with pytest.raises(ConfigError) as exc:
        build_model("resnet18", 3, 4, [0.5] * 3, [0.25] * 3, pretrained=str(other))
    assert refusal(exc).startswith("model.pretrained=") and "names it does not have: backbone.stem" in refusal(exc)


def test_a_stack_of_resnet18s_is_one_vmapped_model_computing_what_each_computes_alone():
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        loss_fn = build_loss(CELossConfig(), [6, 3, 1])
        model = build_model("resnet18", 3, 3, [0.5] * 3, [0.25] * 3, make_head=loss_fn.make_head, image_size=16)
        members.append(Member(model.train(), loss_fn, torch.Generator().manual_seed(seed)))
    engine = make_engine(members, TrainerConfig(device="cpu", stacking="vmap"), OptimConfig(name="adam"), 1, 1,
                         Precision())
    assert isinstance(engine, VmapEngine)  # no fallback to member after member
    xs = torch.randint(0, 256, (2, 2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # training mode: BatchNorm normalises with each member's own batch
        stacked = engine.forward(engine.params, engine.buffers, Precision().stacked_inputs(xs))
        alone = torch.stack([m.model(Precision().inputs(x)) for m, x in zip(members, xs)])
    assert torch.allclose(stacked, alone, atol=1e-4)

