"""TensorBoard event files, read back with tensorboard's own reader."""
import shutil
import sys

import pytest

from monet_utils.checkpoints import read_checkpoint
from monet_utils.cyclegan import LOSS_NAMES
from monet_utils.data import build_dataset
from monet_utils.training import CycleGANTrainer

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def train(config, dataset_dir) -> CycleGANTrainer:
    trainer = CycleGANTrainer(config)
    trainer.fit(trainer.train_loader(build_dataset(config, dataset_dir)), progress=False)
    return trainer


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = event_accumulator.EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected_scalars(trainer: CycleGANTrainer, every: int) -> dict[str, list[tuple[int, float]]]:
    """From the history: each loss's mean over the `every` steps up to each multiple of `every`,
    and the LR of the epoch that step trained in."""
    logged = [s for s in range(every, trainer.step + 1, every)]
    expected = {}
    for name in LOSS_NAMES:
        expected[f"loss/{name}"] = [(s, sum(r[name] for r in trainer.history if s - every < r["step"] <= s) / every)
                                    for s in logged]
    epoch_of = {r["step"]: r["epoch"] for r in trainer.history}
    for net in ("G", "D"):
        expected[f"lr/{net}"] = [(s, trainer.config.lr * trainer.lr_factor(epoch_of[s])) for s in logged]
    return expected


def assert_scalars_match(scalars, expected):
    assert set(scalars) == set(expected) | {"speed/steps_per_second"}
    for tag, points in expected.items():
        assert [step for step, _ in scalars[tag]] == [step for step, _ in points], tag
        assert [value for _, value in scalars[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag
    assert [step for step, _ in scalars["speed/steps_per_second"]] == [step for step, _ in points]
    assert all(value > 0 for _, value in scalars["speed/steps_per_second"])


def test_losses_learning_rates_and_speed_are_logged_every_n_steps(tiny_config, dataset_dir, capsys):
    # 6 photos, batch 2: 3 steps an epoch; the LR decays over the last 2 of 3 epochs.
    config = tiny_config.replace(epochs=3, decay_epochs=2, tensorboard_every=2)
    trainer = train(config, dataset_dir)
    assert trainer.step == 9
    assert_scalars_match(read_scalars(trainer.checkpoint_path.parent.parent / "tensorboard"),
                         expected_scalars(trainer, 2))
    assert "TensorBoard: 4 writes to" in capsys.readouterr().out


def test_a_resumed_run_appends_without_showing_a_step_twice(tiny_config, dataset_dir, tmp_path):
    """The first run logs step 6 after its last checkpoint (step 4), then dies: the resumed run
    logs step 6 again, from its own training, and the reader shows only that one."""
    config = tiny_config.replace(epochs=4, decay_epochs=2, tensorboard_every=2)
    checkpoint = CycleGANTrainer(config).checkpoint_path
    train(config.replace(max_steps=4), dataset_dir)
    shutil.copy(checkpoint, tmp_path / "step4.pt")
    train(config.replace(max_steps=6), dataset_dir)
    shutil.copy(tmp_path / "step4.pt", checkpoint)  # as if killed after logging step 6, before saving it
    resumed = train(config.replace(max_steps=10), dataset_dir)
    scalars = read_scalars(tmp_path / "out" / "tensorboard")
    assert [step for step, _ in scalars["loss/D_monet"]] == [2, 4, 6, 8, 10]
    assert_scalars_match(scalars, expected_scalars(resumed, 2))


def test_without_the_tensorboard_package_training_goes_on_and_says_so(tiny_config, dataset_dir, monkeypatch,
                                                                      capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    trainer = train(tiny_config.replace(max_steps=2, tensorboard_every=1), dataset_dir)
    assert trainer.step == 2
    assert "TensorBoard logging is off" in capsys.readouterr().out
    assert not (trainer.checkpoint_path.parent.parent / "tensorboard").exists()


def test_tensorboard_every_0_writes_nothing(tiny_config, dataset_dir):
    trainer = train(tiny_config.replace(max_steps=2, tensorboard_every=0), dataset_dir)
    assert not (trainer.checkpoint_path.parent.parent / "tensorboard").exists()


@pytest.mark.parametrize("writes_before_full", [0, 3], ids=["full-from-the-start", "fills-mid-run"])
def test_a_full_disk_stops_the_logging_with_one_line_and_training_goes_on(tiny_config, dataset_dir, monkeypatch,
                                                                            capsys, writes_before_full):
    """It used to end training: with no checkpoint at all when full from the start, else at the last one."""
    import errno
    from tensorboard.summary.writer import record_writer
    write = record_writer.RecordWriter.write
    done = []

    def until_the_disk_is_full(self, data):
        if len(done) >= writes_before_full:
            raise OSError(errno.ENOSPC, "No space left on device")
        done.append(data)
        return write(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", until_the_disk_is_full)
    trainer = train(tiny_config.replace(tensorboard_every=1, epochs=3, checkpoint_every=100), dataset_dir)
    assert trainer.step == 9
    assert read_checkpoint(trainer.checkpoint_path)["step"] == 9
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if "No space left on device" in line]
    assert len(lines) == 1 and lines[0].startswith("TensorBoard logging ") and "training goes on" in lines[0], lines
    assert "Traceback" not in captured.out + captured.err
