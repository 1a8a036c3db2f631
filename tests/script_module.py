"""Load test/test.py as a module (it imports its sibling model_lc.py as a top-level module)."""
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_test_cli(name: str):
    """test/test.py imported under ``name``, with test/ on sys.path only while it loads."""
    sys.path.insert(0, str(REPO / "test"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "test" / "test.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / "test"))
    return module
