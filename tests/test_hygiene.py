"""The suite's own rules: a test that starts aigc-image is marked slow (tests/conftest.py enforces
it), every test has a time limit, and a warning fails the test that caused it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import warnings

import pytest

from tests.conftest import starts_aigc_image
from tests.helpers import ROOT


def test_starting_aigc_image_without_the_slow_mark_fails_the_test() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"starts an aigc-image process: mark it @pytest\.mark\.slow"):
        subprocess.run([sys.executable, "-m", "aigc_image", "--version"], capture_output=True, check=False)


def test_other_processes_may_start_in_any_test() -> None:
    assert subprocess.run([sys.executable, "-c", "pass"], check=False).returncode == 0


def test_what_counts_as_starting_aigc_image() -> None:
    assert starts_aigc_image([sys.executable, "-m", "aigc_image", "serve", "--port", "0"])
    assert starts_aigc_image(["/usr/local/bin/aigc-image", "worker"])
    assert starts_aigc_image("aigc-image models --config x.toml")
    assert not starts_aigc_image([sys.executable, "-c", "import aigc_image.cli"])
    assert not starts_aigc_image(["initdb", "-D", "/tmp/aigc-image-db"])


def test_every_test_has_a_time_limit_and_warnings_are_errors() -> None:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert options["timeout"] > 0
    assert options["filterwarnings"][0] == "error"
    with pytest.raises(DeprecationWarning):
        warnings.warn("our own deprecation", DeprecationWarning, stacklevel=1)
