"""The photo -> Monet generator alone, in formats other tools load: ONNX, TorchScript, safetensors.

    python -m monet_utils export --checkpoint outputs/checkpoints/latest.pt --format onnx --output monet.onnx

Each file holds the generator's weights only (no optimizer, no discriminators, no pickled
Python), with its config written beside it as `<output>.json`. ONNX and TorchScript take any
height and width (multiples of 4) and any batch size. `stylize` reads every one of them, as well
as training checkpoints.
"""
from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from .acceleration import resolve_device
from .checkpoints import CheckpointError, checkpoint_config, existing_file, load_generator, load_network
from .config import CycleGANConfig, write_json
from .files import write_atomically
from .models import build_generator

EXAMPLE_SIZE = 64  # the traced example's height and width; the exported graph takes any


def export_generator(checkpoint, fmt: str, output, direction: str = "photo2monet") -> Path:
    """Write the `direction` generator of a training checkpoint as `fmt`, and its config beside it.
    The file is made in memory and written whole (`files.write_atomically`): a full disk gives
    one error naming it, and never replaces what was there."""
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {sorted(FORMATS)}, got {fmt!r}")
    output = Path(output)
    for written in (output, config_path(output)):
        # By path: another name of the checkpoint's file (a hard link) is safe, since the write
        # renames a new file into place and never writes through the shared one.
        if written.resolve() == Path(checkpoint).resolve():
            raise CheckpointError(f"export: output {written} is the checkpoint it is exported from; writing it "
                                  "would replace the training checkpoint. Choose another --output")
    generator, config = load_generator(checkpoint, direction, device="cpu")
    data = FORMATS[fmt](generator, config)
    write_atomically(output, lambda tmp: tmp.write_bytes(data), f"{fmt} generator")
    write_json(config_path(output), {"format": fmt, "direction": direction, "config": config.to_dict()})
    return output


def config_path(exported: Path) -> Path:
    return exported.with_name(exported.name + ".json")


def _onnx_bytes(generator: nn.Module, config: CycleGANConfig) -> bytes:
    example = torch.zeros(1, 3, EXAMPLE_SIZE, EXAMPLE_SIZE)
    dynamic = torch.export.Dim.DYNAMIC
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter about opset choices
        program = torch.onnx.export(generator, (example,), dynamo=True, verbose=False,
                                    input_names=["photo"], output_names=["monet"],
                                    dynamic_shapes={"x": {0: dynamic, 2: dynamic, 3: dynamic}})
    return program.model_proto.SerializeToString()


def _torchscript_bytes(generator: nn.Module, config: CycleGANConfig) -> bytes:
    buffer = io.BytesIO()  # torch.jit.save to a full disk aborts the process; to memory it cannot fail so
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, TorchScript files are not
        torch.jit.save(torch.jit.script(generator), buffer)
    return buffer.getvalue()


def _safetensors_bytes(generator: nn.Module, config: CycleGANConfig) -> bytes:
    from safetensors.torch import save
    weights = {name: tensor.contiguous() for name, tensor in generator.state_dict().items()}
    return save(weights, metadata={"monet_utils_config": json.dumps(config.to_dict())})


FORMATS = {"onnx": _onnx_bytes, "torchscript": _torchscript_bytes, "safetensors": _safetensors_bytes}


class OnnxGenerator(nn.Module):
    """An ONNX generator run by onnxruntime on the CPU, called like the PyTorch one."""

    def __init__(self, path: str | os.PathLike):
        super().__init__()
        import onnxruntime
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.session.run(None, {self.input_name: images.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(output)


def load_photo2monet(path, device: str = "auto") -> nn.Module:
    """A photo -> Monet generator in eval mode from a training checkpoint or any exported file."""
    path = existing_file(path, "generator file")
    try:
        if path.suffix == ".onnx":
            return OnnxGenerator(path).eval()
        if path.suffix == ".safetensors":
            return _load_safetensors(path).to(resolve_device(device)).eval()
        if _is_torchscript(path):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, TorchScript files are not
                return torch.jit.load(str(path), map_location=resolve_device(device)).eval()
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - onnxruntime, safetensors and torch.jit raise types of their own
        raise CheckpointError(f"{path} could not be read as a generator: {str(err).splitlines()[0]}") from None
    return load_generator(path, "photo2monet", device)[0]


def _load_safetensors(path: Path) -> nn.Module:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as file:
        metadata = file.metadata() or {}
        weights = {name: file.get_tensor(name) for name in file.keys()}
    if "monet_utils_config" not in metadata:
        raise CheckpointError(f"{path}: no monet_utils config in its metadata; was it written by `monet_utils export`?")
    config = checkpoint_config({"config": json.loads(metadata["monet_utils_config"])}, path)
    generator = build_generator(config)
    load_network(generator, weights, "generator", path)
    return generator


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold the model's code; torch.save archives (checkpoints) do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())
