from __future__ import annotations

import re
from pathlib import Path

import pytest

from aigc_image.config import ConfigError, KeyPair, LogLevel, load_settings


def test_defaults_match_the_documented_contract() -> None:
    settings = load_settings(environ={})
    assert settings.api.rate_limit == 20 and settings.api.timestamp_window == 300
    assert settings.storage.url_ttl == 12 * 3600
    assert settings.resolved_public_url == "http://127.0.0.1:8000"
    assert settings.resolved_database_url == f"sqlite:///{Path('aigc-data') / 'aigc-image.db'}"


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'public_url = "https://img.example.com/"\n[api]\nport = 9000\nrate_limit = 5.5\n'
        '[[keys]]\nsecret_id = "AKIDfile"\nsecret_key = "k1"\n'
    )
    env = {"AIGC_IMAGE_API_PORT": "9100", "AIGC_IMAGE_SECRET_ID": "AKIDenv", "AIGC_IMAGE_SECRET_KEY": "k2"}
    settings = load_settings(config, env)
    assert settings.api.port == 9100 and settings.api.rate_limit == 5.5
    assert settings.resolved_public_url == "https://img.example.com"
    assert settings.configured_keys() == (
        KeyPair(secret_id="AKIDenv", secret_key="k2"),
        KeyPair(secret_id="AKIDfile", secret_key="k1"),
    )
    assert settings.with_overrides(**{"api.port": 1, "data_dir": None}).api.port == 1


@pytest.mark.parametrize(
    ("text", "env", "fragment"),
    [
        ("colour = 1\n", {}, "colour"),
        ("[api]\nportt = 1\n", {}, "portt"),
        ("[api]\nport = 'x'\n", {}, "port"),
        ("", {"AIGC_IMAGE_API_PORT": "eighty"}, "AIGC_IMAGE_API_PORT"),
        ("", {"AIGC_IMAGE_MODELS_ALLOW_DOWNLOAD": "maybe"}, "ALLOW_DOWNLOAD"),
        ("[[keys]]\nsecret_id = 'a'\n", {}, "keys.0.secret_key"),
        ("api = 3\n", {}, "[api]"),
        ("[storage]\nbackend = 'ftp'\n", {}, "storage.backend"),  # an enum: local or s3
        ("", {"AIGC_IMAGE_FETCH_ALLOW_NETWORKS": "10.0.0.0/8, not-a-network"}, "AIGC_IMAGE_FETCH_ALLOW_NETWORKS"),
        ("", {"AIGC_IMAGE_API_PROT": "9000"}, "AIGC_IMAGE_API_PROT"),  # a typo is an error, not ignored
        ("", {"AIGC_IMAGE_API_PORT": "-1"}, r"AIGC_IMAGE_API_PORT \(api.port\)"),  # the full key
        ("[[keys]]\nsecret_id = 'a'\nsecret_key = 'b'\nweight = 0\n", {}, "keys.0.weight"),
        ("", {"AIGC_IMAGE_WORKER_SCHEDULING": "lottery"}, "AIGC_IMAGE_WORKER_SCHEDULING"),
        ("", {"AIGC_IMAGE_WORKER_AFFINITY_WAIT": "-1"}, "AIGC_IMAGE_WORKER_AFFINITY_WAIT"),
    ],
)
def test_invalid_settings_are_named(tmp_path: Path, text: str, env: dict[str, str], fragment: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=fragment if "\\" in fragment else re.escape(fragment)):
        load_settings(config, env)


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"AIGC_IMAGE_SECRET_ID": "AKIDonly"}, "secret_key (AIGC_IMAGE_SECRET_KEY) is not set"),
        ({"AIGC_IMAGE_SECRET_KEY": "k"}, "secret_id (AIGC_IMAGE_SECRET_ID) is not set"),
        ({"AIGC_IMAGE_STORAGE_S3_ACCESS_KEY_ID": "a"}, "AIGC_IMAGE_STORAGE_S3_SECRET_ACCESS_KEY) is not set"),
        ({"AIGC_IMAGE_STORAGE_COS_SECRET_KEY": "s"}, "AIGC_IMAGE_STORAGE_COS_SECRET_ID) is not set"),
        ({"AIGC_IMAGE_STORAGE_BACKEND": "s3"}, "storage.backend = s3 needs storage.s3_bucket"),
        ({"AIGC_IMAGE_LOG_LEVEL": "VERBOSE"}, "AIGC_IMAGE_LOG_LEVEL (log.level)"),
        ({"AIGC_IMAGE_DATABASE_URL": "mysql://db/tasks"}, "mysql://... is not a task store"),
        ({"AIGC_IMAGE_DATABASE_URL": "sqlite:///"}, "AIGC_IMAGE_DATABASE_URL"),
        ({"AIGC_IMAGE_DATABASE_URL": "/var/lib/tasks.db"}, "AIGC_IMAGE_DATABASE_URL"),
    ],
)
def test_settings_that_disagree_or_name_nothing_are_refused_at_load(env: dict[str, str], fragment: str) -> None:
    """Found when the settings are read, not when the first request or task needs them."""
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_settings(environ=env)


def test_every_problem_is_named_at_once() -> None:
    env = {"AIGC_IMAGE_SECRET_ID": "AKIDonly", "AIGC_IMAGE_STORAGE_BACKEND": "s3"}
    with pytest.raises(ConfigError, match=r"s3_bucket.*; secret_id"):
        load_settings(environ=env)


def test_log_levels_are_case_blind_and_urls_of_both_stores_are_taken() -> None:
    settings = load_settings(environ={"AIGC_IMAGE_LOG_LEVEL": "warning"})
    assert settings.log.level is LogLevel.WARNING
    for url in ("sqlite:///tasks.db", "sqlite:////var/lib/tasks.db", "postgresql://u:p@db:5432/t", "postgres://db/t"):
        assert load_settings(environ={"AIGC_IMAGE_DATABASE_URL": url}).database_url == url


def test_a_preloaded_model_the_catalogue_lacks_is_a_configuration_error() -> None:
    """Checked where a worker is assembled (wiring/), since config.py knows no catalogue."""
    from aigc_image.wiring import catalog_from, preloaded

    settings = load_settings(environ={"AIGC_IMAGE_WORKER_PRELOAD": "tiny-random, tiny-randon:1"})
    catalog, _ = catalog_from(settings)
    with pytest.raises(ConfigError, match=r"worker.preload: 'tiny-randon:1' is not in the model catalogue"):
        preloaded(settings, catalog)
    ok = load_settings(environ={"AIGC_IMAGE_WORKER_PRELOAD": "tiny-random"})
    assert [entry.label for entry in preloaded(ok, catalog)] == ["tiny-random:1"]


def test_lists_come_from_toml_arrays_or_comma_separated_environment_values(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[worker]\npreload = ["Hunyuan", "Qwen:0925"]\n[moderation]\nterm_files = "/a.txt, /b.txt"\n')
    settings = load_settings(config, {"AIGC_IMAGE_FETCH_ALLOW_NETWORKS": "10.0.0.0/8, ::1/128"})
    assert settings.worker.preload == ("Hunyuan", "Qwen:0925")
    assert settings.moderation.term_files == ("/a.txt", "/b.txt")
    assert [str(network) for network in settings.fetch.allow_networks] == ["10.0.0.0/8", "::1/128"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x = " + "[" * 5000 + "]" * 5000 + "\n", "nested"),  # tomllib recurses: bounded, never a RecursionError
        ("[api]\nport = " + "9" * 5000 + "\n", "digits"),  # past Python's int() limit: a ConfigError, not a traceback
        ("x = " + "[" * 20 + "]" * 20 + "\n", "nested"),  # past the files' depth limit (16)
        ('public_url = "' + "x" * 70_000 + '"\n', "characters"),
        ('public_url = "a\\u0000b"\n', "NUL"),
    ],
    ids=["deep", "long-integer", "nested", "long-string", "nul"],
)
def test_the_settings_file_and_the_registry_are_parsed_within_limits(tmp_path: Path, text: str, fragment: str) -> None:
    from aigc_image.catalog import load_catalog

    path = tmp_path / "file.toml"
    path.write_text(text)
    for read in (lambda: load_settings(path, {}), lambda: load_catalog(str(path))):
        with pytest.raises(ConfigError) as refused:
            read()
        assert fragment in str(refused.value) and str(path) in str(refused.value)


def test_string_settings_must_hold_a_prompt() -> None:
    with pytest.raises(ConfigError, match="max_string_chars"):
        load_settings(environ={"AIGC_IMAGE_API_MAX_PROMPT_CHARS": "5000", "AIGC_IMAGE_API_MAX_STRING_CHARS": "4000"})


def test_key_weights_come_from_the_settings_file_and_the_data_dirs_keys_file(tmp_path: Path) -> None:
    from aigc_image.keys import key_weights

    config = tmp_path / "c.toml"
    config.write_text('[[keys]]\nsecret_id = "AKIDa"\nsecret_key = "k"\nweight = 3\n')
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "keys.toml").write_text(
        '[[keys]]\nsecret_id = "AKIDb"\nsecret_key = "k"\nweight = 0.5\n\n'
        '[[keys]]\nsecret_id = "AKIDc"\nsecret_key = "k"\n'
    )
    settings = load_settings(config, {"AIGC_IMAGE_DATA_DIR": str(data_dir), "AIGC_IMAGE_SECRET_ID": "AKIDd",
                                      "AIGC_IMAGE_SECRET_KEY": "k"})  # fmt: skip
    assert key_weights(settings) == {"AKIDd": 1.0, "AKIDa": 3.0, "AKIDb": 0.5, "AKIDc": 1.0}
    (data_dir / "keys.toml").write_text('[[keys]]\nsecret_id = "AKIDb"\nsecret_key = "k"\nweight = -1\n')
    with pytest.raises(ConfigError, match="weight"):
        key_weights(settings)
