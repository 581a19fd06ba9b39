"""API keys without restarts: a running API process follows the data dir's keys.toml (KeyRing),
in-process with a test clock, and through a live server with `aigc-image keys --create`."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

from aigc_image import keys as keyfiles
from aigc_image.clock import ManualClock
from aigc_image.config import ConfigError, KeyPair, load_settings
from aigc_image.keys import KeyRing
from tests.helpers import ROOT, create_request, live_server, sdk_client, server_env, wait_for

CHECK = KeyRing.CHECK_SECONDS


def ring(data_dir: Path, clock: ManualClock, **environ: str) -> KeyRing:
    settings = load_settings(environ={"AIGC_IMAGE_DATA_DIR": str(data_dir), **environ})
    return KeyRing(settings, clock)


def test_a_created_key_is_accepted_and_a_removed_one_refused_without_a_restart(
    tmp_path: Path, clock: ManualClock
) -> None:
    first = keyfiles.new_key_pair()
    keyfiles.add_key(tmp_path, first)
    keys = ring(tmp_path, clock)
    assert dict(keys) == {first.secret_id: first.secret_key}

    second = keyfiles.new_key_pair()
    keyfiles.add_key(tmp_path, second)
    assert second.secret_id not in keys  # looked at no more than once per CHECK_SECONDS
    clock.advance(CHECK)
    assert keys.get(second.secret_id) == second.secret_key

    (tmp_path / keyfiles.KEYS_FILE).write_text(
        f'[[keys]]\nsecret_id = "{second.secret_id}"\nsecret_key = "{second.secret_key}"\n'
    )
    clock.advance(CHECK)
    assert first.secret_id not in keys and second.secret_id in keys

    (tmp_path / keyfiles.KEYS_FILE).unlink()  # the file gone: its keys with it
    clock.advance(CHECK)
    assert len(keys) == 0


def test_a_keys_weight_follows_the_file_too(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / keyfiles.KEYS_FILE
    path.write_text('[[keys]]\nsecret_id = "AKIDa"\nsecret_key = "k"\nweight = 2\n')
    keys = ring(tmp_path, clock, AIGC_IMAGE_SECRET_ID="AKIDenv", AIGC_IMAGE_SECRET_KEY="k")
    assert (keys.weight("AKIDa"), keys.weight("AKIDenv"), keys.weight("AKIDnone")) == (2.0, 1.0, 1.0)
    path.write_text('[[keys]]\nsecret_id = "AKIDa"\nsecret_key = "k"\nweight = 0.5\n')
    clock.advance(CHECK)
    assert keys.weight("AKIDa") == 0.5  # the next task it creates is recorded with its new weight


def test_a_malformed_edit_keeps_the_last_good_keys_and_says_why_once(
    tmp_path: Path, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    pair = keyfiles.new_key_pair()
    keyfiles.add_key(tmp_path, pair)
    keys = ring(tmp_path, clock)
    path = tmp_path / keyfiles.KEYS_FILE
    with caplog.at_level(logging.INFO, logger="aigc_image.keys"):
        for broken in ('[[keys]]\nsecret_id = "AKIDhalf', '[[keys]]\nsecret_id = "AKIDnokey"\n'):
            path.write_text(broken)
            for _ in range(3):
                clock.advance(CHECK)
                assert keys.get(pair.secret_id) == pair.secret_key
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 2, errors  # once per bad version of the file, not once per look
        assert str(path) in errors[0] and "stay in force" in errors[0]
        assert "secret_key" in errors[1]

        path.write_text(f'[[keys]]\nsecret_id = "{pair.secret_id}"\nsecret_key = "changed-secret"\n')
        clock.advance(CHECK)
        assert keys.get(pair.secret_id) == "changed-secret"
    assert any("keys reloaded" in r.getMessage() for r in caplog.records)


def test_keys_from_the_settings_stay_whatever_the_file_says(tmp_path: Path, clock: ManualClock) -> None:
    keys = ring(tmp_path, clock, AIGC_IMAGE_SECRET_ID="AKIDfromenv", AIGC_IMAGE_SECRET_KEY="env-secret")
    assert dict(keys) == {"AKIDfromenv": "env-secret"}
    keyfiles.add_key(tmp_path, KeyPair(secret_id="AKIDfromfile", secret_key="file-secret"))
    clock.advance(CHECK)
    assert dict(keys) == {"AKIDfromenv": "env-secret", "AKIDfromfile": "file-secret"}
    (tmp_path / keyfiles.KEYS_FILE).write_text("not toml [")
    clock.advance(CHECK)
    (tmp_path / keyfiles.KEYS_FILE).unlink()
    clock.advance(CHECK)
    assert dict(keys) == {"AKIDfromenv": "env-secret"}


def test_a_file_unreadable_at_start_is_a_configuration_error(tmp_path: Path, clock: ManualClock) -> None:
    (tmp_path / keyfiles.KEYS_FILE).write_text("[[keys]]\nsecret_id = 3\n")
    with pytest.raises(ConfigError, match=r"keys\.toml"):
        ring(tmp_path, clock)


@pytest.mark.slow
def test_keys_create_reaches_a_running_server_through_every_face(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with live_server(data, "--no-worker") as server:
        created = subprocess.run(
            [sys.executable, "-m", "aigc_image", "keys", "--create", "--data-dir", str(data)],
            capture_output=True, text=True, env=server_env(), cwd=ROOT, timeout=60, check=True,
        )  # fmt: skip
        assert f"accept it within {CHECK:.0f} s, without a restart" in created.stdout
        secret_id = next(line.split()[-1] for line in created.stdout.splitlines() if "SecretId:" in line)
        secret_key = next(line.split()[-1] for line in created.stdout.splitlines() if "SecretKey:" in line)

        def accepted() -> bool:
            try:
                sdk_client(server, secret_id, secret_key).CreateAigcImageTask(create_request(Prompt="a new key"))
            except TencentCloudSDKException as exc:
                assert exc.get_code() == "AuthFailure.SecretIdNotFound", exc
                return False
            return True

        wait_for(accepted, timeout=30)
        bearer = {"Authorization": f"Bearer {secret_id}:{secret_key}"}
        assert httpx.get(f"{server.url}/v1/models", headers=bearer).status_code == 200  # the OpenAI face

        (data / keyfiles.KEYS_FILE).write_text("")  # revoked by removing it from the file
        wait_for(lambda: httpx.get(f"{server.url}/v1/models", headers=bearer).status_code == 401, timeout=30)
        with pytest.raises(TencentCloudSDKException) as refused:
            sdk_client(server, secret_id, secret_key).CreateAigcImageTask(create_request(Prompt="revoked"))
        assert refused.value.get_code() == "AuthFailure.SecretIdNotFound"
        assert sdk_client(server).CreateAigcImageTask(create_request(Prompt="the config key")).TaskId
