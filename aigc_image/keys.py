"""API key pairs and the URL-signing secret kept in the data dir.

Keys come from settings (the environment pair and ``[[keys]]`` tables) and from
``<data_dir>/keys.toml``. When there are none, ``serve`` generates a pair into that
file (mode 0600) and prints it once.

A running API process reads ``keys.toml`` again whenever it changes (``KeyRing``), so a key
created with ``aigc-image keys --create``, added by hand or removed from the file is accepted or
refused within ``KeyRing.CHECK_SECONDS``, by every face (the MPS API, ``/v1``, the console),
without a restart.
"""

from __future__ import annotations

import logging
import os
import secrets
import string
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

from aigc_image.clock import Clock
from aigc_image.config import ConfigError, KeyPair, Settings

log = logging.getLogger(__name__)

KEYS_FILE = "keys.toml"
URL_KEY_FILE = "url-signing.key"
_ALPHANUMERIC = string.ascii_letters + string.digits


def new_key_pair() -> KeyPair:
    secret_id = "AKID" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(32))
    secret_key = "".join(secrets.choice(_ALPHANUMERIC) for _ in range(32))
    return KeyPair(secret_id=secret_id, secret_key=secret_key)


def data_dir_keys(data_dir: Path) -> tuple[KeyPair, ...]:
    path = data_dir / KEYS_FILE
    if not path.exists():
        return ()
    try:
        document = tomllib.loads(path.read_text("utf-8"))
        return tuple(
            KeyPair(secret_id=k["secret_id"], secret_key=k["secret_key"], weight=k.get("weight", 1.0))
            for k in document.get("keys", [])
        )
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def all_keys(settings: Settings) -> dict[str, str]:
    """SecretId → SecretKey for every configured pair."""
    return {k.secret_id: k.secret_key for k in (*settings.configured_keys(), *data_dir_keys(settings.data_dir))}


class KeyRing(Mapping[str, str]):
    """SecretId → SecretKey as an API process accepts them: the settings' pairs (fixed for the
    life of the process) and the data dir's ``keys.toml``, read again when the file changes.

    The file is looked at (one ``stat``) at most every ``CHECK_SECONDS``. A file that cannot be
    read or parsed (a half-saved edit, a typo) leaves the keys read last in force and is logged
    once, so a bad edit never locks everyone out; a file that is gone revokes its keys.
    """

    CHECK_SECONDS = 1.0

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._configured = {k.secret_id: k.secret_key for k in settings.configured_keys()}
        self._path = settings.data_dir / KEYS_FILE
        self._clock = clock
        pairs = data_dir_keys(settings.data_dir)
        self._keys = self._configured | {k.secret_id: k.secret_key for k in pairs}
        self._configured_weights = {k.secret_id: k.weight for k in settings.configured_keys()}
        self._weights = self._configured_weights | {k.secret_id: k.weight for k in pairs}
        self._seen = _signature(self._path)  # the file as last read successfully
        self._refused: tuple[int, ...] | None = None  # the version of the file last logged as unreadable
        self._next_check = clock.monotonic() + self.CHECK_SECONDS

    def __getitem__(self, secret_id: str) -> str:
        return self._current()[secret_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def weight(self, secret_id: str) -> float:
        """The key's ``weight``: its share of the workers while keys compete (default 1)."""
        self._current()
        return self._weights.get(secret_id, 1.0)

    def _current(self) -> dict[str, str]:
        now = self._clock.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.CHECK_SECONDS
            self._reload()
        return self._keys

    def _reload(self) -> None:
        version = _signature(self._path)
        if version == self._seen:
            return
        try:
            pairs = data_dir_keys(self._path.parent)
        except ConfigError as exc:
            if version != self._refused:
                self._refused = version
                log.error("%s; the %d key(s) read before stay in force until the file is fixed", exc, len(self._keys))
            return  # read again at the next check: it may have been caught half-written
        if _signature(self._path) != version:
            return  # it changed while being read: read it again at the next check
        keys = self._configured | {k.secret_id: k.secret_key for k in pairs}
        added, removed = keys.keys() - self._keys.keys(), self._keys.keys() - keys.keys()
        log.info("keys reloaded from %s: %d added, %d removed, %d in all",
                 self._path, len(added), len(removed), len(keys))  # fmt: skip
        self._keys, self._seen, self._refused = keys, version, None
        self._weights = self._configured_weights | {k.secret_id: k.weight for k in pairs}


def _signature(path: Path) -> tuple[int, ...] | None:
    """What changes whenever the file does (rewritten, appended to, replaced), or None if it is gone."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def key_weights(settings: Settings) -> dict[str, float]:
    """SecretId → its ``weight``: its share of the workers while keys compete (default 1)."""
    return {k.secret_id: k.weight for k in (*settings.configured_keys(), *data_dir_keys(settings.data_dir))}


def add_key(data_dir: Path, pair: KeyPair) -> Path:
    """Append a pair to the data dir's keys file, creating it private to its owner."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / KEYS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(f'[[keys]]\nsecret_id = "{pair.secret_id}"\nsecret_key = "{pair.secret_key}"\n\n')
    return path


def url_signing_key(settings: Settings) -> bytes:
    """The secret that signs image URLs: the setting, else a file generated in the data dir."""
    if settings.storage.url_signing_key:
        return settings.storage.url_signing_key.encode("utf-8")
    path = settings.data_dir / URL_KEY_FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Write aside, then link into place: concurrent starters all end up reading one key.
        tmp = path.with_name(f".{URL_KEY_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_bytes().strip()
