"""The built notebook on Colab, with stand-ins for `google.colab` and `kagglehub` that behave as
the real ones do for this notebook: secrets that may be missing, a Drive that a disconnect
unmounts but keeps, and a download that needs credentials and may be refused."""
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import nbformat
import papermill
import pytest

from monet_utils import colab
from monet_utils.demo_data import make_demo_dataset
from monet_utils.kaggle_notebook import KAGGLE_NOTEBOOK

STANDINS = {
    # A namespace package, as google/ is on Colab: google.protobuf (tensorboard's) must still import.
    "google/colab/__init__.py": "",
    # colabtools' own classes and messages (google/colab/errors.py, userdata.py): NotebookAccessError is a
    # plain Exception, SecretNotFoundError a colab Error.
    "google/colab/errors.py": "class Error(Exception):\n    pass\n",
    "google/colab/userdata.py": """
        import json, os
        from google.colab import errors

        class NotebookAccessError(Exception):
            def __init__(self, key):
                super().__init__(f'Notebook does not have access to secret {key}')

        class SecretNotFoundError(errors.Error):
            def __init__(self, key):
                super().__init__(f'Secret {key} does not exist.')

        def get(key):  # a secret whose value is null here is one whose notebook access is off
            secrets = json.loads(open(os.environ["STANDIN_SECRETS"]).read())
            if key not in secrets:
                raise SecretNotFoundError(key)
            if secrets[key] is None:
                raise NotebookAccessError(key)
            return secrets[key]
        """,
    "google/colab/drive.py": """
        import os

        def mount(mountpoint):  # Drive's files live on in STANDIN_DRIVE; the mount shows them
            with open(os.environ["STANDIN_LOG"], "a") as log:
                log.write(f"mount {mountpoint}\\n")
            os.makedirs(mountpoint, exist_ok=True)
            os.symlink(os.environ["STANDIN_DRIVE"], os.path.join(mountpoint, "MyDrive"))
        """,
    "kagglehub/__init__.py": """
        import os

        def competition_download(handle):  # credentials as kagglehub's config.py reads them
            if os.environ.get("KAGGLE_API_TOKEN"):
                who = "with a token"
            elif os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
                who = f"as {os.environ['KAGGLE_USERNAME']}"
            else:
                raise RuntimeError("no credentials")  # the real one sends an anonymous request: 401
            with open(os.environ["STANDIN_LOG"], "a") as log:
                log.write(f"download {handle} {who}\\n")
            return os.environ["STANDIN_DATA"]
        """,
}
TINY = dict(image_size=32, ngf=4, ndf=4, n_res_blocks=1, batch_size=2, num_workers=0, n_samples=2,
            estimate_mifid=False, tensorboard_every=1, epochs=2)


@pytest.fixture
def colab_runtime(tmp_path, monkeypatch):
    """Stand-in modules on the kernel's path, no credentials but the secrets file, a Drive."""
    standins = tmp_path / "standins"
    for name, source in STANDINS.items():
        (standins / name).parent.mkdir(parents=True, exist_ok=True)
        (standins / name).write_text(textwrap.dedent(source))
    monkeypatch.setenv("PYTHONPATH", str(standins))
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kaggle/kaggle.json
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the inlined package goes here
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "drive-storage").mkdir()
    paths = dict(secrets=tmp_path / "secrets.json", log=tmp_path / "standin.log", drive=tmp_path / "drive-storage",
                 data=make_demo_dataset(tmp_path / "download", n_photos=6, n_paintings=3, progress=False),
                 mount=tmp_path / "content" / "drive")
    for name in ("secrets", "log", "drive", "data"):
        monkeypatch.setenv(f"STANDIN_{name.upper()}", str(paths[name]))
    paths["log"].write_text("")
    return paths


def run_on_colab(runtime, tmp_path, **parameters):
    drive_folder = runtime["mount"] / "MyDrive" / "monet"
    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(str(KAGGLE_NOTEBOOK), str(executed), cwd=str(tmp_path), progress_bar=False,
                               kernel_name="python3",
                               parameters={**TINY, "drive_folder": str(drive_folder), **parameters})
    return "".join(str(o) for c in nbformat.read(executed, as_version=4).cells for o in c.get("outputs", []))


def test_colab_gets_the_data_through_kagglehub_writes_to_drive_and_resumes_there(colab_runtime, tmp_path):
    colab_runtime["secrets"].write_text(json.dumps({"KAGGLE_API_TOKEN": "KGAT_0123"}))  # kaggle.com's token today
    text = run_on_colab(colab_runtime, tmp_path, max_steps=2)
    assert colab_runtime["log"].read_text().splitlines() == [
        f"mount {colab_runtime['mount']}", "download gan-getting-started with a token"]
    on_drive = colab_runtime["drive"] / "monet"  # what outlives the runtime
    assert (on_drive / "images.zip").exists()
    assert torch_load_step(on_drive / "checkpoints" / "latest.pt") == 2
    assert "6 photos and 3 paintings in " + str(colab_runtime["data"]) in text
    assert "survive a disconnect" in text

    (colab_runtime["mount"] / "MyDrive").unlink()  # a disconnect: a new runtime, Drive not mounted
    text = run_on_colab(colab_runtime, tmp_path, max_steps=4)  # the same notebook, a longer schedule
    assert "Resuming from " + str(colab_runtime["mount"] / "MyDrive" / "monet" / "checkpoints" / "latest.pt") in text
    assert torch_load_step(on_drive / "checkpoints" / "latest.pt") == 4
    assert len(list((on_drive / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per session
    assert not Path("/kaggle/working").exists()


def test_without_credentials_colab_stops_before_any_set_up(colab_runtime, tmp_path):
    colab_runtime["secrets"].write_text("{}")
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        run_on_colab(colab_runtime, tmp_path, max_steps=2)
    assert failure.value.ename == "ColabSetupError"
    assert "KAGGLE_API_TOKEN" in failure.value.evalue and "data_dir" in failure.value.evalue
    assert failure.value.source.startswith("# On Colab")  # the cell after the parameters: nothing is set up yet
    assert colab_runtime["log"].read_text() == ""
    assert not colab_runtime["mount"].exists() and not any(colab_runtime["drive"].iterdir())


def torch_load_step(path: Path) -> int:
    import torch
    return torch.load(path, weights_only=True)["step"]


class Refusal(Exception):
    def __init__(self, status):
        super().__init__(f"{status} Client Error")
        self.response = types.SimpleNamespace(status_code=status)


@pytest.mark.parametrize("status, expected", [(403, f"{colab.COMPETITION_URL}/rules"), (401, "KAGGLE_KEY")])
def test_a_refused_download_says_what_to_do(monkeypatch, status, expected):
    def refuse(handle):
        raise Refusal(status)
    monkeypatch.setitem(sys.modules, "kagglehub", types.SimpleNamespace(competition_download=refuse))
    with pytest.raises(colab.ColabSetupError, match=expected):
        colab.download_competition_data()


@pytest.fixture
def colab_secrets_here(colab_runtime, monkeypatch):
    """The stand-in google.colab importable in this process; os.environ a copy, which the code fills."""
    monkeypatch.syspath_prepend(str(colab_runtime["secrets"].parent / "standins"))
    for name in [m for m in sys.modules if m.startswith("google.colab")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(os, "environ", dict(os.environ))
    return colab_runtime["secrets"]


@pytest.mark.parametrize("secrets, found, environment", [
    ({"KAGGLE_API_TOKEN": "KGAT_0123"}, "Colab secret KAGGLE_API_TOKEN", {"KAGGLE_API_TOKEN": "KGAT_0123"}),
    ({"KAGGLE_USERNAME": "painter", "KAGGLE_KEY": "k3y"}, "Colab secrets KAGGLE_USERNAME and KAGGLE_KEY",
     {"KAGGLE_USERNAME": "painter", "KAGGLE_KEY": "k3y"}),
    ({"KAGGLE_API_TOKEN": " KGAT_0123\n", "KAGGLE_USERNAME": "painter"}, "Colab secret KAGGLE_API_TOKEN",
     {"KAGGLE_API_TOKEN": "KGAT_0123"}),
    ({"KAGGLE_USERNAME": "painter"}, None, {}),
], ids=["token", "legacy-pair", "token-first", "half-a-pair"])
def test_colab_secrets_today_s_token_first_then_the_legacy_pair(colab_secrets_here, secrets, found, environment):
    """kaggle.com gives one API token now; a user with only that was told there were no credentials."""
    colab_secrets_here.write_text(json.dumps(secrets))
    assert colab.find_kaggle_credentials() == found
    assert {name: os.environ[name] for name in environment} == environment


def test_a_secret_the_notebook_may_not_read_says_how_to_switch_access_on(colab_secrets_here):
    """colabtools' NotebookAccessError is no colab Error: it came out as a raw traceback."""
    colab_secrets_here.write_text(json.dumps({"KAGGLE_API_TOKEN": None}))
    with pytest.raises(colab.ColabSetupError, match="Notebook does not have access to secret KAGGLE_API_TOKEN.*"
                                                    "switch on \"Notebook access\" for it"):
        colab.find_kaggle_credentials()


def test_credentials_from_the_environment_or_kaggle_json(tmp_path, monkeypatch):
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    monkeypatch.setattr(colab, "colab_secrets", lambda *names: {})
    assert colab.find_kaggle_credentials() is None
    (tmp_path / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    assert colab.find_kaggle_credentials() == str(tmp_path / "kaggle.json")
    (tmp_path / "kaggle.json").unlink()
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    assert colab.find_kaggle_credentials() is None  # a username alone is not enough
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert colab.find_kaggle_credentials() == "environment variables"
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("KAGGLE_API_TOKEN", "KGAT_0123")  # today's token, alone
    assert colab.find_kaggle_credentials() == "environment variables"
    monkeypatch.delenv("KAGGLE_API_TOKEN")
    (tmp_path / "access_token").write_text("KGAT_0123")  # where the kaggle CLI keeps it
    assert colab.find_kaggle_credentials() == str(tmp_path / "access_token")


def test_outputs_fall_back_to_local_with_a_warning_when_drive_cannot_be_mounted(tmp_path, capsys):
    local = tmp_path / "content" / "outputs"
    assert colab.place_outputs(str(tmp_path / "drive" / "MyDrive" / "monet"), local) == local  # no google.colab here
    assert "Warning: Google Drive was not mounted" in capsys.readouterr().out and local.is_dir()
    assert colab.place_outputs("", local) == local
    assert "Warning: drive_folder is empty" in capsys.readouterr().out


@pytest.mark.parametrize("folder", ["monet-out", "content/monet-out"], ids=["relative", "absolute"])
def test_a_folder_off_drive_is_used_and_said_to_be_lost_on_a_disconnect(tmp_path, monkeypatch, capsys, folder):
    """It said "they survive a disconnect" of folders under /content, which a disconnect wipes."""
    monkeypatch.chdir(tmp_path)  # Colab's working directory, /content
    folder = folder if folder == "monet-out" else str(tmp_path / folder)
    placed = colab.place_outputs(folder, tmp_path / "content" / "outputs")
    assert placed == (tmp_path / Path(folder)).resolve() and placed.is_dir()
    out = capsys.readouterr().out
    assert "survive" not in out and f"Warning: outputs go to {placed}, which is not on Google Drive" in out
    assert "a disconnect loses them" in out


def test_missing_packages_are_installed_with_torch_held_at_its_version(monkeypatch):
    calls = []

    def pip(command, check):
        calls.append((command, Path(command[-1]).read_text()))
    monkeypatch.setattr(subprocess, "run", pip)
    colab.install_missing({"json": "json", "surely_not_a_module_here": "some-package"})
    (command, constraints), = calls
    assert command[:5] == [sys.executable, "-m", "pip", "install", "-q"] and command[5] == "some-package"
    assert f"torch=={importlib.metadata.version('torch')}" in constraints.splitlines()
    calls.clear()
    colab.install_missing({"json": "json"})
    assert calls == []
