"""API key pairs and the URL-signing secret kept in the data dir.

Keys come from settings (the environment pair and ``[[keys]]`` tables) and from
``<data_dir>/keys.toml``. When there are none, ``serve`` generates a pair into that
file (mode 0600) and prints it once.
"""

from __future__ import annotations

import os
import secrets
import string
import tomllib
from pathlib import Path

from pydantic import ValidationError

from aigc_image.config import ConfigError, KeyPair, Settings

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
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValidationError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def all_keys(settings: Settings) -> dict[str, str]:
    """SecretId → SecretKey for every configured pair."""
    return {k.secret_id: k.secret_key for k in (*settings.configured_keys(), *data_dir_keys(settings.data_dir))}


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
