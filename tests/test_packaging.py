"""The installed project holds every package of the checkout: the container
images install it with pip, not as an editable checkout."""

from __future__ import annotations

import tomllib

from core.settings import ROOT

TOP_LEVEL = ("core", "frontend", "serving", "trainer", "worker")


def test_every_python_package_is_installed_by_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for top in TOP_LEVEL for init in (ROOT / top).rglob("__init__.py")
             if "migrations" not in init.parts}
    assert found == listed
