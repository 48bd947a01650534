"""Google Colab: the competition data through kagglehub with the user's Kaggle credentials, the
outputs on Google Drive (a disconnect wipes /content, not Drive), and the few packages the
notebook needs that Colab's image may lack, installed against its own PyTorch.
Only the standard library here: this runs before anything else is known to be installed.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

COMPETITION = "gan-getting-started"
COMPETITION_URL = f"https://www.kaggle.com/competitions/{COMPETITION}"
LOCAL_OUTPUTS = Path("/content/outputs")
# Imported by the notebook's cells; Colab ships torch, torchvision, numpy, PIL, matplotlib and tqdm.
NEEDED = {"albumentations": "albumentations", "torchmetrics": "torchmetrics", "kagglehub": "kagglehub",
          "tensorboard": "tensorboard"}

NO_CREDENTIALS = f"""Colab: no Kaggle credentials were found, so the competition data cannot be downloaded.
  1. On kaggle.com: your profile > Settings > API: generate an API token (it starts with KGAT_).
  2. In Colab: the key icon (Secrets) in the left bar; add a secret named KAGGLE_API_TOKEN holding
     the token, and switch on "Notebook access" for it. (The legacy pair, KAGGLE_USERNAME and
     KAGGLE_KEY from a kaggle.json, works too.)
  3. Run all again.
Or, without credentials: download the data from {COMPETITION_URL}/data, upload the zip, unzip it
(`!unzip -q gan-getting-started.zip -d /content/gan-getting-started`) and set
data_dir = "/content/gan-getting-started" in the parameters cell."""
# As kagglehub reads them: the token first, then the legacy username and key.
TOKEN_SECRET, LEGACY_SECRETS = "KAGGLE_API_TOKEN", ("KAGGLE_USERNAME", "KAGGLE_KEY")


class ColabSetupError(RuntimeError):
    """Colab cannot get the data: the message says what the user has to do."""


def on_colab() -> bool:
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ModuleNotFoundError:  # no `google` package at all
        return False


def prepare_colab(data_dir: str, drive_folder: str) -> tuple[str, str]:
    """(data_dir, output_dir) for a Colab run. Missing credentials stop it first, before the
    Drive prompt, an install or a download; a `data_dir` given (an uploaded copy) needs none."""
    if not data_dir and not find_kaggle_credentials():
        raise ColabSetupError(NO_CREDENTIALS)
    install_missing(NEEDED)
    output_dir = place_outputs(drive_folder)
    if not data_dir:
        data_dir = str(download_competition_data())
    return data_dir, str(output_dir)


def find_kaggle_credentials() -> str | None:
    """Where kagglehub will find the user's credentials, or None. Colab secrets are copied into
    the environment variables that kagglehub reads (KAGGLE_API_TOKEN, or the legacy pair)."""
    if os.environ.get(TOKEN_SECRET) or all(os.environ.get(name) for name in LEGACY_SECRETS):
        return "environment variables"
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    for name in ("access_token", "kaggle.json"):
        if (folder / name).is_file():
            return str(folder / name)
    for names in ((TOKEN_SECRET,), LEGACY_SECRETS):
        secrets = colab_secrets(*names)
        if secrets:
            os.environ.update(secrets)
            return f"Colab secret{'s' if len(names) > 1 else ''} {' and '.join(names)}"
    return None


def colab_secrets(*names: str) -> dict[str, str]:
    """The named Colab secrets, or {} when one is missing or empty. A secret the notebook may
    not read is the user's to switch on: a ColabSetupError that says how."""
    try:
        from google.colab import errors, userdata
    except ImportError:
        return {}
    try:
        values = {name: userdata.get(name).strip() for name in names}
    except userdata.NotebookAccessError as err:  # an Exception of its own, not an errors.Error
        raise ColabSetupError(f"Colab: {err}. Open the key icon (Secrets) in the left bar, switch on "
                              f"\"Notebook access\" for it, then run all again.") from None
    except errors.Error:  # SecretNotFoundError, TimeoutException
        return {}
    return values if all(values.values()) else {}


def install_missing(needed: dict[str, str]) -> None:
    """pip-install the modules of `needed` (module -> package) that are not there, holding torch
    and torchvision at the versions installed, so Colab's PyTorch is never replaced."""
    missing = [package for module, package in needed.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in ("torch", "torchvision")
            if importlib.util.find_spec(name)]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        constraints.write("\n".join(pins) + "\n")
    print(f"Installing {', '.join(missing)} (with {', '.join(pins) or 'no torch'} kept as installed)")
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing, "-c", constraints.name], check=True)
    finally:
        os.unlink(constraints.name)
    importlib.invalidate_caches()


def place_outputs(drive_folder: str, local: Path = LOCAL_OUTPUTS) -> Path:
    """`drive_folder` when Google Drive can hold it (mounted here if need be: Colab asks the user
    to allow it), else `local`, with a warning that a disconnect loses it. A folder that is not on
    Drive (relative ones are under /content) is used, with the same warning."""
    if not drive_folder:
        return local_outputs(local, "drive_folder is empty")
    folder = Path(os.path.abspath(drive_folder))  # not resolve(): a mounted Drive may be a link
    drive_root = next((p for p in folder.parents if p.name == "MyDrive"), None)  # Colab: <mount>/MyDrive/...
    if drive_root is None:
        folder.mkdir(parents=True, exist_ok=True)
        print(f"Warning: outputs go to {folder}, which is not on Google Drive: a disconnect loses them "
              f"(a drive_folder under /content/drive/MyDrive keeps them)")
        return folder
    if not drive_root.is_dir():
        try:
            from google.colab import drive
            drive.mount(str(drive_root.parent))
        except Exception as err:  # refused, timed out, or no Colab: any of them means local outputs
            return local_outputs(local, f"Google Drive was not mounted ({type(err).__name__}: {err})")
        if not drive_root.is_dir():
            return local_outputs(local, f"{drive_root} is not there after mounting Google Drive")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"Outputs go to {folder}: they survive a disconnect, and running again resumes from its checkpoint")
    return folder


def local_outputs(local: Path, problem: str) -> Path:
    local.mkdir(parents=True, exist_ok=True)
    print(f"Warning: {problem}; outputs go to {local}, which a disconnect loses")
    return local


def download_competition_data() -> Path:
    """The competition's folder (photo_jpg/, monet_jpg/, ...), downloaded by kagglehub once per runtime."""
    import kagglehub

    print(f"Downloading {COMPETITION} with kagglehub (a few hundred MB, once per runtime)")
    try:
        return Path(kagglehub.competition_download(COMPETITION))
    except Exception as err:  # kagglehub's HTTP errors carry the response: 401 and 403 are the user's to fix
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 403:
            raise ColabSetupError(
                f"Kaggle refused the download (403): the account of these credentials has not joined the "
                f"competition. Open {COMPETITION_URL}/rules, click 'Join Competition' / 'I Understand and "
                f"Accept', then run all again.") from None
        if status == 401:
            raise ColabSetupError(
                "Kaggle refused the credentials (401): check the KAGGLE_API_TOKEN secret (or KAGGLE_USERNAME and "
                "KAGGLE_KEY) against a token made at kaggle.com > Settings > API, then run all again.") from None
        raise
