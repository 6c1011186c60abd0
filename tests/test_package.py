"""The package's public names: each resolves to what it names, and `import minigpt_geom` does not load torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import inspect, sys
import minigpt_geom
assert "torch" not in sys.modules, "import minigpt_geom loaded torch"
import minigpt_geom.text.generation, minigpt_geom.commands.generate  # submodules bound on the package
from minigpt_geom import generate
assert inspect.isfunction(generate) and minigpt_geom.generate is generate is minigpt_geom.text.generation.generate
for name in minigpt_geom.__all__:
    value = getattr(minigpt_geom, name)
    assert not inspect.ismodule(value), name
assert set(minigpt_geom.__all__) <= set(dir(minigpt_geom))
print("ok")
"""


@pytest.mark.subprocess
def test_public_names_are_what_they_name_and_the_import_is_torch_free():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
