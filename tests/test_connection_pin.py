"""protocol/connection.py subclasses uvicorn's httptools protocol, which is not a public API: the
installed uvicorn must be the release it was written against, and every hook it overrides must
still exist there, so an upgrade breaks this test instead of the connection guards."""

from __future__ import annotations

import inspect
import tomllib
from importlib.metadata import version

from packaging.requirements import Requirement
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from aigc_image.protocol.connection import GuardedHttpToolsProtocol
from tests.helpers import ROOT


def test_the_installed_uvicorn_is_the_pinned_release() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    [pin] = [Requirement(r) for r in project["dependencies"] if r.startswith("uvicorn")]
    assert version("uvicorn") in pin.specifier, (version("uvicorn"), str(pin.specifier))


def test_every_overridden_hook_exists_in_uvicorns_protocol_with_the_same_signature() -> None:
    overridden = [name for name in vars(GuardedHttpToolsProtocol) if callable(vars(GuardedHttpToolsProtocol)[name])]
    hooks = [name for name in overridden if not name.startswith("_")]
    assert {"connection_made", "data_received", "on_headers_complete", "on_body", "on_message_complete"} <= set(hooks)
    for name in hooks:
        base = getattr(HttpToolsProtocol, name)
        ours = getattr(GuardedHttpToolsProtocol, name)
        assert list(inspect.signature(base).parameters) == list(inspect.signature(ours).parameters), name
