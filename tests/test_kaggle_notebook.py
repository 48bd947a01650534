import json

import nbformat
import papermill
import pytest
import torch

from monet_utils.demo_data import make_demo_dataset
from monet_utils.kaggle_notebook import (BUILT, KAGGLE_DEFAULTS, KAGGLE_NOTEBOOK, SUBMIT_NOTEBOOK, build_kaggle_notebook,
                                         package_sources)
from monet_utils.submission import check_submission_zip

from .test_submission import training_output
from monet_utils.runner import NOTEBOOK


@pytest.mark.parametrize("path", list(BUILT), ids=[p.name for p in BUILT])
def test_committed_kaggle_notebooks_are_up_to_date(path):
    committed = nbformat.read(path, as_version=4)
    built = BUILT[path]()
    assert [c.source for c in committed.cells] == [c.source for c in built.cells], (
        f"{path.name} is stale: run `python -m monet_utils.kaggle_notebook`")


def test_every_package_module_needed_on_kaggle_is_inlined():
    sources = package_sources()
    assert {"config.py", "data.py", "models.py", "training.py", "submission.py", "stylize.py", "fid.py"} <= set(sources)
    assert "runner.py" not in sources  # repository-side tools stay out
    parameters = next(c for c in build_kaggle_notebook().cells if "parameters" in c.metadata.get("tags", []))
    assert 'output_dir = "/kaggle/working"' in parameters.source


def parameter_values(notebook) -> dict:
    cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    values = {}
    exec(cell.source, {}, values)
    return values


def test_the_kaggle_defaults_replace_the_seeds_and_nothing_else():
    primary, kaggle = parameter_values(nbformat.read(NOTEBOOK, as_version=4)), parameter_values(build_kaggle_notebook())
    assert set(kaggle) == set(primary) | {"drive_folder"}  # Colab's, read by the built notebook's Colab cell
    del kaggle["drive_folder"]
    changed = {name for name in primary if primary[name] != kaggle[name]}
    assert changed == set(KAGGLE_DEFAULTS)
    assert kaggle["time_budget_hours"] > 0 and kaggle["output_dir"] == "/kaggle/working"


def test_built_notebook_runs_offline_with_its_own_copy_of_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel writes the inlined package here
    demo = make_demo_dataset(tmp_path / "demo", n_photos=6, n_paintings=3, progress=False)
    work = tmp_path / "working"
    work.mkdir()
    executed = work / "executed.ipynb"
    papermill.execute_notebook(
        str(KAGGLE_NOTEBOOK), str(executed), cwd=str(work), progress_bar=False, kernel_name="python3",
        parameters=dict(data_dir=str(demo), output_dir=str(work), image_size=32, ngf=4, ndf=4, n_res_blocks=1,
                        batch_size=2, max_steps=2, num_workers=0, n_samples=2, estimate_mifid=False))
    text = "".join(str(o) for c in nbformat.read(executed, as_version=4).cells for o in c.get("outputs", []))
    assert f"monet_utils loaded from {tmp_path}/monet_utils_inline/monet_utils/__init__.py" in text
    assert f"PyTorch {torch.__version__}." in text  # the kernel runs this environment's PyTorch
    assert (work / "images.zip").exists() and (work / "checkpoints" / "latest.pt").exists()


def run_submit_notebook(tmp_path, **parameters):
    work = tmp_path / "working"
    work.mkdir(exist_ok=True)
    papermill.execute_notebook(str(SUBMIT_NOTEBOOK), str(tmp_path / "executed.ipynb"), cwd=str(work),
                               progress_bar=False, kernel_name="python3",
                               parameters={"output_dir": str(work), "batch_size": 4, **parameters})
    return work


@pytest.mark.parametrize("data_at, run_at", [("gan-getting-started", "monet-training"),
                                             ("competitions/gan-getting-started", "notebooks/painter/monet-training")])
def test_the_submit_notebook_finds_the_generator_and_the_photos_and_writes_a_checked_zip(
        tmp_path, tiny_config, monkeypatch, data_at, run_at):
    """Offline, with only the inlined package: as Kaggle runs it, in either layout of /kaggle/input."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    inputs = tmp_path / "input"
    make_demo_dataset(inputs / data_at, n_photos=5, n_paintings=2, progress=False)
    training_output(inputs / run_at, tiny_config)
    work = run_submit_notebook(tmp_path, search_under=str(inputs))
    assert check_submission_zip(work / "images.zip", competition=False).n_images == 5
    text = json.dumps(nbformat.read(tmp_path / "executed.ipynb", as_version=4).cells)
    assert f"Submitting {inputs / run_at / 'checkpoints' / 'best.pt'} (trained at 32x32): 5 photos" in text


def test_the_submit_notebook_without_a_generator_stops_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    inputs = tmp_path / "input"
    make_demo_dataset(inputs / "gan-getting-started", n_photos=5, n_paintings=2, progress=False)
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        run_submit_notebook(tmp_path, search_under=str(inputs))
    assert failure.value.ename == "SubmissionError" and "no trained generator among the inputs" in failure.value.evalue
    assert list((tmp_path / "working").iterdir()) == []
