"""The package's import layers (an import-linter 'layers' contract, as a test): a module imports
only from layers below its own, counting imports inside functions, so no circle can form and the
maths (cyclegan, cut) never reaches up into the loop, the launch or the notebook runner."""
import ast
from pathlib import Path

import monet_utils

PACKAGE = Path(monet_utils.__file__).parent
LAYERS = [  # top first
    {"__main__"},
    {"sweep", "kaggle_notebook"},
    {"runner"},
    {"launch", "submission"},
    {"evaluation"},
    {"training", "stylize"},
    {"tensorboard_log"},
    {"cyclegan", "cut", "export"},
    {"gan_model"},
    {"checkpoints", "demo_data", "plots", "fid"},
    {"acceleration", "distributed", "data"},
    {"config"},
    {"files", "diffaugment", "progress", "time_budget", "image_pool", "losses", "models", "torchrun", "colab",
     "kaggle_inputs"},
]


def package_imports(path: Path) -> set[str]:
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                imported.add(node.module.split(".")[0])
            elif node.level == 0 and (node.module or "").startswith("monet_utils."):
                imported.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            imported |= {a.name.split(".")[1] for a in node.names if a.name.startswith("monet_utils.")}
    return imported


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    placed = set().union(*LAYERS)
    assert modules - placed == set(), "place the new module in LAYERS"
    assert placed - modules == set()


def test_imports_only_go_down():
    layer_of = {module: depth for depth, layer in enumerate(LAYERS) for module in layer}
    upward = []
    for module, depth in layer_of.items():
        for target in package_imports(PACKAGE / f"{module}.py"):
            if layer_of[target] <= depth:
                upward.append(f"{module} (layer {depth}) imports {target} (layer {layer_of[target]})")
    assert not upward, "\n".join(upward)


def test_the_contract_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def late():\n    from .training import CycleGANTrainer\n")
    assert package_imports(module) == {"training"}
