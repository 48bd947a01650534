"""The quality benchmark (benchmarks/quality): its metrics must see what they claim to, its
recipes must build, and a run recorded elsewhere must score as the trainer's own evaluation."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks.quality import metrics, report, runs
from benchmarks.quality.__main__ import main, parse_args


def smooth_images(n=6, size=64, seed=0):
    """Photo-like: random colour fields, smooth at the pixel scale, as uint8."""
    coarse = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return (F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 200 + 20)


@pytest.mark.parametrize("period", [2, 4, 8])
def test_a_mosaic_of_dots_at_the_upsampling_periods_raises_the_share_and_smooth_images_keep_it_small(period):
    photos = smooth_images()
    dots = torch.zeros(64, 64)
    dots[1::period, 2 % period::period] = 30.0  # one bright dot every `period` pixels, off the origin
    checkerboard = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2 * 20.0

    clean = metrics.periodic_excess_share(photos.round().to(torch.uint8))
    dotted = metrics.periodic_excess_share((photos + dots).clamp(0, 255).round().to(torch.uint8))
    checkered = metrics.periodic_excess_share((photos + checkerboard).clamp(0, 255).round().to(torch.uint8))

    assert clean < 0.001
    assert dotted > 100 * clean
    assert checkered > 100 * clean


def test_the_share_is_of_peaks_on_the_lattice_only():
    # Stripes of period 8 put all their energy on the lattice; stripes of period 16 are off it;
    # a smooth ramp has energy near the lattice's axes but no peak there.
    x = torch.arange(64, dtype=torch.float64)
    stripes = lambda period: (torch.cos(2 * torch.pi * x / period)[None, :] * 50 + 128).expand(64, 64)  # noqa: E731
    as_batch = lambda image: image.expand(1, 3, 64, 64)  # noqa: E731
    assert metrics.periodic_excess_share(as_batch(stripes(8))) > 0.99
    assert metrics.periodic_excess_share(as_batch(stripes(16))) < 1e-6
    ramp = (x[None, :] * 2 + x[:, None]).expand(64, 64)
    assert metrics.periodic_excess_share(as_batch(ramp)) < 1e-3


def test_colour_matching_gives_each_photo_the_paintings_palette_and_keeps_its_picture():
    photos = smooth_images(n=4, seed=1).round().to(torch.uint8)
    palette = torch.tensor([60.0, 40.0, 10.0])[:, None, None]
    paintings = (smooth_images(n=3, seed=2) * 0.5 + palette).round().to(torch.uint8)
    matched = metrics.colour_matched(photos, paintings).double()

    target = paintings.double().transpose(0, 1).flatten(1)
    for image, photo in zip(matched, photos.double()):
        assert torch.allclose(image.mean(dim=(1, 2)), target.mean(dim=1), atol=1.0)
        assert torch.allclose(image.std(dim=(1, 2)), target.std(dim=1), rtol=0.05)
        for channel, photo_channel in zip(image, photo):  # the picture is kept: each channel follows the photo's
            assert torch.corrcoef(torch.stack([channel.flatten(), photo_channel.flatten()]))[0, 1] > 0.99


def test_every_recipe_builds_its_config_with_what_it_names_and_gives_a_reason(tmp_path):
    recipes, default = runs.load_recipes()
    assert set(default) <= set(recipes) and not any("," in name for name in recipes)  # --recipes splits at commas
    plan = runs.Plan(data=tmp_path)
    for name, recipe in recipes.items():
        assert recipe["why"], name
        config = runs.recipe_config(name, plan, tmp_path / "run")
        assert all(getattr(config, key) == value for key, value in recipe["config"].items()), name
        assert (config.image_size, config.eval_steps, config.time_budget_hours) == (256, 500, 1.0)
    with pytest.raises(SystemExit):
        parse_args(["train", "--recipes", "Kaggle default + EMA 0.999"])  # retired with its option


def small_data(tmp_path) -> Path:
    """A gan-getting-started folder of 12 photos and 6 paintings, 48x48."""
    from .conftest import write_images

    data = tmp_path / "data"
    write_images(data / "photo_jpg", 12, size=(48, 48), seed=1, prefix="photo")
    write_images(data / "monet_jpg", 6, size=(48, 48), seed=2, prefix="monet")
    return data


def small_plan(data: Path, **changes) -> runs.Plan:
    """A Kaggle-default run of 4 epochs of 2 steps at 32x32, evaluated at steps 3, 6 and 8 (the end)."""
    return runs.Plan(**{**dict(data=data, size=32, photos=8, holdout=2, eval_photos=5, eval_steps=3, epochs=4,
                               minutes=30.0, ngf=8, device="cpu"), **changes})


RECIPE = "Kaggle default (U-Net + resize-conv)"


def test_a_recorded_run_scores_as_the_trainers_own_evaluations_scored_it(tmp_path, feature_network):
    """The GPU machine has no FID network: its translations are kept losslessly and scored here,
    and must give the scores the trainer's evaluations give the same run here."""
    data = small_data(tmp_path)
    plan = small_plan(data)
    archive = runs.record(RECIPE, plan, tmp_path / "recorded", tmp_path / "scratch")
    assert archive.name == f"{runs.slug(plan.run_name(RECIPE))}.zip"
    scored = json.loads(runs.score_recorded(archive, plan, feature_network, tmp_path / "scored").read_text())
    direct = json.loads(runs.train_and_evaluate(RECIPE, plan, feature_network, tmp_path / "direct").read_text())

    assert [e["step"] for e in scored["evaluations"]] == [e["step"] for e in direct["evaluations"]] == [3, 6, 8]
    for recorded, evaluated in zip(scored["evaluations"], direct["evaluations"]):
        assert recorded["fid"] == pytest.approx(evaluated["fid"], rel=1e-6)
        assert recorded["mifid"] == pytest.approx(evaluated["mifid"], rel=1e-6)
    fids = [e["fid"] for e in scored["evaluations"]]
    assert fids[0] != fids[1] and fids[1] == fids[2]  # the last epoch trains at LR 0, as the reference's does
    assert scored["baseline"] == pytest.approx(direct["baseline"])
    assert direct["steps"] == 8 and direct["name"] == scored["name"] == "Kaggle default (U-Net + resize-conv), " \
                                                                        "32px, 4 epochs on CPU"

    # Scored against another benchmark's photos, it refuses rather than compares the wrong images.
    with pytest.raises(SystemExit, match="other photos"):
        runs.score_recorded(archive, small_plan(data, photos=7), feature_network, tmp_path / "scored")


def test_the_command_trains_what_is_not_done_and_reports_every_run(tmp_path, feature_network, monkeypatch, capsys):
    """The time plan: with --epochs 0 the trainer plans the schedule to fit --minutes; a recipe
    done is skipped; the table and curve.png list every run."""
    data = small_data(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(data))
    import benchmarks.quality.__main__ as command
    monkeypatch.setattr(command, "feature_network_file", lambda _: feature_network)
    common = ["train", "--size", "32", "--photos", "8", "--holdout", "2", "--eval-photos", "5", "--ngf", "8",
              "--device", "cpu", "--out", str(tmp_path / "bench"), "--recipes", RECIPE, "--eval-steps", "4"]
    assert main(common + ["--epochs", "4"]) == 0
    first = capsys.readouterr().out
    assert "Evaluation at step 4:" in first and "Evaluation at step 8:" in first
    assert main(common + ["--epochs", "4"]) == 0
    assert "done, in" in capsys.readouterr().out
    assert main(common + ["--minutes", "0.2"]) == 0  # planned: a new run beside the first
    planned = capsys.readouterr().out
    assert "Time plan:" in planned
    finished = report.finished_runs(tmp_path / "bench")
    assert sorted(finished) == [f"{RECIPE}, 32px, 0.2 min on CPU", f"{RECIPE}, 32px, 4 epochs on CPU"]
    assert (tmp_path / "bench" / "curve.png").stat().st_size > 0
    assert all(name in planned for name in finished)  # the table


def test_a_data_folder_that_is_not_there_is_named(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "bench")]) == 2
    assert f"data_dir {tmp_path / 'nowhere'}: does not exist" in capsys.readouterr().err
