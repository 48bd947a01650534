"""The quality benchmark's periodic-artifact measure: it must see the dot mosaic of a stride-2
upsampling and not mistake natural images for one."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quality.py"
spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
bench_quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_quality)


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

    clean = bench_quality.periodic_excess_share(photos.round().to(torch.uint8))
    dotted = bench_quality.periodic_excess_share((photos + dots).clamp(0, 255).round().to(torch.uint8))
    checkered = bench_quality.periodic_excess_share((photos + checkerboard).clamp(0, 255).round().to(torch.uint8))

    assert clean < 0.001
    assert dotted > 100 * clean
    assert checkered > 100 * clean


def test_the_share_is_of_peaks_on_the_lattice_only():
    # Stripes of period 8 put all their energy on the lattice; stripes of period 16 are off it;
    # a smooth ramp has energy near the lattice's axes but no peak there.
    x = torch.arange(64, dtype=torch.float64)
    stripes = lambda period: (torch.cos(2 * torch.pi * x / period)[None, :] * 50 + 128).expand(64, 64)  # noqa: E731
    as_batch = lambda image: image.expand(1, 3, 64, 64)  # noqa: E731
    assert bench_quality.periodic_excess_share(as_batch(stripes(8))) > 0.99
    assert bench_quality.periodic_excess_share(as_batch(stripes(16))) < 1e-6
    ramp = (x[None, :] * 2 + x[:, None]).expand(64, 64)
    assert bench_quality.periodic_excess_share(as_batch(ramp)) < 1e-3


def test_colour_matching_gives_each_photo_the_paintings_palette_and_keeps_its_picture():
    photos = smooth_images(n=4, seed=1).round().to(torch.uint8)
    palette = torch.tensor([60.0, 40.0, 10.0])[:, None, None]
    paintings = (smooth_images(n=3, seed=2) * 0.5 + palette).round().to(torch.uint8)
    matched = bench_quality.colour_matched(photos, paintings).double()

    target = paintings.double().transpose(0, 1).flatten(1)
    for image, photo in zip(matched, photos.double()):
        assert torch.allclose(image.mean(dim=(1, 2)), target.mean(dim=1), atol=1.0)
        assert torch.allclose(image.std(dim=(1, 2)), target.std(dim=1), rtol=0.05)
        for channel, original in zip(image, photo):  # the same picture: each channel an affine map of the photo's
            assert torch.corrcoef(torch.stack([channel.flatten(), original.flatten()]))[0, 1] > 0.99


def test_every_recipe_can_be_named_in_recipes():
    # --recipes is comma-separated: a comma in a name would make the recipe unreachable.
    names = [*bench_quality.RECIPES, *bench_quality.LONG_RECIPES]
    assert not [name for name in names if "," in name]
    assert set(bench_quality.LONG_DEFAULT) <= set(bench_quality.LONG_RECIPES)


def test_every_long_recipe_builds_its_config(tmp_path):
    # A misspelt option would first fail an hour into a long run; the loss weights are what the names say.
    args = bench_quality.parse_args(["--long"])
    configs = (bench_quality.long_config(name, args, tmp_path) for name in bench_quality.LONG_RECIPES)
    weights = {name: (c.cycle_lambda, c.identity_lambda) for name, c in zip(bench_quality.LONG_RECIPES, configs)}
    assert weights["Kaggle default (U-Net + resize-conv)"] == (10.0, 5.0)
    assert weights["Kaggle default + cycle lambda 5"] == (5.0, 2.5)
    assert weights["Kaggle default + identity weight 0.1"] == (10.0, 1.0)
    assert weights["Kaggle default + identity weight 1.0"] == (10.0, 10.0)
    assert bench_quality.long_config("Kaggle default + EMA 0.999", args, tmp_path).ema_decay == 0.999
    assert bench_quality.long_config("Kaggle default + 16x16 patches (d_layers=1)", args, tmp_path).d_layers == 1
    assert bench_quality.long_config("Kaggle default + painting crops", args, tmp_path).painting_augment == "crop"
    wide = bench_quality.long_config("Kaggle default + wide 16x16 patches (d_layers=1 at ndf=128)", args, tmp_path)
    assert (wide.d_layers, wide.ndf, wide.ngf) == (1, 128, 32)


def test_the_verdicts_tell_a_discriminator_that_learnt_its_paintings_from_one_that_judges_style():
    generator = torch.Generator().manual_seed(0)
    painting = lambda n: torch.rand(n, 3, 8, 8, generator=generator) * 0.5 + 0.3  # noqa: E731  bright
    training, held_out = painting(200), painting(200)
    fakes = torch.rand(50, 3, 8, 8, generator=generator) * 0.5 - 0.8  # dark

    class Memorizer(torch.nn.Module):  # real only when it has seen the very image
        def forward(self, x):
            exact = "donot_use_mm_for_euclid_dist"  # the matmul form is 1e-3 off at zero distance
            distance = torch.cdist(x.flatten(1), training.flatten(1), compute_mode=exact).min(dim=1).values
            return (distance < 1e-3).float()[:, None, None, None].expand(-1, 1, 2, 2)

    class StyleJudge(torch.nn.Module):  # real when bright, whichever painting it is
        def forward(self, x):
            return x.mean(dim=1, keepdim=True).clamp(0, 1)

    learnt = bench_quality.painting_verdicts(Memorizer(), training, held_out, fakes)
    assert (learnt["training"], learnt["held_out"], learnt["translations"]) == (1.0, 0.0, 0.0)
    assert learnt["held_out_below_median"] == 1.0
    style = bench_quality.painting_verdicts(StyleJudge(), training, held_out, fakes)
    assert style["held_out"] == pytest.approx(style["training"], abs=0.01) and style["translations"] == 0.0
    assert 0.4 < style["held_out_below_median"] < 0.6


def small_data(tmp_path) -> Path:
    """A gan-getting-started folder of 12 photos and 6 paintings, 40x40."""
    from .conftest import write_images

    data = tmp_path / "data"
    write_images(data / "photo_jpg", 12, size=(40, 40), seed=1, prefix="photo")
    write_images(data / "monet_jpg", 6, size=(40, 40), seed=2, prefix="monet")
    return data


def recorded_run(tmp_path, data, *extra):
    """A Kaggle-default run of 6 steps at 32x32 on `data`, recorded at steps 3 and 6."""
    args = bench_quality.parse_args(["--long", "--recipes", "Kaggle default (U-Net + resize-conv)", "--size", "32",
                                     "--photos", "8", "--holdout", "2", "--eval-photos", "5", "--long-steps", "6",
                                     "--eval-steps", "3", "--record", str(tmp_path / "recorded"), *extra])
    scratch = tmp_path / "scratch"
    archive = bench_quality.record_run(args.recipes, args, data, scratch, Path(args.record))
    return args, archive, scratch / bench_quality.slug(args.recipes) / "checkpoints" / "latest.pt"


def test_a_recorded_run_scores_as_the_evaluator_scores_the_generator(tmp_path, feature_network):
    """The GPU machine has no FID network: its translations are kept losslessly and scored here,
    and must give the scores an evaluation in the run would have given."""
    from monet_utils.checkpoints import load_generator
    from monet_utils.evaluation import Evaluator
    from .conftest import write_images

    data = tmp_path / "data"
    write_images(data / "photo_jpg", 12, size=(48, 48), seed=1, prefix="photo")
    write_images(data / "monet_jpg", 6, size=(48, 48), seed=2, prefix="monet")
    args, archive, latest = recorded_run(tmp_path, data)

    out = tmp_path / "long"
    bench_quality.score_recorded(archive, args, data, feature_network, out)
    run = bench_quality.finished_runs(out)
    assert list(run) == ["Kaggle default (U-Net + resize-conv), 6 steps on CPU"]
    evaluations = run["Kaggle default (U-Net + resize-conv), 6 steps on CPU"]["evaluations"]
    assert [e["step"] for e in evaluations] == [3, 6]

    config = bench_quality.long_config(args.recipes, args, tmp_path / "direct")
    evaluator = Evaluator(config, bench_quality.long_dataset(config, args, data), torch.device("cpu"), feature_network)
    generator, _ = load_generator(latest, device="cpu")
    generator.eval()
    direct = evaluator.score(evaluator.translations(generator))
    assert evaluations[-1]["fid"] == pytest.approx(direct["fid"], rel=1e-9)
    assert evaluations[-1]["mifid"] == pytest.approx(direct["mifid"], rel=1e-9)
    assert evaluations[0]["fid"] != pytest.approx(direct["fid"], rel=1e-6)  # step 3 was another generator

    # Scored against another benchmark's photos, it refuses rather than compares the wrong images.
    args.photos = 7
    with pytest.raises(SystemExit, match="other photos"):
        bench_quality.score_recorded(archive, args, data, feature_network, out)


def test_device_speed_leaves_amp_and_compile_to_the_device_and_names_the_recorded_run_with_them(tmp_path):
    data = small_data(tmp_path)
    _, fp32_eager, _ = recorded_run(tmp_path, data)
    args, device_speed, _ = recorded_run(tmp_path, data, "--device-speed")
    config = bench_quality.long_config(args.recipes, args, tmp_path / "out")
    assert (config.amp, config.compile) == ("auto", "auto")
    assert device_speed != fp32_eager and fp32_eager.exists()  # two runs, neither written over
    args.device_speed = False
    config = bench_quality.long_config(args.recipes, args, tmp_path / "out")
    assert (config.amp, config.compile) == ("off", "off")
    with pytest.raises(SystemExit):  # the runs trained and scored here stay fp32 and eager
        bench_quality.parse_args(["--long", "--device-speed"])


def test_long_steps_must_be_positive_unless_fitted_to_the_minutes_of_a_recorded_run():
    for steps in ("-1", "0"):
        with pytest.raises(SystemExit):
            bench_quality.parse_args(["--long", "--long-steps", steps])
    assert bench_quality.parse_args(["--long", "--long-steps", "0", "--record", "x"]).long_steps == 0


def test_a_run_planned_for_another_length_is_kept_beside_the_recipes_run(tmp_path, feature_network, capsys):
    """A longer schedule of a recipe already run is a new run, not skipped as done or written over it."""
    data = small_data(tmp_path)
    recipe = "Kaggle default (U-Net + resize-conv)"
    common = ["--long", "--recipes", recipe, "--size", "32", "--photos", "8", "--holdout", "2",
              "--eval-photos", "5", "--eval-steps", "3", "--patience", "5", "--out", str(tmp_path / "bench")]
    for extra in (["--stop-steps", "3"], ["--long-steps", "6"]):
        bench_quality.long_mode(bench_quality.parse_args(common + extra), data, feature_network)
    runs = bench_quality.finished_runs(tmp_path / "bench" / "long")
    assert list(runs) == [recipe, f"{recipe}, 6 steps"]
    assert [e["step"] for e in runs[recipe]["evaluations"]] == [3]
    assert [e["step"] for e in runs[f"{recipe}, 6 steps"]["evaluations"]] == [3, 6]
    assert runs[f"{recipe}, 6 steps"]["planned_steps"] == 6
    assert f"{recipe}, 6 steps" in capsys.readouterr().out  # in the table

    # Rescoring the artifacts reaches both runs, and gives what each run measured at its end.
    for name, run in runs.items():
        path = tmp_path / "bench" / "long" / bench_quality.slug(name) / "evaluations.json"
        path.write_text(json.dumps({k: v for k, v in run.items() if k != "artifacts"}))
    bench_quality.long_mode(bench_quality.parse_args(common + ["--rescore-artifacts"]), data, feature_network)
    rescored = bench_quality.finished_runs(tmp_path / "bench" / "long")
    assert {name: run.get("artifacts") for name, run in rescored.items()} == pytest.approx(
        {name: run["artifacts"] for name, run in runs.items()})

    # --overfit rates the last checkpoint of both runs (best.pt holds no discriminator), at the run's last step.
    capsys.readouterr()
    bench_quality.overfit_mode(bench_quality.parse_args(common + ["--overfit"]), data)
    rows = {(row[0], row[1]): int(row[2]) for row in map(str.split, capsys.readouterr().out.splitlines()[1:])}
    assert rows == {(bench_quality.slug(name), "latest"): run["steps"] for name, run in runs.items()}


def test_a_weight_averaging_run_also_scores_its_weights_as_trained(tmp_path, feature_network, capsys):
    """Its evaluations score the average; beside each, the same step's trained weights, as an
    evaluation of them would score."""
    from monet_utils.checkpoints import read_checkpoint, load_network
    from monet_utils.evaluation import Evaluator
    from monet_utils.models import build_generator
    data = small_data(tmp_path)
    recipe = "Kaggle default + EMA 0.999"
    args = bench_quality.parse_args(["--long", "--recipes", recipe, "--size", "32", "--photos", "8", "--holdout", "2",
                                     "--eval-photos", "5", "--eval-steps", "3", "--stop-steps", "6",
                                     "--out", str(tmp_path / "bench")])
    bench_quality.long_mode(args, data, feature_network)
    evaluations = bench_quality.finished_runs(tmp_path / "bench" / "long")[recipe]["evaluations"]
    assert [e["step"] for e in evaluations] == [3, 6]

    folder = tmp_path / "bench" / "long" / bench_quality.slug(recipe)
    state = read_checkpoint(folder / "checkpoints" / "latest.pt")
    config = bench_quality.long_config(recipe, args, folder)
    trained = build_generator(config)
    load_network(trained, state["networks"]["G_photo2monet"], "G_photo2monet", "latest.pt")
    evaluator = Evaluator(config, bench_quality.long_dataset(config, args, data), torch.device("cpu"), feature_network)
    assert evaluations[-1]["fid_trained"] == pytest.approx(evaluator.score(evaluator.translations(trained.eval()))["fid"],
                                                           rel=1e-9)
    assert evaluations[-1]["fid_trained"] != pytest.approx(evaluations[-1]["fid"], rel=1e-6)
    assert "  the weights as trained" in capsys.readouterr().out  # its row in the table


def test_a_folder_of_the_chosen_photos_gives_the_same_training_set_in_its_order(tmp_path):
    from .conftest import write_images

    full, only = tmp_path / "full", tmp_path / "only"
    write_images(full / "photo_jpg", 12, size=(40, 40), seed=1, prefix="photo")
    write_images(full / "monet_jpg", 6, size=(40, 40), seed=2, prefix="monet")
    args = bench_quality.parse_args(["--long", "--photos", "5", "--holdout", "2", "--size", "32"])
    config = bench_quality.long_config("U-Net with transposed convs", args, tmp_path / "out")
    chosen = [path.name for path in bench_quality.long_dataset(config, args, full).photo_paths]
    assert len(chosen) == 5 and chosen != sorted(chosen)

    write_images(only / "monet_jpg", 6, size=(40, 40), seed=2, prefix="monet")
    (only / "photo_jpg").mkdir()
    for name in chosen:
        (only / "photo_jpg" / name).write_bytes((full / "photo_jpg" / name).read_bytes())
    (tmp_path / "order.json").write_text(json.dumps(chosen))
    args.photo_order = str(tmp_path / "order.json")
    assert [path.name for path in bench_quality.long_dataset(config, args, only).photo_paths] == chosen

    (only / "photo_jpg" / chosen[2]).unlink()
    with pytest.raises(SystemExit, match=f"1 of its photos are not in .*first: {chosen[2]}"):
        bench_quality.long_dataset(config, args, only)


def test_the_curve_has_one_panel_per_device_that_trained(tmp_path):
    from PIL import Image

    def run(device=None, offset=0.0):
        evaluations = [{"step": step, "fid": 250.0 - step / 100 + offset} for step in (500, 1000)]
        return {"evaluations": evaluations, "baseline": {"fid": 260.0}, **({"device": device} if device else {})}

    cpu_only, both = tmp_path / "cpu.png", tmp_path / "both.png"
    bench_quality.plot_curve({"a": run(), "b": run(offset=3.0)}, cpu_only)
    bench_quality.plot_curve({"a": run(), "b, on a GPU": run("NVIDIA H100 80GB HBM3")}, both)
    (width, height), (both_width, both_height) = Image.open(cpu_only).size, Image.open(both).size
    assert both_width == width and both_height == 2 * height


def test_scale_scores_the_photos_and_paintings_by_size_as_the_runs_score_them(tmp_path, feature_network, capsys):
    """--scale's photos, resized as evaluated, are the runs' no-style baseline; its paintings at 256
    the runs' Monet line; and the size changes the scores."""
    data = small_data(tmp_path)
    recipe = "Kaggle default (U-Net + resize-conv)"
    common = ["--long", "--recipes", recipe, "--size", "32", "--photos", "8", "--holdout", "2",
              "--eval-photos", "5", "--eval-steps", "3", "--stop-steps", "3", "--out", str(tmp_path / "bench")]
    bench_quality.long_mode(bench_quality.parse_args(common), data, feature_network)
    capsys.readouterr()
    bench_quality.long_mode(bench_quality.parse_args(common + ["--scale"]), data, feature_network)
    out = tmp_path / "bench" / "long"
    scale, run = json.loads((out / "scale.json").read_text()), bench_quality.finished_runs(out)[recipe]
    assert scale["sizes"] == [32, 128, 256] and (scale["holdout"], scale["photos_scored"]) == (2, 5)
    assert scale["photos"]["as evaluated"] == pytest.approx(run["baseline"]["fid"], rel=1e-9)
    assert scale["paintings"]["by size"][-1] == pytest.approx(run["paintings"]["fid"], rel=1e-9)
    # The run's best checkpoint, against the held-out paintings at 256, scores what its best evaluation did.
    assert scale["translations"][recipe]["fid"] == pytest.approx(min(e["fid"] for e in run["evaluations"]), rel=1e-9)
    # Like for like: against the held-out paintings resized to 32 as training resizes them.
    from monet_utils.data import decode_all
    from monet_utils.fid import extract_features, fid_scores, load_feature_network

    network, args = load_feature_network(feature_network), bench_quality.parse_args(common)
    features = lambda images: extract_features(network, images.split(50), "cpu", "test", progress=False)
    dataset = bench_quality.long_dataset(bench_quality.long_config(recipe, args, out), args, data)
    held_out = features(decode_all(dataset.holdout_paths, 32))
    assert scale["paintings"]["like for like"]["smoothed"] == pytest.approx(
        fid_scores(held_out, features(decode_all(dataset.monet_paths, 32)))["fid"], rel=1e-6)
    assert scale["photos"]["like for like"]["as evaluated"] != pytest.approx(scale["photos"]["as evaluated"], rel=1e-3)
    assert len({round(fid, 6) for fid in scale["photos"]["by size"] + [scale["photos"]["as evaluated"]]}) == 4
    printed = capsys.readouterr().out
    assert "What the size alone does" in printed and "at 32x32 (--scale)" in printed
    assert (out / "scale.png").stat().st_size > 0
    # Measured for another size, photos or paintings, it is not this benchmark's.
    for other in (["--size", "64"], ["--holdout", "3"], ["--eval-photos", "4"], ["--photos", "10"]):
        assert bench_quality.measured_scale(out, bench_quality.parse_args(common + other)) is None
    assert bench_quality.measured_scale(out, bench_quality.parse_args(common)) == scale


@pytest.mark.parametrize("painted, verdict", [((230.0, 212.2), "out of reach"), ((230.0, 200.0), "within reach")])
def test_the_scale_table_says_whether_monets_own_paintings_reach_the_bar(capsys, painted, verdict):
    alike = {"as evaluated": 184.5, "smoothed": 190.6}
    scale = {"size": 64, "sizes": [64, 128, 256], "holdout": 60, "photos_scored": 250,
             "photos": {"as evaluated": 260.6, "by size": [264.7, 210.2, 190.9], "like for like": alike},
             "paintings": {"as evaluated": painted[0], "by size": [painted[1], 152.4, 131.9],
                           "like for like": {"as evaluated": 150.0, "smoothed": 139.1}},
             "translations": {"a": {"fid": 237.2, "like for like": 175.8}, "b": {"fid": 240.0, "like for like": 186.3}}}
    bench_quality.print_scale_table(scale)
    lines = capsys.readouterr().out.splitlines()
    verdict_line = next(line for line in lines if line.startswith("The bar") and "at 64x64" in line)
    assert f"= {0.8 * 260.6:.1f}" in verdict_line and f"score {min(painted):.1f} at best" in verdict_line
    assert verdict in verdict_line
    # Like for like, the bar is 0.8 x the photos there, and the best translations are named.
    assert f"= {0.8 * 184.5:.1f}; Monet's own paintings score 139.1 at best: the bar is within reach" in lines[-2]
    assert lines[-1] == f"The best translations: a, 175.8, {175.8 / 184.5:.2f} x the photos."
