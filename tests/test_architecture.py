"""Import rules of the architecture (shared/DESIGN.md), checked on the source tree."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mlscale"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_models_never_import_torch_distributed():
    for path in (SRC / "training" / "models").rglob("*.py"):
        assert not any(n.startswith("torch.distributed") for n in _imports(path)), path


def test_only_cli_and_world_read_the_environment():
    allowed = {SRC / "training" / "distributed" / "world.py"}
    for path in SRC.rglob("*.py"):
        if "cli" in path.parts or path in allowed:
            continue
        assert "os.environ" not in path.read_text(), path


def test_only_world_creates_a_process_group():
    for path in SRC.rglob("*.py"):
        if path != SRC / "training" / "distributed" / "world.py":
            text = path.read_text()
            assert "init_process_group(" not in text.replace("dw.init_process_group(", ""), path
            assert "destroy_process_group" not in text, path


def test_import_mlscale_is_light():
    code = "import sys, mlscale; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
