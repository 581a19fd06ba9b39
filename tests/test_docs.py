"""The docs are part of the product: every error Code, setting and built-in model is documented."""

from __future__ import annotations

import re

import pytest

from aigc_image.catalog import load_catalog
from aigc_image.config import iter_setting_docs
from aigc_image.errors import Reason
from aigc_image.protocol.errors import all_error_classes
from tests.helpers import ROOT

DOCS = ROOT / "docs"


def error_table() -> set[str]:
    """The Codes in the first column of the "Error codes" table of docs/protocol.md."""
    section = (DOCS / "protocol.md").read_text().split("## Error codes", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)`", section, flags=re.MULTILINE))


def test_the_error_table_lists_exactly_the_codes_the_server_returns() -> None:
    assert error_table() == {error.code for error in all_error_classes()}


def test_every_failure_reason_is_in_the_operations_docs() -> None:
    section = (DOCS / "operations.md").read_text().split("### Failure reasons", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (yes|no) \|", section, flags=re.MULTILINE))
    assert rows == {reason.value: "yes" if reason.caused_by_request else "no" for reason in Reason}


@pytest.mark.parametrize(("key", "env", "doc"), list(iter_setting_docs()), ids=lambda v: str(v)[:40])
def test_every_setting_is_in_the_configuration_docs(key: str, env: str, doc: str) -> None:
    text = (DOCS / "configuration.md").read_text()
    assert f"`{key}`" in text
    if env:
        assert f"`{env}`" in text


def test_the_settings_table_is_generated_from_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    import runpy

    runpy.run_path(str(ROOT / "scripts" / "settings_table.py"), run_name="__main__")
    generated = capsys.readouterr().out.strip()
    assert generated in (DOCS / "configuration.md").read_text()


def test_every_builtin_model_is_in_the_models_docs() -> None:
    text = (DOCS / "models.md").read_text()
    for entry in load_catalog():
        assert f"`{entry.name}`" in text and f"`{entry.version}`" in text, entry.label


def test_every_registry_key_is_in_the_models_docs() -> None:
    from aigc_image.catalog import ModelEntry

    section = (DOCS / "models.md").read_text().split("## Your own registry", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([a-z_]+)`", " ".join(re.findall(r"^\| ([^|]+) \|", section, flags=re.M))))
    assert set(ModelEntry.model_fields) <= documented


def test_readme_has_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/serve" in readme and "bash scripts/test" in readme
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_the_size_table_in_the_protocol_docs_is_the_one_the_server_uses() -> None:
    from aigc_image.media.sizes import ASPECT_RATIOS, OUTPUT_SIZES, SHORTER_SIDE

    text = (ROOT / "docs" / "protocol.md").read_text()
    for ratio in ASPECT_RATIOS:
        cells = " | ".join("{}×{}".format(*OUTPUT_SIZES[(ratio, resolution)]) for resolution in SHORTER_SIDE)
        assert f"| `{ratio}` | {cells} |" in text
