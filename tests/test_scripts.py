"""The scripts a GPU machine is checked with: the benchmark keeps every row it measured, the GPU check lists
its steps on a CPU and its report adds up what the steps left, the wheel script says what it downloads."""

import importlib.util
import json
import subprocess

import pytest
from conftest import REPO, TINY, read_json, run_in_process


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_writes_each_row_as_soon_as_it_is_measured(tmp_path, monkeypatch):
    """Interrupted after its first row (Ctrl-C while the second is measured), the benchmark's JSON and
    Markdown hold that row."""
    bench = script("bench")
    measure, calls = bench.ours, []

    def ours_interrupted_after_the_first_row(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(args)
        return measure(*args, **kwargs)

    monkeypatch.setattr(bench, "ours", ours_interrupted_after_the_first_row)
    out = tmp_path / "cpu"
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--models", "cnn_mnist", "--batch-sizes", "8", "--stacks", "1,2", "--stacking", "loop",
                    "--steps", "2", "--device", "cpu", "--out", str(out)])
    results = read_json(out.with_suffix(".json"))
    (row,) = results["rows"]
    assert (row["model"], row["batch"], row["stack"], row["engine"]) == ("cnn_mnist", 8, 1, "loop")
    assert row["images_per_s"] > 0 and row["plain_images_per_s"] > 0 and row["gflop_per_image"] > 0
    assert results["meta"]["precision"] == {"amp": False, "compute_dtype": "float32", "channels_last": False}
    assert "| cnn_mnist | 8 | 1 | loop |" in out.with_suffix(".md").read_text()


def test_gpu_check_dry_run_lists_its_steps_and_runs_nothing(tmp_path):
    out = tmp_path / "report"
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", str(out)],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for step in ("pytest -m cuda", "scripts/bench.py --device cuda --models cnn_mnist,cnn_small,resnet32,cnn_cifar:640",
                 "--stacks 1,8,32 --stacking loop,vmap", "experiment=affinity_mnist hydra/launcher=stacked",
                 "trainer.epochs=2", "scripts/gpu_report.py"):
        assert step in done.stdout
    assert not out.exists()
    missing = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], check=False, capture_output=True,
                             text=True)
    assert missing.returncode == 2 and "no output folder" in missing.stderr


def test_gpu_wheels_dry_run_names_every_wheel_the_command_line_needs(tmp_path):
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_wheels.sh"), "--dry-run", str(tmp_path / "w")],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for package in ("hydra-core", "omegaconf", "hydra-joblib-launcher", "hydra-submitit-launcher", "submitit",
                    "cloudpickle"):
        assert package in done.stdout
    assert "pip wheel --quiet --no-deps --wheel-dir" in done.stdout and "antlr4-python3-runtime==4.9.3" in done.stdout
    assert not (tmp_path / "w").exists()


def test_gpu_report_adds_up_the_steps_tests_benchmark_and_grid(tmp_path):
    """What the check's steps leave, as they leave it: a timed-out step, a failed and a skipped test, a
    benchmark row and a finished 2-epoch stack of two runs; the projection is the fixed part plus training x
    50."""
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    sweep = work / "affinity_mnist_2ep"
    runs = [run_in_process(sweep / f"seed={seed}", *TINY, "trainer.epochs=2", f"seed={seed}") for seed in (0, 1)]
    training = sum(r["train_seconds"] for r in runs)  # each run alone: its own stack
    (work / "steps.tsv").write_text("cuda_tests\t1\t5000\t170\tpytest\nbench\t0\t2000\t140\tbench\n"
                                    f"affinity_mnist_2_epochs\t124\t{int(1000 * (training + 30))}\t150\tgrid\n")
    (work / "pytest_cuda.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.test_gpu_path" name="a[cuda]" time="1.5"/>'
        '<testcase classname="tests.test_gpu_path" name="b[cuda]"><failure message="boom"/></testcase>'
        '<testcase classname="tests.test_compile" name="c[cuda]"><skipped message="no"/></testcase>'
        '</testsuite></testsuites>')
    row = {"model": "cnn_mnist", "batch": 128, "stack": 8, "engine": "vmap", "images_per_s": 1e5,
           "plain_images_per_s": 1e4, "ratio_to_plain": 10.0, "peak_memory_mb": 900.0, "gflop_per_image": 0.01,
           "mfu": 0.001}
    (out / "bench.json").write_text(json.dumps({"meta": {"precision": {"amp": True}, "steps_per_epoch": 20},
                                                "rows": [row]}))
    assert script("gpu_report").main([str(out), str(work)]) == 1  # not every step succeeded
    report = read_json(out / "gpu_check.json")
    assert [s["outcome"] for s in report["steps"]] == ["failed (exit 1)", "ok", "timed out"]
    assert report["tests"]["counts"] == {"passed": 1, "failure": 1, "error": 0, "skipped": 1}
    grid = report["grid"]
    assert (grid["runs"], grid["done"], grid["stacks"]) == (2, 2, 2)
    assert grid["fixed_seconds"] == pytest.approx(30, abs=0.01) and not grid["extrapolated"]
    assert grid["projected_100_epoch_seconds"] == pytest.approx(30 + 50 * training, abs=0.05)
    # the step ran out of time with 2 of the 4 runs it launched finished: both parts scaled by 4 / 2
    (out / "affinity_mnist_2_epochs.log").write_text("".join(f"[..][INFO] - \t#{i} : seed={i}\n" for i in range(4)))
    script("gpu_report").main([str(out), str(work)])
    grid = read_json(out / "gpu_check.json")["grid"]
    assert grid["extrapolated"] and grid["launched"] == 4
    assert grid["projected_100_epoch_seconds"] == pytest.approx(2 * (30 + 50 * training), abs=0.1)
    md = (out / "gpu_check.md").read_text()
    assert "| affinity_mnist_2_epochs | timed out |" in md and "**failure** `tests.test_gpu_path::b[cuda]`: boom" in md
    assert "| cnn_mnist | 128 | 8 | vmap | 100000 | 10000 | 10.00 | 900 | 0.1 % |" in md


def test_the_readme_reproduction_table_is_the_results_pages_index(capsys):
    """Every results page has its row in docs/results/reproductions.csv, and the README shows that CSV."""
    table = script("reproduction_table")
    pages = {p.name for p in table.RESULTS.glob("*.md")}
    listed = [r["page"] for r in table.rows()]
    assert sorted(listed) == sorted(pages)  # no page without a row, no row without its page
    assert table.main(["--check"]) == 0, capsys.readouterr().err
    for row in table.rows():
        assert f"(docs/results/{row['page']})" in table.README.read_text()


def test_subset_spread_rebuilds_a_run_and_scores_its_own_test_subset_as_the_run_did(tmp_path):
    """scripts/reference/subset_spread.py rebuilds a finished run's network from its recorded config and
    ``model.pt``, predicts the source's whole test set, and on the run's own test subset gets the run's own test
    macro F1; the first n and random draws of n per reduced class are scored on the same predictions."""
    spread = script("reference/subset_spread")
    run = tmp_path / "run"
    metrics = run_in_process(run, *TINY, "loss=affinity", "data.test_policy=reduced", "data.test_n_max=32")
    assert metrics["data"]["class_counts"]["test"] == [32, 16, 8]  # classes 1 and 2 have reduced test sets
    result = spread.spread(run, draws=20)
    assert result["method"] == "affinity" and len(result["whole_test_recall"]) == 3
    assert result["own_subset"] == round(metrics["test"]["macro_f1"], 4)
    q = result["random"]
    assert q["draws"] == 20 and 0 <= q["q05"] <= q["mean"] <= q["q95"] <= q["max"] <= 1
    assert 0 <= result["first_n"] <= 1
