"""benchmarks/gpu_check.py in its CPU mode, so that the script a lent GPU runs cannot rot."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import write_images

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def real_looking_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_images(root / "photo_jpg", 12, size=(48, 48), seed=1, prefix="photo")
    write_images(root / "monet_jpg", 6, size=(48, 48), seed=2, prefix="monet")
    return root


@pytest.fixture(scope="module")
def cpu_run(real_looking_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("check")
    done = subprocess.run([sys.executable, str(SCRIPT), "run", "--cpu", "--data", str(real_looking_data),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    return done, out


def test_the_cpu_mode_runs_every_step_and_writes_the_report(cpu_run):
    done, out = cpu_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert report.startswith("# GPU check: CPU, PyTorch")
    assert "## The gpu tests" in report and "skipped" in report  # no CUDA here: each gpu test skips
    for row in ("resnet: reference (fp32, eager)", "resnet: bf16", "unet: reference (fp32, eager)",
                "resnet: CUT (fp32, eager)", "resnet: FastCUT (fp32, eager)"):
        line = next(line for line in report.splitlines() if line.startswith(f"| {row} |"))
        assert float(line.split("|")[2]) > 0, line
    assert "3 steps" in report and "1 process(es) on cpu" in report
    archives = sorted(out.glob("translations_*.zip"))
    assert len(archives) == 1 and archives[0].stat().st_size <= 15 * 2 ** 20
    assert len(zipfile.ZipFile(archives[0]).namelist()) == 12
    assert "12 translations in translations_1.zip" in report


def test_prepare_gathers_the_data_and_keeps_to_the_limit(real_looking_data, tmp_path):
    bundle = tmp_path / "bundle"
    command = [sys.executable, str(SCRIPT), "prepare", "--no-wheels", "--data", str(real_looking_data),
               "--bundle", str(bundle), "--photos", "5", "--holdout", "2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (manifest["photos"], manifest["paintings"], manifest["holdout"]) == (5, 4, 2)
    assert len(list((bundle / "data" / "photo_jpg").iterdir())) == 5
    assert "MiB of 64 MiB" in done.stdout
    too_small = subprocess.run(command + ["--limit-mib", "0.001"], cwd=REPO, capture_output=True, text=True,
                               timeout=120)
    assert too_small.returncode == 2 and "exceed the 0.001 MiB a call carries" in too_small.stderr


def test_score_rates_the_translations_beside_the_untouched_photos(cpu_run, real_looking_data, feature_network):
    """The script's wiring, with a small stand-in for the Inception file (test_fid runs the real one)."""
    done, out = cpu_run
    scored = subprocess.run([sys.executable, str(SCRIPT), "score", str(out), "--data", str(real_looking_data),
                             "--holdout", "2", "--fid-weights", str(feature_network)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-2000:]
    rows = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in scored.stdout.splitlines()
            if line.startswith("| translations") or line.startswith("| photos, no style")}
    assert set(rows) == {"translations", "photos, no style (baseline)"} and all(v > 0 for v in rows.values()), rows


def test_prepare_for_the_long_benchmark_keeps_its_photos_in_order_and_every_painting(real_looking_data, tmp_path):
    """The quality benchmark on the GPU must train on the photos, in the order, that it trains on here,
    and hold out the same paintings: so the bundle has its photos in order and every painting."""
    from monet_utils.data import list_images
    from benchmarks.quality.runs import training_photos

    bundle = tmp_path / "bundle"
    done = subprocess.run([sys.executable, str(SCRIPT), "prepare", "--no-wheels", "--data", str(real_looking_data),
                           "--bundle", str(bundle), "--long-photos", "7"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    expected = [path.name for path in training_photos(list_images(real_looking_data / "photo_jpg"), 7)]
    assert json.loads((bundle / "photo_order.json").read_text()) == expected
    assert sorted(p.name for p in (bundle / "data" / "photo_jpg").iterdir()) == sorted(expected)
    assert len(list((bundle / "data" / "monet_jpg").iterdir())) == 6
    assert json.loads((bundle / "manifest.json").read_text())["holdout"] == 0

    # `run` trains on every painting it is given, and `score` holds some out: it refuses this bundle.
    refused = subprocess.run([sys.executable, str(SCRIPT), "run", "--cpu", "--data", str(bundle / "data"),
                              "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "long quality benchmark's bundle" in refused.stderr
