"""The repository's scripts (benchmarks/, scripts/) loaded as modules, for tests of their pure parts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).parent.parent


def load_script(relative: str) -> ModuleType:
    """The script at ``relative`` (to the repository root) as a module named by its file, registered in
    ``sys.modules``: a dataclass looks its module up there while the class is created."""
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
