"""Load a script of test/ as a module. test/ is a folder of scripts, not a package; its scripts make
their siblings importable themselves, so loading one by path is all it takes."""
import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(stem: str, name: str | None = None) -> ModuleType:
    """test/<stem>.py imported under ``name`` (default ``cocon_test_<stem>``)."""
    spec = importlib.util.spec_from_file_location(name or f"cocon_test_{stem}", REPO / "test" / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_test_cli(name: str) -> ModuleType:
    """test/test.py, the dispatcher of every evaluation protocol, imported under ``name``."""
    return load_script("test", name)
