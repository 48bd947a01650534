import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monet_utils import submission
from monet_utils.models import ResnetGenerator, init_weights
from monet_utils.submission import SubmissionError, check_submission_zip, write_submission_zip

from .conftest import write_images


def make_zip(path, entries):
    with zipfile.ZipFile(path, "w") as archive:
        for name, (size, fmt, mode) in entries.items():
            buffer = io.BytesIO()
            Image.new(mode, size, 128).save(buffer, format=fmt)
            archive.writestr(name, buffer.getvalue())
    return path


GOOD = ((256, 256), "JPEG", "RGB")


def test_export_writes_one_256_jpeg_per_photo_even_from_a_small_model(tmp_path):
    photos = write_images(tmp_path / "photos", 5, size=(70, 50))
    generator = init_weights(ResnetGenerator(ngf=4, n_res_blocks=1))
    zip_path = write_submission_zip(generator, photos, tmp_path / "out" / "images.zip", image_size=32,
                                    batch_size=2, progress=False)
    report = check_submission_zip(zip_path, competition=False)
    assert report.n_images == 5 and not report.competition_valid
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == sorted(p.stem + ".jpg" for p in photos)
        image = Image.open(io.BytesIO(archive.read(archive.namelist()[0])))
        assert (image.format, image.size, image.mode) == ("JPEG", (256, 256), "RGB")
    assert not list((tmp_path / "out").glob("*.tmp"))
    with pytest.raises(SubmissionError, match="7,000-10,000"):
        check_submission_zip(zip_path, competition=True)


def test_a_failed_export_keeps_the_previous_zip(tmp_path):
    photos = write_images(tmp_path / "photos", 4)
    old = make_zip(tmp_path / "images.zip", {"a.jpg": GOOD})
    before = old.read_bytes()

    class Broken(ResnetGenerator):
        def forward(self, x):
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        write_submission_zip(Broken(ngf=4, n_res_blocks=1), photos, old, image_size=32, progress=False)
    assert old.read_bytes() == before
    assert not (tmp_path / "images.zip.tmp").exists()


def test_competition_count_range(tmp_path, monkeypatch):
    assert submission.COMPETITION_COUNT == (7_000, 10_000)
    monkeypatch.setattr(submission, "COMPETITION_COUNT", (3, 4))
    for count, valid in ((2, False), (3, True), (4, True), (5, False)):
        path = make_zip(tmp_path / f"{count}.zip", {f"{i}.jpg": GOOD for i in range(count)})
        if valid:
            assert check_submission_zip(path).competition_valid
        else:
            with pytest.raises(SubmissionError, match=f"{count} images"):
                check_submission_zip(path)


@pytest.mark.parametrize("entry, fragment", [
    ({"a.jpg": ((128, 128), "JPEG", "RGB")}, "128x128, expected 256x256"),
    ({"a.jpg": ((256, 256), "PNG", "RGB")}, "PNG data, expected JPEG"),
    ({"a.png": ((256, 256), "PNG", "RGB")}, "not a .jpg file"),
    ({"a.jpg": ((256, 256), "JPEG", "L")}, "mode L, expected RGB"),
])
def test_bad_entries_are_rejected_by_name(tmp_path, entry, fragment):
    path = make_zip(tmp_path / "images.zip", {"ok.jpg": GOOD, **entry})
    with pytest.raises(SubmissionError, match=fragment) as info:
        check_submission_zip(path, competition=False)
    assert "a." in str(info.value)


def test_not_a_zip_and_missing_zip(tmp_path):
    (tmp_path / "images.zip").write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    with pytest.raises(SubmissionError, match="not a zip file"):
        check_submission_zip(tmp_path / "images.zip")
    with pytest.raises(SubmissionError, match="does not exist"):
        check_submission_zip(tmp_path / "absent.zip")


def test_corrupt_jpeg_in_zip_is_reported(tmp_path):
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("bad.jpg", b"\xff\xd8garbage")
    with pytest.raises(SubmissionError, match="bad.jpg: unreadable"):
        check_submission_zip(path, competition=False)


@pytest.mark.parametrize("name, fragment", [
    ("../evil.jpg", "leaves the zip's folder"),
    ("/tmp/abs.jpg", "an absolute path"),
    ("imgs/a.jpg", "inside a folder"),
])
def test_unsafe_and_nested_names_are_rejected(tmp_path, name, fragment):
    path = make_zip(tmp_path / "images.zip", {"ok.jpg": GOOD, name: GOOD})
    with pytest.raises(SubmissionError, match=f"{name}: .*{fragment}"):
        check_submission_zip(path, competition=False)


def test_nested_images_never_count_for_the_competition(tmp_path, monkeypatch):
    monkeypatch.setattr(submission, "COMPETITION_COUNT", (3, 4))
    path = make_zip(tmp_path / "images.zip", {f"imgs/{i}.jpg": GOOD for i in range(3)})
    with pytest.raises(SubmissionError, match="inside a folder"):
        check_submission_zip(path)


def test_folder_entries_are_rejected(tmp_path):
    path = make_zip(tmp_path / "images.zip", {"ok.jpg": GOOD})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("imgs/", b"")
    with pytest.raises(SubmissionError, match="imgs/: a folder entry"):
        check_submission_zip(path, competition=False)


def test_a_truncated_jpeg_with_an_intact_header_is_rejected(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buffer, "JPEG")
    whole = buffer.getvalue()
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("whole.jpg", whole)
        archive.writestr("cut.jpg", whole[: len(whole) // 2])
    with pytest.raises(SubmissionError, match="cut.jpg: unreadable") as info:
        check_submission_zip(path, competition=False)
    assert "whole.jpg" not in str(info.value)


def test_a_small_real_dataset_is_reported_not_competition_valid(tmp_path):
    report = check_submission_zip(make_zip(tmp_path / "images.zip", {"a.jpg": GOOD}), competition=False)
    assert not report.competition_valid
    assert "not competition-valid: the competition needs 7,000-10,000" in str(report)


def test_a_huge_entry_is_refused_from_its_declared_size_without_being_read(tmp_path):
    """A 1 GiB entry of zeros deflates to about 1 MB: reading it whole would take gigabytes."""
    import tracemalloc
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb.jpg", "w", force_zip64=True) as entry:
            block = bytes(2 ** 24)
            for _ in range(64):
                entry.write(block)
    assert path.stat().st_size < 2 ** 21
    tracemalloc.start()
    try:
        with pytest.raises(SubmissionError, match="bomb.jpg: 1,073,741,824 bytes.*at most"):
            check_submission_zip(path, competition=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 25, f"peak {peak / 2 ** 20:.0f} MB"


def test_an_entry_larger_than_its_header_says_is_read_no_further_than_the_cap(tmp_path, monkeypatch):
    """The declared size is the header's word; the reading is capped on its own. (zipfile stops at
    the declared size itself, so the stream here is one that does not.)"""
    monkeypatch.setattr(submission, "MAX_ENTRY_BYTES", 1000)
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("big.jpg", b"\xff\xd8" * 5)  # declares 10 bytes
    given = []

    class Oversized(io.RawIOBase):  # 100 KB, whatever the header said
        def readable(self):
            return True

        def readinto(self, buffer):
            size = min(len(buffer), 100_000 - sum(given))
            given.append(size)
            buffer[:size] = b"\xff" * size
            return size

    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, entry: io.BufferedReader(Oversized(), buffer_size=256))
    with pytest.raises(SubmissionError, match="big.jpg: more than 1,000 bytes"):
        check_submission_zip(path, competition=False)
    assert sum(given) <= 1001 + 256  # the cap, and at most one buffer beyond it


def test_an_image_header_declaring_a_huge_size_is_refused_before_decoding(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), 128).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # start of frame: height and width follow the precision byte
    data[sof + 5:sof + 9] = (12000).to_bytes(2, "big") * 2  # 432 MB decoded, under PIL's own bomb limit
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("wide.jpg", bytes(data[:data.index(b"\xff\xda")]))  # headers only: decoding would fail
    with pytest.raises(SubmissionError, match="wide.jpg: 12000x12000, expected 256x256"):
        check_submission_zip(path, competition=False)


@pytest.mark.parametrize("competition", [True, False])
def test_an_empty_zip_is_an_error_in_every_mode(tmp_path, competition):
    path = tmp_path / "images.zip"
    zipfile.ZipFile(path, "w").close()
    with pytest.raises(SubmissionError, match="no images"):
        check_submission_zip(path, competition=competition)


# The generator of a notebook that only submits, found among its inputs


def training_output(folder: Path, tiny_config, best: bool = True) -> Path:
    """What a training notebook leaves in /kaggle/working (attached elsewhere as an input)."""
    from monet_utils.training import CycleGANTrainer
    trainer = CycleGANTrainer(tiny_config.replace(output_dir=str(folder)))
    trainer.save()
    if best:
        trainer.save_best({"step": 0, "epoch": 0, "fid": 1.0, "mifid": 1.0, "seconds": 0.0})
    return folder / "checkpoints"


@pytest.mark.parametrize("attached_at", ["monet-training", "notebooks/painter/monet-training"])
def test_the_generator_is_found_wherever_kaggle_mounts_a_notebooks_output(tmp_path, tiny_config, attached_at):
    inputs = tmp_path / "input"
    write_images(inputs / "competitions" / "gan-getting-started" / "photo_jpg", 2)  # the data: no generator there
    checkpoints = training_output(inputs / attached_at, tiny_config)
    assert submission.find_generator("", inputs) == checkpoints / "best.pt"  # a run's best, not its latest too
    (checkpoints / "best.pt").unlink()
    assert submission.find_generator("", inputs) == checkpoints / "latest.pt"


def test_no_generator_or_several_without_a_choice_is_one_line(tmp_path, tiny_config):
    inputs = tmp_path / "input"
    (inputs / "gan-getting-started").mkdir(parents=True)
    with pytest.raises(SubmissionError, match=f"no trained generator among the inputs in {inputs}: Add Input") as none:
        submission.find_generator("", inputs)
    first = training_output(inputs / "run-a", tiny_config)
    second = training_output(inputs / "notebooks" / "painter" / "run-b", tiny_config, best=False)
    with pytest.raises(SubmissionError, match="2 generators in .*: .*run-b.*latest.pt; .*run-a.*best.pt; set generator") \
            as several:
        submission.find_generator("", inputs)
    assert "\n" not in str(none.value) + str(several.value)
    assert submission.find_generator("run-b", inputs) == second / "latest.pt"
    assert submission.find_generator(str(first / "latest.pt"), inputs) == first / "latest.pt"  # a path: as given
    with pytest.raises(SubmissionError, match="generator = 'run-c' is none of the generators"):
        submission.find_generator("run-c", inputs)


def test_an_exported_generator_is_found_and_loaded_with_its_training_size(tmp_path, tiny_config):
    from monet_utils.export import export_generator
    checkpoints = training_output(tmp_path / "run", tiny_config, best=False)
    exported = export_generator(checkpoints / "latest.pt", "torchscript", tmp_path / "input" / "mine" / "monet.pt")
    assert submission.find_generator("", tmp_path / "input") == exported
    generator, size = submission.load_submission_generator(exported, "cpu")
    assert size == tiny_config.image_size and generator(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_a_damaged_file_or_another_architecture_is_one_line(tmp_path, tiny_config):
    from monet_utils.checkpoints import CheckpointError
    checkpoints = training_output(tmp_path / "run", tiny_config)
    damaged = checkpoints / "best.pt"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    with pytest.raises(CheckpointError) as info:
        submission.load_submission_generator(damaged, "cpu")
    assert str(damaged) in str(info.value) and "\n" not in str(info.value)
    other = torch.load(checkpoints / "latest.pt", weights_only=True)
    other["config"]["ngf"] = 8  # weights of ngf=4 under a config that says 8
    torch.save(other, checkpoints / "latest.pt")
    with pytest.raises(CheckpointError, match="do not fit the architecture") as info:
        submission.load_submission_generator(checkpoints / "latest.pt", "cpu")
    assert "\n" not in str(info.value)
