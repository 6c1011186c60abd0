"""The manifest of what this package wrote in a folder (io/owned.py) is read as hostile input."""

from __future__ import annotations

import pytest

from minigpt_geom.errors import OutputError
from minigpt_geom.io.owned import MANIFEST, owned


@pytest.mark.parametrize("text", ['{"entries": ' + "[" * 100_000 + "]" * 100_000 + "}",  # deeper than the parser
                                  '{"entries": [1]}', "not json"],
                         ids=["nested too deeply", "not names", "malformed"])
def test_a_damaged_manifest_is_one_output_error_naming_it(tmp_path, text):
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(OutputError, match=f"{MANIFEST} is damaged"):
        owned(tmp_path)
