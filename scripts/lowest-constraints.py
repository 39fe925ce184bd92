"""Print pip constraints that pin each runtime dependency of pyproject.toml to its floor.

``make test-lowest`` installs with them: pip then has to take the lowest release each
``>=`` allows (the guards' dependencies and the ``service`` extra), and resolves
everything else as usual. A runtime dependency without a floor is an error: its
lowest release would be whatever is oldest on PyPI.

Usage: python scripts/lowest-constraints.py [pyproject.toml]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)")
_FLOOR = re.compile(r">=\s*([^,\s]+)")


def floors(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["service"]]
    pins = []
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement)
        floor = _FLOOR.search(match.group(3)) if match else None
        if match is None or floor is None:
            raise SystemExit(f"{pyproject}: {requirement!r} has no floor (>=); give it one")
        pins.append(f"{match.group(1)}=={floor.group(1)}")
    return pins


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("pyproject.toml")
    print("\n".join(floors(path)))
