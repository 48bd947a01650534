"""Evaluation during training: when it runs, what it records, the best checkpoint, submit_from."""
import re
from pathlib import Path

import pytest
import torch

from monet_utils import evaluation, training
from monet_utils.checkpoints import load_generator, read_checkpoint
from monet_utils.config import ConfigError
from monet_utils.data import build_dataset
from monet_utils.launch import train
from monet_utils.training import CycleGANTrainer


class FakeClock:
    """time.monotonic for the training loop: `seconds_per_step` pass with every training step."""

    def __init__(self, trainer, monkeypatch, seconds_per_step):
        self.now = 0.0
        monkeypatch.setattr(training.time, "monotonic", lambda: self.now)
        step = trainer.model.train_step

        def timed_step(*args):
            self.now += seconds_per_step
            return step(*args)
        monkeypatch.setattr(trainer.model, "train_step", timed_step)


def scripted_fids(monkeypatch, fids):
    """The evaluations score `fids`, one after another (the real FID of a barely trained tiny model
    cannot be steered); everything around them is the real code."""
    scores = iter(fids)
    monkeypatch.setattr(evaluation, "fid_scores", lambda *args, **kwargs: {"fid": (f := next(scores)), "mifid": 2 * f})


def fit(config, dataset_dir, monkeypatch=None, seconds_per_step=None) -> CycleGANTrainer:
    trainer = CycleGANTrainer(config)
    if seconds_per_step:
        FakeClock(trainer, monkeypatch, seconds_per_step)
    dataset = build_dataset(config, dataset_dir)
    trainer.fit(trainer.train_loader(dataset), progress=False,
                evaluator=evaluation.Evaluator.for_run(trainer.config, dataset, trainer.device))
    return trainer


def generator_weights(module):
    return torch.cat([v.flatten() for _, v in sorted(module.state_dict().items())])


@pytest.fixture
def eval_config(tiny_config, feature_network):
    # 6 photos, batch 2: 3 steps an epoch.
    return tiny_config.replace(fid_weights=str(feature_network), eval_photos=4, tensorboard_every=0)


def test_every_eval_every_epochs_and_at_the_end_with_a_grid_each(eval_config, dataset_dir, capsys):
    trainer = fit(eval_config.replace(eval_every=2, epochs=5, max_steps=13), dataset_dir)
    assert [e["step"] for e in trainer.evaluations] == [6, 12, 13]  # epochs 2 and 4 end at 6 and 12; the end
    assert [e["epoch"] for e in trainer.evaluations] == [1, 3, 4]
    assert all(e["fid"] > 0 and e["mifid"] > 0 for e in trainer.evaluations)
    samples = trainer.checkpoint_path.parent.parent / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["step_12.png", "step_13.png", "step_6.png"]
    saved = read_checkpoint(trainer.checkpoint_path)["evaluations"]
    assert trainer.metrics()["evaluations"] == saved and [(e["step"], e["epoch"]) for e in saved] == [(6, 1), (12, 3),
                                                                                                        (13, 4)]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Evaluation at step")]
    assert [line.split(":")[1].split(",")[0] for line in lines] == [f" FID {e['fid']:.2f}" for e in saved]
    assert len(lines) == 3 and "(4 photos vs 3 training paintings)" in lines[0]
    # Seconds of training: a share of them would read "805.6% of the training time".
    assert re.search(r"; [\d.]+ s, evaluations so far [\d.]+ s \(the training so far is too short for a share\)",
                     lines[0]) and "%" not in lines[0]


def test_the_evaluation_line_gives_its_share_of_a_long_enough_training(eval_config, dataset_dir, monkeypatch, capsys):
    monkeypatch.setattr(training, "SHARE_AFTER_SECONDS", 0.0)
    fit(eval_config.replace(eval_every=1, epochs=1), dataset_dir)
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("Evaluation at step"))
    assert re.search(r"; [\d.]+ s, evaluations so far [\d.]+% of the training time", line), line


def test_eval_minutes_follow_the_clock(eval_config, dataset_dir, monkeypatch):
    """40 s a step, an evaluation due every minute: after steps 2, 4 and 6 (6 is also the end)."""
    trainer = fit(eval_config.replace(eval_minutes=1.0, epochs=2, max_steps=6), dataset_dir, monkeypatch, 40)
    assert [e["step"] for e in trainer.evaluations] == [2, 4, 6]


def test_eval_steps_count_optimizer_steps_across_epochs_and_resumes(eval_config, dataset_dir):
    """Every 4 steps (epochs of 3 do not divide them), and at the end; a resumed run keeps the count."""
    config = eval_config.replace(eval_steps=4, epochs=4, max_steps=9)
    assert [e["step"] for e in fit(config, dataset_dir).evaluations] == [4, 8, 9]
    resumed = fit(config.replace(max_steps=12), dataset_dir)
    assert [e["step"] for e in resumed.evaluations] == [4, 8, 9, 12]
    with pytest.raises(ConfigError, match="'eval_steps' must be >= 0"):
        eval_config.replace(eval_steps=-1)


def best_generator_weights(trainer):
    return generator_weights(load_generator(trainer.best_path, device="cpu")[0])


def test_the_best_checkpoint_changes_only_when_the_fid_improves_also_after_a_resume(eval_config, dataset_dir,
                                                                                    monkeypatch, capsys):
    config = eval_config.replace(eval_minutes=1.0, epochs=2)  # a minute a step: an evaluation after each
    scripted_fids(monkeypatch, [5.0, 3.0, 4.0])
    first = fit(config.replace(max_steps=3), dataset_dir, monkeypatch, 60)
    assert first.metrics()["best_evaluation"]["step"] == 2
    kept = best_generator_weights(first)
    scripted_fids(monkeypatch, [3.5, 4.5, 3.2])  # none beats step 2's 3.0: forgotten, step 4 or 6 would replace it
    resumed = fit(config.replace(max_steps=6), dataset_dir, monkeypatch, 60)
    assert [(e["step"], e["fid"]) for e in resumed.evaluations] == [
        (1, 5.0), (2, 3.0), (3, 4.0), (4, 3.5), (5, 4.5), (6, 3.2)]
    assert resumed.metrics()["best_evaluation"] == {**resumed.evaluations[1], "epoch": 0}
    assert torch.equal(best_generator_weights(resumed), kept)

    # submit_from: best.pt's generator, or the one trained last
    capsys.readouterr()
    submitted = resumed.submission_generator()
    assert "Submitting the generator of " in capsys.readouterr().out
    assert torch.equal(generator_weights(submitted), kept)
    assert not torch.equal(generator_weights(submitted), generator_weights(resumed.model.G_photo2monet))
    latest = CycleGANTrainer(config.replace(max_steps=6, submit_from="latest"))
    latest.load(latest.checkpoint_path)
    assert latest.submission_generator() is latest.model.G_photo2monet


@pytest.mark.parametrize("changes, why", [
    ({"eval_minutes": 0.0, "eval_every": 0}, "(no evaluations to choose from: eval_every, eval_steps and eval_minutes are 0)"),
    ({"eval_minutes": 1.0}, "(no readable best.pt)"),
    ({"eval_minutes": 1.0, "submit_from": "latest"}, "(submit_from='latest')"),
])
def test_the_last_weights_are_submitted_with_the_reason_a_user_can_act_on(eval_config, capsys, changes, why):
    """A demo run evaluates nothing: 'no readable best.pt' read as a failure there."""
    trainer = CycleGANTrainer(eval_config.replace(**changes))
    capsys.readouterr()
    assert trainer.submission_generator() is trainer.model.G_photo2monet
    assert capsys.readouterr().out.strip().endswith(why)


def test_the_best_comes_along_when_a_session_resumes_from_another_folder(eval_config, dataset_dir, monkeypatch,
                                                                        tmp_path, capsys):
    """Kaggle's chained sessions: the second resumes from the first's output, attached as an input."""
    config = eval_config.replace(eval_minutes=1.0, epochs=2)
    scripted_fids(monkeypatch, [5.0, 3.0, 4.0])
    first = fit(config.replace(max_steps=3, output_dir=str(tmp_path / "session1")), dataset_dir, monkeypatch, 60)
    kept = best_generator_weights(first)
    scripted_fids(monkeypatch, [3.5, 4.5, 3.2])
    second = fit(config.replace(max_steps=6, output_dir=str(tmp_path / "session2"),
                                resume_from=str(first.checkpoint_path)), dataset_dir, monkeypatch, 60)
    assert second.metrics()["best_evaluation"]["step"] == 2
    assert torch.equal(best_generator_weights(second), kept)
    capsys.readouterr()
    assert torch.equal(generator_weights(second.submission_generator()), kept)
    assert "step 2, FID 3.00" in capsys.readouterr().out


def test_best_pt_is_the_submissions_generator_and_leaves_the_checkpoint_clock_alone(eval_config, dataset_dir,
                                                                                    monkeypatch):
    """A minute a step, a checkpoint due every 2 minutes, an evaluation every minute that always
    improves: latest.pt is still written by its own clock (steps 2 and 5; 3 and 6 end epochs)."""
    written = []
    write = training.write_checkpoint
    monkeypatch.setattr(training, "write_checkpoint",
                        lambda state, path: written.append((Path(path).name, state)) or write(state, path))
    scripted_fids(monkeypatch, [6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
    trainer = fit(eval_config.replace(eval_minutes=1.0, checkpoint_minutes=2.0, epochs=2, max_steps=6), dataset_dir,
                  monkeypatch, 60)
    assert [state["step"] for name, state in written if name == "latest.pt"] == [2, 3, 5, 6]
    best = read_checkpoint(trainer.best_path)
    assert list(best["networks"]) == ["G_photo2monet"] and "opt_G" not in best and "pools" not in best
    assert best["evaluation"] == trainer.evaluations[-1]
    assert torch.equal(best_generator_weights(trainer), generator_weights(trainer.model.G_photo2monet))


def test_a_crash_just_after_best_pt_is_replaced_cannot_mislead_the_rerun(eval_config, dataset_dir, monkeypatch,
                                                                          capsys):
    """kill -9 between best.pt and the record of its scores used to leave them disagreeing."""
    write = training.write_checkpoint
    best_writes = []

    def killed_after_the_second_best(state, path):
        write(state, path)
        if Path(path).name == "best.pt":
            best_writes.append(torch.cat([v.flatten() for _, v in sorted(state["networks"]["G_photo2monet"].items())]))
            if len(best_writes) == 2:
                raise SystemExit("kill -9")

    monkeypatch.setattr(training, "write_checkpoint", killed_after_the_second_best)
    scripted_fids(monkeypatch, [5.0, 3.0])
    config = eval_config.replace(eval_minutes=1.0, epochs=2, max_steps=6, checkpoint_every=1)
    with pytest.raises(SystemExit):
        fit(config, dataset_dir, monkeypatch, 60)
    monkeypatch.setattr(training, "write_checkpoint", write)
    rerun = CycleGANTrainer(config.replace(max_steps=1))  # resumes a finished run: no more steps
    rerun.resume()
    capsys.readouterr()
    submitted = rerun.submission_generator()
    assert "step 2, FID 3.00" in capsys.readouterr().out
    assert torch.equal(generator_weights(submitted), best_writes[1])


def test_an_unreadable_best_pt_falls_back_to_the_last_weights_with_one_line(eval_config, dataset_dir, monkeypatch,
                                                                            capsys):
    scripted_fids(monkeypatch, [5.0, 3.0, 4.0])
    config = eval_config.replace(eval_minutes=1.0, epochs=2, max_steps=3)
    fit(config, dataset_dir, monkeypatch, 60)
    trainer = CycleGANTrainer(config)
    trainer.best_path.write_bytes(b"\x00garbage" * 100)
    trainer.resume()
    submitted = trainer.submission_generator()
    out = capsys.readouterr().out
    assert submitted is trainer.model.G_photo2monet
    assert out.count(str(trainer.best_path)) == 1 and "could not be read" in out and "Traceback" not in out


def test_without_evaluations_the_last_generator_is_submitted(tiny_config):
    trainer = CycleGANTrainer(tiny_config)
    assert trainer.submission_generator() is trainer.model.G_photo2monet


def test_no_inception_network_skips_evaluation_with_one_line(eval_config, dataset_dir, monkeypatch, capsys):
    monkeypatch.setattr(evaluation, "feature_network_file", lambda path=None: None)
    config = eval_config.replace(fid_weights="", eval_every=1, max_steps=4, epochs=2)
    trainer = CycleGANTrainer(config)
    train(trainer, build_dataset(config, dataset_dir))
    assert trainer.step == 4 and trainer.evaluations == []
    out = capsys.readouterr().out
    assert out.count("Evaluation during training skipped: no Inception network") == 1
    assert not (trainer.checkpoint_path.parent.parent / "samples").exists() and not trainer.best_path.exists()


def test_an_evaluation_that_fails_warns_once_and_training_goes_on(eval_config, dataset_dir, monkeypatch, capsys):
    """An out-of-memory at the second evaluation used to end an 11-hour run at minute 40."""
    evaluate = evaluation.Evaluator.evaluate
    calls = []

    def out_of_memory_the_second_time(self, *args):
        calls.append(args[2])
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return evaluate(self, *args)

    monkeypatch.setattr(evaluation.Evaluator, "evaluate", out_of_memory_the_second_time)
    trainer = fit(eval_config.replace(eval_every=1, epochs=4), dataset_dir)
    assert trainer.step == 12 and read_checkpoint(trainer.checkpoint_path)["step"] == 12
    assert calls == [3, 6] and [e["step"] for e in trainer.evaluations] == [3]
    assert trainer.metrics()["best_evaluation"]["step"] == 3
    out = capsys.readouterr().out
    assert out.count("Evaluation at step 6 failed (OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB); "
                     "evaluation is off for the rest of this run, and training goes on") == 1


@pytest.mark.parametrize("content", [None, b"not a network"], ids=["missing", "a-text-file"])
def test_a_bad_fid_weights_file_is_refused_before_training(eval_config, dataset_dir, tmp_path, content):
    path = tmp_path / "weights.pt"
    if content:
        path.write_bytes(content)
    config = eval_config.replace(eval_every=1, fid_weights=str(path))
    with pytest.raises(ConfigError, match=f"config 'fid_weights': .*{path}"):
        evaluation.Evaluator.for_run(config, build_dataset(config, dataset_dir), torch.device("cpu"))


def test_evaluations_go_to_tensorboard(eval_config, dataset_dir):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    trainer = fit(eval_config.replace(eval_every=1, epochs=2, tensorboard_every=3), dataset_dir)
    events = event_accumulator.EventAccumulator(str(trainer.checkpoint_path.parent.parent / "tensorboard"))
    events.Reload()
    for name in ("fid", "mifid"):
        logged = events.Scalars(f"eval/{name}")
        assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in logged] == [
            (r["step"], r[name]) for r in trainer.evaluations]
    assert [e.step for e in events.Images("eval/samples")] == [3, 6]


def test_a_compiled_generator_is_not_compiled_again_to_evaluate(eval_config, dataset_dir, tmp_path):
    """Eval mode and the evaluation's batch size would each be a new graph for torch.compile."""
    from torch._dynamo.testing import CompileCounter

    trainer = CycleGANTrainer(eval_config.replace(eval_every=1))
    counter = CompileCounter()
    trainer.model.G_photo2monet.compile(backend=counter)
    dataset = build_dataset(trainer.config, dataset_dir)
    photos, paintings = next(iter(trainer.train_loader(dataset)))
    trainer.model.train_step(photos, paintings)
    compiled = counter.frame_count
    assert compiled > 0
    evaluator = evaluation.Evaluator.for_run(trainer.config, dataset, trainer.device)
    evaluator.evaluate(trainer.model.G_photo2monet, trainer.model.G_monet2photo, 1, tmp_path / "samples")
    assert counter.frame_count == compiled and trainer.model.G_photo2monet.training


def test_the_evaluated_photos_are_the_same_whatever_the_runs_seed(tiny_config, dataset_dir, feature_network):
    """Runs of a sweep over seeds are scored on the same photos, so their FIDs compare."""
    dataset = build_dataset(tiny_config, dataset_dir)
    chosen = [evaluation.Evaluator(tiny_config.replace(seed=seed, eval_photos=3), dataset, torch.device("cpu"),
                                   feature_network).photo_paths for seed in (0, 5, 11)]
    assert len(chosen[0]) == 3 and set(chosen[0]) < set(dataset.photo_paths)
    assert chosen[1] == chosen[0] and chosen[2] == chosen[0]
