from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import load_config, parse_config, starter_config
from reportsync.errors import ConfigError
from tests.support import toml_dump, write_config


def sftp_source(**overrides: Any) -> dict[str, Any]:
    source = {
        "protocol": "sftp", "host": "127.0.0.1", "port": 2222, "username": "acme",
        "key_file": "/keys/id_rsa", "known_hosts": "/keys/known_hosts", "remote_dir": "outgoing",
        "download_dir": "/r/enc", "output_dir": "/r/out",
    }
    source.update(overrides)
    return source


def test_minimal_sftp_source_gets_defaults() -> None:
    config = parse_config({"sources": {"ibkr": sftp_source()}})
    source = config.sources["ibkr"]
    assert source.include == ("*.pgp", "*.gpg", "*.asc")
    assert source.timeout == 30.0 and source.retries == 3 and source.passive is True
    assert config.retention.days == 100 and config.retention.warn_days == 10


def test_every_problem_is_reported_at_once_with_its_key() -> None:
    document = {
        "settings": {"gpg_binry": "gpg"},
        "retention": {"days": "100"},
        "sources": {"ibkr": sftp_source(port=70000, protocol="sftp", timeout=-1, passive="yes")},
        "extra": {},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(document, config_path=Path("/etc/rs.toml"))
    problems = caught.value.problems
    joined = "\n".join(map(str, problems))
    assert "settings.gpg_binry: unknown key (did you mean 'gpg_binary'?)" in joined
    assert "retention.days: must be a whole number" in joined
    assert "sources.ibkr.port: must be between 1 and 65535" in joined
    assert "sources.ibkr.timeout: must be between 1 and 3600" in joined  # was "> 0" (issue 14)
    assert "sources.ibkr.passive: must be true or false" in joined
    assert "extra: unknown section" in joined
    assert caught.value.path == "/etc/rs.toml"
    assert len(problems) >= 6


def test_missing_required_keys_and_protocol_mismatches() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"sources": {
            "a": {"protocol": "ftp", "host": "h", "username": "u", "download_dir": "/d",
                  "output_dir": "/o", "key_file": "/k"},
            "b": {"protocol": "sftp", "host": "h", "username": "u"},
        }})
    joined = "\n".join(map(str, caught.value.problems))
    assert "sources.a.key_file: applies to sftp only, not ftp" in joined
    assert "sources.a.password_env: ftp needs password_env or password_file" in joined
    assert "sources.b.download_dir: is required" in joined
    assert "sources.b.known_hosts: sftp needs known_hosts or host_key_fingerprint" in joined


def test_host_key_fingerprint_format_is_checked() -> None:
    with pytest.raises(ConfigError, match="host_key_fingerprint"):
        parse_config({"sources": {"a": sftp_source(host_key_fingerprint="MD5:aa:bb")}})
    good = "SHA256:" + "A" * 43
    assert parse_config({"sources": {"a": sftp_source(host_key_fingerprint=good)}})


def test_paths_expand_home_and_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REPORTS", "/data/reports")
    config = parse_config(
        {"sources": {"a": sftp_source(download_dir="$REPORTS/enc", output_dir="~/out",
                                      key_file="keys/id")}},
        config_path=tmp_path / "config.toml",
    )
    source = config.sources["a"]
    assert source.download_dir == Path("/data/reports/enc")
    assert source.output_dir == Path(os.path.expanduser("~/out"))
    assert source.key_file == tmp_path / "keys" / "id", "relative paths are relative to the config"


def test_secrets_come_from_env_or_file_and_hide_themselves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    config = parse_config({"sources": {
        "env": {"protocol": "ftp", "host": "h", "username": "u", "password_env": "RS_TEST_PW",
                "download_dir": "/d", "output_dir": "/o"},
        "file": {"protocol": "ftp", "host": "h", "username": "u", "password_file": str(secret_file),
                 "download_dir": "/d", "output_dir": "/o"},
    }})
    monkeypatch.setenv("RS_TEST_PW", "hunter2")
    secret = config.sources["env"].password.resolve()
    assert secret is not None and secret.reveal() == "hunter2"
    assert "hunter2" not in repr(secret) and "hunter2" not in str(config)
    from_file = config.sources["file"].password.resolve()
    assert from_file is not None and from_file.reveal() == "from-file"
    monkeypatch.delenv("RS_TEST_PW")
    with pytest.raises(ConfigError, match="RS_TEST_PW is not set"):
        config.sources["env"].password.resolve()


def test_inline_password_only_in_a_private_file(tmp_path: Path) -> None:
    document = {"sources": {"a": {"protocol": "ftp", "host": "h", "username": "u",
                                  "password": "s3cret", "download_dir": "/d",
                                  "output_dir": "/o"}}}
    path = write_config(tmp_path / "c.toml", document)
    assert load_config(path).sources["a"].password.resolve() is not None
    path.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "not readable by group or others" in caught.value.message
    assert "s3cret" not in caught.value.message


def test_load_config_names_the_file_for_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        load_config(tmp_path / "nope.toml")
    assert "reportsync init" in caught.value.remedy
    broken = tmp_path / "broken.toml"
    broken.write_text("[sources.a\nhost = ")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_config(broken)
    assert caught.value.path == str(broken)


def test_select_unknown_source_is_an_error() -> None:
    config = parse_config({"sources": {"a": sftp_source()}})
    assert [source.name for source in config.select(["a"])] == ["a"]
    with pytest.raises(ConfigError, match="no source named 'b'"):
        config.select(["b"])


def test_starter_config_is_valid_and_round_trips() -> None:
    import tomllib

    text = starter_config("broker")
    config = parse_config(tomllib.loads(text))
    assert list(config.sources) == ["broker"]
    assert "# key_passphrase_env" in text, "every key is shown, optional ones commented"
    assert toml_dump({"sources": {"x": {"a": 1}}}).startswith("[sources.x]")
