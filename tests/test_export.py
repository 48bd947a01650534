"""Exported generators give the PyTorch generator's output, and stylize reads them."""
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from monet_utils.__main__ import main
from monet_utils.checkpoints import CheckpointError
from monet_utils.export import config_path, export_generator, load_photo2monet
from monet_utils.stylize import stylize
from monet_utils.training import CycleGANTrainer

from .conftest import write_images
from .test_training import fixed_batch

NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "torchscript": (), "safetensors": ("safetensors",)}


@pytest.fixture
def trained(tiny_config):
    """A checkpoint whose generator is not at its init (one step), and that generator."""
    trainer = CycleGANTrainer(tiny_config)
    trainer.model.train_step(*fixed_batch())
    return trainer.save(), trainer.model.G_photo2monet.eval()


@pytest.mark.parametrize("fmt", sorted(NEEDS))
def test_an_exported_generator_matches_pytorch_at_any_size(trained, tmp_path, fmt):
    for module in NEEDS[fmt]:
        pytest.importorskip(module, reason=f"{module} (requirements-export.txt) not installed")
    checkpoint, generator = trained
    out = export_generator(checkpoint, fmt, tmp_path / f"monet.{fmt}")
    assert not list(tmp_path.glob("*.tmp"))
    assert json.loads(config_path(out).read_text())["config"]["ngf"] == 4
    exported = load_photo2monet(out, device="cpu")
    for shape in [(1, 3, 32, 32), (3, 3, 48, 80)]:  # other batch sizes, heights and widths than the example
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
        with torch.inference_mode():
            assert torch.allclose(exported(x), generator(x), atol=1e-5)


def test_the_exported_file_holds_the_generator_alone(trained, tmp_path):
    pytest.importorskip("safetensors")
    checkpoint, generator = trained
    out = export_generator(checkpoint, "safetensors", tmp_path / "monet.safetensors")
    params = sum(p.numel() for p in generator.parameters())
    assert out.stat().st_size < 4 * params + 10_000 < checkpoint.stat().st_size  # float32 weights and a header


def test_cli_export_then_stylize_with_the_exported_file(trained, tmp_path, capsys):
    checkpoint, _ = trained
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript",
                 "--output", str(tmp_path / "g.pt")]) == 0
    assert "Generator written to" in capsys.readouterr().out
    write_images(tmp_path / "photos", 2, size=(40, 36))
    from_checkpoint = stylize(checkpoint, tmp_path / "photos", tmp_path / "a.zip", size=32, progress=False)
    from_export = stylize(tmp_path / "g.pt", tmp_path / "photos", tmp_path / "b.zip", size=32, progress=False)
    with zipfile.ZipFile(from_checkpoint) as a, zipfile.ZipFile(from_export) as b:
        assert a.namelist() == b.namelist()
        for name in a.namelist():  # same pixels up to JPEG rounding
            pa, pb = (torch.from_numpy(np.asarray(Image.open(z.open(name)), dtype=np.float32)) for z in (a, b))
            assert (pa - pb).abs().mean() < 1


def test_bad_exports_and_files_are_clear_errors(trained, tmp_path, capsys):
    checkpoint, _ = trained
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--format", "onnx",
                 "--output", str(tmp_path / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "fake.safetensors").write_bytes(b"nonsense")
    with pytest.raises(CheckpointError, match="fake.safetensors could not be read as a generator"):
        load_photo2monet(tmp_path / "fake.safetensors")


@pytest.mark.parametrize("fmt", sorted(NEEDS))
def test_a_unet_with_resize_convs_exports_and_runs_at_other_sizes(tiny_config, tmp_path, fmt):
    for module in NEEDS[fmt]:
        pytest.importorskip(module, reason=f"{module} (requirements-export.txt) not installed")
    trainer = CycleGANTrainer(tiny_config.replace(generator="unet", upsampling="resize_conv"))
    trainer.model.train_step(*fixed_batch())
    out = export_generator(trainer.save(), fmt, tmp_path / f"unet.{fmt}")
    exported, generator = load_photo2monet(out, device="cpu"), trainer.model.G_photo2monet.eval()
    x = torch.rand((2, 3, 48, 80), generator=torch.Generator().manual_seed(1)) * 2 - 1  # not a multiple of 32
    with torch.inference_mode():
        assert torch.allclose(exported(x), generator(x), atol=1e-5)


def test_an_output_that_is_a_hard_link_to_the_checkpoint_leaves_the_checkpoint_whole(trained, tmp_path):
    """The export renames a new file into place: the other name keeps the checkpoint's bytes, so
    there is nothing to refuse (a refusal of hard links used to guard nothing)."""
    checkpoint, _ = trained
    before = checkpoint.read_bytes()
    output = tmp_path / "linked.pt"
    output.hardlink_to(checkpoint)
    export_generator(checkpoint, "torchscript", output)
    assert checkpoint.read_bytes() == before and output.read_bytes() != before


@pytest.mark.parametrize("same", ["path", "relative path"])
def test_an_output_that_is_the_checkpoint_is_refused_and_the_checkpoint_kept(trained, tmp_path, capsys, monkeypatch,
                                                                             same):
    checkpoint, _ = trained
    before = checkpoint.read_bytes()
    output = {"path": checkpoint, "relative path": checkpoint.parent / ".." / checkpoint.parent.name / checkpoint.name}[same]
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is the checkpoint it is exported from" in err and err.count("\n") == 1
    assert checkpoint.read_bytes() == before
    assert not config_path(output).exists()


@pytest.mark.parametrize("fmt", sorted(NEEDS))
def test_a_full_disk_is_one_error_line_naming_the_file(trained, tmp_path, capsys, fmt):
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    for module in NEEDS[fmt]:
        pytest.importorskip(module)
    checkpoint, _ = trained
    output = tmp_path / f"g.{fmt}"
    output.with_name(output.name + ".tmp").symlink_to("/dev/full")  # where the export writes first
    assert main(["export", "--checkpoint", str(checkpoint), "--format", fmt, "--output", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not write {fmt} generator {output} (") and "MB free" in err, err
    assert err.count("\n") == 1 and "no space left" in err.lower(), err
    assert not output.exists() and not output.with_name(output.name + ".tmp").exists()
