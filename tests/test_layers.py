"""Imports point one way along the pipeline: a module may import its own package and the layers
below it, never a layer above (function-local imports included, so no edge hides in a function)."""

import ast
from pathlib import Path

import vlaforge

LAYERS = [  # lowest first; packages on one line are siblings and may not import each other
    ["files", "seeds", "pool"],  # pool: the process pool and the Ray backend, which config's verbs map through
    ["registry", "config", "webpage"],
    ["envs"],
    ["data"],
    ["models"],
    ["runtime"],  # the policy at run time and the policy-directory format, deployed runtimes included
    ["train"],
    ["eval"],
    ["deploy", "safety"],
    ["quickstart"],
    ["cli"],
    ["__main__", "__init__"],
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}
SRC = Path(vlaforge.__file__).parent


def unit(module: str) -> str:
    """vlaforge.data.dataset -> data; vlaforge -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "vlaforge" else [f"vlaforge.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(node.lineno, n) for n in names if n == "vlaforge" or n.startswith("vlaforge.")]
    return out


def test_every_package_has_a_layer():
    found = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert found - set(RANK) == set(), "add the new package to LAYERS"


def test_no_import_points_up_or_sideways():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        me = unit(".".join(rel.parts))
        for line, target in imports(path):
            other = unit(target)
            if other != me and RANK[other] >= RANK[me]:
                bad.append(f"{path.relative_to(SRC)}:{line} ({me}) imports {target} ({other})")
    assert bad == []


def test_the_check_catches_an_upward_import(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from vlaforge.deploy.onnx import export_onnx\n")
    line, target = imports(planted)[0]
    assert (line, target) == (2, "vlaforge.deploy.onnx") and RANK[unit(target)] > RANK["models"]
