"""Checkpoint files: data only, atomic writes, clear errors."""
import os

import pytest
import torch

from monet_utils.checkpoints import CheckpointError, load_generator, read_checkpoint, write_checkpoint
from monet_utils.training import CycleGANTrainer

from .test_training import fixed_batch


class WritesAMarker:
    """A pickle payload: unpickling it calls os.system, as a malicious checkpoint would."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("payload_only", [True, False])
def test_a_checkpoint_with_a_pickle_payload_is_refused_without_running_it(tmp_path, tiny_config, payload_only):
    marker = tmp_path / "ran"
    if payload_only:
        state = WritesAMarker(marker)
    else:  # a genuine checkpoint with one extra object hidden in it
        state = CycleGANTrainer(tiny_config).state_dict()
        state["history"] = [WritesAMarker(marker)]
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused unread"):
        load_generator(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused unread"):
        CycleGANTrainer(tiny_config).load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_a_genuine_checkpoint_reads_as_data_only(tiny_config):
    trainer = CycleGANTrainer(tiny_config)
    trainer.model.train_step(*fixed_batch())  # fills the pools: their RNG state must load as plain data
    state = read_checkpoint(trainer.save())
    assert state["step"] == 0 and len(state["pools"][0]["monet"]["images"]) == 2


def test_a_failed_save_removes_its_temporary_file_and_keeps_the_previous_checkpoint(tiny_config, monkeypatch):
    trainer = CycleGANTrainer(tiny_config)
    path = trainer.save()
    good = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):  # what torch.save did on a full disk
        open(f, "wb").write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*latest.pt \(.* MB free on its disk.*"
                                              r"unexpected pos.*the previous checkpoint is kept"):
        trainer.save()
    assert path.read_bytes() == good
    assert not path.with_name("latest.pt.tmp").exists()


def test_a_checkpoint_of_another_architecture_is_refused(tiny_config):
    path = CycleGANTrainer(tiny_config).save()
    with pytest.raises(CheckpointError, match="ngf: checkpoint 4 vs config 8"):
        CycleGANTrainer(tiny_config.replace(ngf=8)).load(path)


def test_weights_that_disagree_with_their_config_are_a_checkpoint_error(tiny_config, tmp_path):
    state = CycleGANTrainer(tiny_config).state_dict()
    state["config"]["n_res_blocks"] = 2  # the weights hold one block
    write_checkpoint(state, tmp_path / "lying.pt")
    with pytest.raises(CheckpointError, match="G_photo2monet weights do not fit the architecture"):
        load_generator(tmp_path / "lying.pt")


def test_unreadable_checkpoints_raise_clear_errors(tmp_path, tiny_config):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_generator(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_generator(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        CycleGANTrainer(tiny_config).load(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a monet_utils checkpoint"):
        load_generator(tmp_path / "other.pt")


def test_load_generator_restores_the_trained_weights(tiny_config):
    trainer = CycleGANTrainer(tiny_config)
    trainer.model.train_step(*fixed_batch())
    generator, config = load_generator(trainer.save(), device="cpu")
    assert config == tiny_config
    x = fixed_batch()[0]
    with torch.inference_mode():
        assert torch.equal(generator(x), trainer.model.G_photo2monet(x))
