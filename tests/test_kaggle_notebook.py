import nbformat
import papermill
import torch

from monet_utils.demo_data import make_demo_dataset
from monet_utils.kaggle_notebook import KAGGLE_DEFAULTS, KAGGLE_NOTEBOOK, build_kaggle_notebook, package_sources
from monet_utils.runner import NOTEBOOK


def test_committed_kaggle_notebook_is_up_to_date():
    committed = nbformat.read(KAGGLE_NOTEBOOK, as_version=4)
    built = build_kaggle_notebook()
    assert [c.source for c in committed.cells] == [c.source for c in built.cells], (
        "notebooks/kaggle/monet_cyclegan_kaggle.ipynb is stale: run `python -m monet_utils.kaggle_notebook`")


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
