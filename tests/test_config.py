from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reportsync.config import (
    PROTOCOLS,
    REDACTED,
    SECTIONS,
    SOURCE_KEYS,
    Config,
    Key,
    Problem,
    SecretRef,
    default_config_path,
    dump_toml,
    load_config,
    parse_config,
    redacted_document,
    redacted_text,
    register_section,
    secret,
    secret_values,
    setting,
    starter_config,
)
from reportsync.errors import ConfigError, ExitCode
from tests.support import run_cli, toml_dump, write_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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


def ftp_source(**overrides: Any) -> dict[str, Any]:
    source = {"protocol": "ftp", "host": "127.0.0.1", "username": "acme", "password_env": "RS_PW",
              "download_dir": "/r/enc", "output_dir": "/r/out"}
    source.update(overrides)
    return {key: value for key, value in source.items() if value is not None}  # None: unset


def problems_of(document: dict[str, Any], **options: Any) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, **options)
    return caught.value.problems


def messages_for(key: str, problems: list[Problem]) -> list[str]:
    return [problem.message for problem in problems if problem.key == key]


# --- problems are objects -------------------------------------------------------------------------


def test_problems_carry_their_key_and_print_as_before() -> None:
    problems = problems_of({"sources": {"ibkr": sftp_source(port=70000)}},
                           config_path=Path("/etc/rs.toml"))
    assert problems == [Problem("sources.ibkr.port", "must be between 1 and 65535")]
    error = ConfigError(problems, path="/etc/rs.toml")
    assert str(problems[0]) == "sources.ibkr.port: must be between 1 and 65535"
    assert error.message == "config problem: sources.ibkr.port: must be between 1 and 65535"
    assert error.to_dict()["problems"] == ["sources.ibkr.port: must be between 1 and 65535"]
    keyless = ConfigError(["/x does not exist"])
    assert keyless.problems == [Problem(None, "/x does not exist")]
    assert str(keyless.problems[0]) == "/x does not exist"


# --- issue 14: values the code would choke on are refused, naming the key ---------------------


@pytest.mark.parametrize(("key", "value", "message"), [
    ("timeout", float("inf"), "must be a finite number, not inf"),
    ("timeout", float("nan"), "must be a finite number, not nan"),
    ("timeout", 1e308, "must be between 1 and 3600"),
    ("timeout", 0.5, "must be between 1 and 3600"),
    ("timeout", 3601, "must be between 1 and 3600"),
    ("retries", 21, "must be between 0 and 20"),
    ("retries", 10**18, "must be between 0 and 20"),
    ("expect_every_days", 10**12, "must be between 0 and 36500"),
    ("port", 0, "must be between 1 and 65535"),
])
def test_source_numbers_are_finite_and_bounded(key: str, value: Any, message: str) -> None:
    problems = problems_of({"sources": {"a": sftp_source(**{key: value})}})
    assert messages_for(f"sources.a.{key}", problems) == [message]


@pytest.mark.parametrize(("section", "key", "value"), [
    ("retention", "days", 10**18),  # timedelta(days=10**18) overflows
    ("retention", "warn_days", 40000),
    ("retention", "archive_days", 10**10),
    ("retention", "max_deletions", 10**12),
    ("settings", "max_plaintext_bytes", 2**62),
])
def test_section_numbers_are_bounded(section: str, key: str, value: int) -> None:
    problems = problems_of({section: {key: value}, "sources": {"a": sftp_source()}})
    assert [problem.key for problem in problems] == [f"{section}.{key}"]
    assert problems[0].message.startswith("must be between ")


@pytest.mark.parametrize("host", [
    "a..b", ".", "a" * 300, ("x" * 64) + ".example.com", ".example.com", "-lead.example.com",
    "trail-.example.com", "a b.example.com", "", "ex!ample.com", ("a" * 60 + ".") * 5 + "com",
])
def test_host_must_be_a_dns_name_or_an_ip_address(host: str) -> None:
    problems = problems_of({"sources": {"a": sftp_source(host=host)}})
    [message] = messages_for("sources.a.host", problems)
    assert message.startswith("must be a DNS name or an IP address, not ")


@pytest.mark.parametrize("host", [
    "127.0.0.1", "::1", "fe80::1%lo", "localhost", "xfer.interactivebrokers.com",
    "example.com.", "b\u00fccher.example", "files_01.internal", "xn--bcher-kva.example",
])
def test_valid_host_names_and_addresses_are_accepted(host: str) -> None:
    assert parse_config({"sources": {"a": sftp_source(host=host)}}).sources["a"].host == host


def line_breaking_value(key: Key) -> Any:
    if key.kind == "list":
        return ["ok", "bad\nitem"]
    return {"path": "/r/with\x00nul", "choice": "sftp\r\n"}.get(key.kind, "a\r\nb")


TEXT_KEYS = [(section.name, key) for section in SECTIONS.values() for key in section.keys
             if key.kind in ("str", "path", "list", "choice")]


@pytest.mark.parametrize(("section", "key"), TEXT_KEYS,
                         ids=[f"{section}.{key.name}" for section, key in TEXT_KEYS])
def test_no_string_or_path_holds_a_nul_cr_or_lf(section: str, key: Key) -> None:
    """ftplib refuses a username or folder with a newline (ValueError), the OS a path with a NUL
    (embedded null byte): every text key of the schema is checked at load, and the problem line
    never echoes the raw character."""
    source = ftp_source() if key.protocols and "ftp" in key.protocols else sftp_source()
    if key.protocols and not set(key.protocols) & {source["protocol"]}:
        source = {**source, "protocol": key.protocols[0]}
    document: dict[str, Any] = {"sources": {"a": source}}
    if section == "sources":
        source[key.name] = line_breaking_value(key)
        where = f"sources.a.{key.name}"
    else:
        document[section] = {key.name: line_breaking_value(key)}
        where = f"{section}.{key.name}"
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert "must not contain a NUL, CR or LF character" in messages_for(where,
                                                                         caught.value.problems)
    for problem in caught.value.problems:
        assert not set(str(problem)) & {"\0", "\r", "\n"}, problem


def test_a_variable_that_expands_to_a_line_break_is_refused_too() -> None:
    problems = problems_of({"sources": {"a": sftp_source(download_dir="$RS_DIR/enc")}},
                           environ={"RS_DIR": "/r\n/x"})
    assert messages_for("sources.a.download_dir", problems) == [
        "must not contain a NUL, CR or LF character (after expanding variables)"]


def test_odd_table_and_key_names_are_quoted_never_printed_raw() -> None:
    problems = problems_of({"sources": {"a\nb": sftp_source(**{"x\ry": 1})}})
    texts = [str(problem) for problem in problems]
    assert 'sources."a\\nb": a source name may hold letters, digits' in texts[0]
    assert 'sources."a\\nb"."x\\ry": unknown key' in texts
    assert not any(set(text) & {"\r", "\n"} for text in texts)


def _in_a_thread(call: Callable[[], Any], seconds: float = 10) -> Any:
    """``call()``'s result or exception; the test fails if it blocks (a FIFO opened for
    reading waits for a writer, forever under cron)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # the exception is the outcome
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{call} blocked"
    return outcome[0]


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    path = tmp_path / "pipe.toml"
    os.mkfifo(path, 0o600)
    yield path
    with contextlib.suppress(OSError):  # release a reader blocked on it (the code before the fix)
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_a_config_that_is_not_a_regular_file_is_refused_without_blocking(
    fifo: Path, tmp_path: Path,
) -> None:
    outcome = _in_a_thread(lambda: load_config(fifo))
    assert isinstance(outcome, ConfigError), outcome
    assert outcome.message == f"config problem: {fifo} is a named pipe (FIFO), not a regular file"
    assert "--config" in outcome.remedy and outcome.exit_code == ExitCode.CONFIG
    folder = _in_a_thread(lambda: load_config(tmp_path))
    assert isinstance(folder, ConfigError) and "is a folder, not a regular file" in folder.message


def test_cli_refuses_a_fifo_config_with_exit_2(fifo: Path) -> None:
    result = run_cli("--config", str(fifo), "status", timeout=30)
    assert result.exit_code == 2, result.stderr
    assert "named pipe (FIFO), not a regular file" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_secret_file_that_is_a_fifo_is_refused_without_blocking(fifo: Path) -> None:
    config = parse_config({"sources": {"a": ftp_source(password_env=None,
                                                       password_file=str(fifo))}})
    outcome = _in_a_thread(config.sources["a"].password.resolve)
    assert isinstance(outcome, ConfigError), outcome
    assert str(outcome.problems[0]) == (f"sources.a.password_file: cannot read {fifo}: "
                                        "a named pipe (FIFO), not a regular file")


def test_state_dir_and_gnupg_home_problems_name_their_key(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    problems = problems_of({"settings": {"state_dir": str(a_file),
                                         "gnupg_home": str(a_file / "gnupg")},
                            "sources": {"a": sftp_source()}})
    assert problems == [
        Problem("settings.state_dir", f"{a_file} is a file, not a folder"),
        Problem("settings.gnupg_home", f"{a_file / 'gnupg'} cannot be created: {a_file} is a "
                "file, not a folder"),
    ]
    fine = parse_config({"settings": {"state_dir": str(tmp_path / "new" / "state")},
                         "sources": {"a": sftp_source()}})
    assert fine.settings.state_dir == tmp_path / "new" / "state"


def test_cli_names_settings_state_dir_when_it_is_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    config = write_config(tmp_path / "c.toml", {"settings": {"state_dir": str(a_file),
                                                             "gnupg_home": str(tmp_path / "g")}})
    result = run_cli("--config", str(config), "keys", "pgp", "list")
    assert result.exit_code == 2, result.stderr
    assert f"settings.state_dir: {a_file} is a file, not a folder" in result.stderr


# --- which keys apply to which protocol: the schema says ----------------------------------------


def base_source(protocol: str) -> dict[str, Any]:
    return sftp_source() if protocol == "sftp" else ftp_source(protocol=protocol)


APPLICABILITY = [(protocol, key) for protocol in PROTOCOLS for key in SOURCE_KEYS
                 if not key.applies_to(protocol) and not key.required]


@pytest.mark.parametrize(("protocol", "key"), APPLICABILITY,
                         ids=[f"{protocol}-{key.name}" for protocol, key in APPLICABILITY])
def test_a_key_of_another_protocol_is_refused_or_ignored_as_the_schema_says(
    protocol: str, key: Key, tmp_path: Path,
) -> None:
    value = {"bool": False, "path": str(tmp_path / "f"), "str": "SHA256:" + "A" * 43,
             "choice": key.choices[0] if key.choices else ""}[key.kind]
    source = {**base_source(protocol), key.name: value}
    if key.name == "certificate_file":
        source["key_file"] = str(tmp_path / "k")
    if key.elsewhere == "ignored":
        assert parse_config({"sources": {"a": source}}).sources["a"].protocol == protocol
        return
    problems = problems_of({"sources": {"a": source}})
    assert f"applies to {' and '.join(key.protocols)} only, not {protocol}" in messages_for(
        f"sources.a.{key.name}", problems)


def test_the_protocol_keys_are_the_documented_ones() -> None:
    by_protocols = {key.name: key.protocols for key in SOURCE_KEYS if key.protocols}
    assert by_protocols == {
        "key_file": ("sftp",), "certificate_file": ("sftp",), "key_passphrase_env": ("sftp",),
        "key_passphrase_file": ("sftp",), "known_hosts": ("sftp",),
        "host_key_fingerprint": ("sftp",), "ssh_engine": ("sftp",), "ca_file": ("ftps",),
        "passive": ("ftp", "ftps"),
    }


# --- the environment the config is loaded with -------------------------------------------------


def test_loading_reads_the_environment_it_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("RS_PW", "from-the-process")
    monkeypatch.setenv("REPORTS", "/process/reports")
    environ = {"RS_PW": "from-the-caller", "REPORTS": "/caller/reports", "HOME": "/home/caller"}
    config = parse_config({"sources": {"a": ftp_source(download_dir="$REPORTS/enc",
                                                       output_dir="~/out")}}, environ=environ)
    assert config.environ is environ
    source = config.sources["a"]
    assert source.download_dir == Path("/caller/reports/enc")
    assert source.output_dir == Path("/home/caller/out")
    password = source.password.resolve()
    assert password is not None and password.reveal() == "from-the-caller"
    other = source.password.resolve({"RS_PW": "passed-in"})
    assert other is not None and other.reveal() == "passed-in"
    with pytest.raises(ConfigError, match="RS_PW is not set"):
        parse_config({"sources": {"a": ftp_source()}}, environ={}).sources["a"].password.resolve()


def test_the_config_path_comes_from_the_given_environment(tmp_path: Path) -> None:
    path = write_config(tmp_path / "elsewhere.toml", {"sources": {"a": ftp_source()}})
    environ = {"REPORTSYNC_CONFIG": "$RS_ROOT/elsewhere.toml", "RS_ROOT": str(tmp_path),
               "RS_PW": "pw"}
    assert default_config_path(environ) == path
    config = load_config(environ=environ)
    assert config.path == path and config.environ is environ
    secret_value = config.sources["a"].password.resolve()
    assert secret_value is not None and secret_value.reveal() == "pw"
    assert default_config_path({}).name == "config.toml"


# --- secrets by schema ----------------------------------------------------------------------------


def test_redacted_document_hides_every_secret_and_every_unknown_value(tmp_path: Path) -> None:
    document = {
        "settings": {"gpg_passphrase_file": "~/gpg.pass", "gpg_binary": "gpg"},
        "sources": {"a": ftp_source(password_env=None, password="hunter2", pasword="hunter3"),
                    "b": sftp_source(key_passphrase_env="RS_KEY_PASS")},
        "notify": {"healthchecks_url": "https://hc.example/ping/0123-secret",
                   "urls_env": "RS_APPRISE_URLS"},
        "alerts": {"url": "https://alerts.example/4567-secret"},  # a section of a newer version
        "stray": "top-level value",
    }
    redacted = redacted_document(document)
    assert redacted["sources"]["a"]["password"] == REDACTED
    assert redacted["sources"]["a"]["pasword"] == REDACTED, "a typo's value is not copied"
    assert redacted["notify"] == {"healthchecks_url": REDACTED, "urls_env": "RS_APPRISE_URLS"}
    assert redacted["alerts"] == REDACTED and redacted["stray"] == REDACTED
    assert redacted["sources"]["b"]["key_passphrase_env"] == "RS_KEY_PASS"
    assert redacted["settings"] == document["settings"]
    assert redacted["sources"]["a"]["username"] == "acme"
    text = redacted_text(dump_toml(document))
    assert "hunter" not in text and "0123-secret" not in text and "top-level" not in text
    assert "4567-secret" not in text
    assert tomllib.loads(text) == redacted, "the text form is the same redaction"
    broken = redacted_text('password = "hunter2"\n[sources.a\n')
    assert "hunter2" not in broken and broken.startswith("# the config is not valid TOML")


def test_secret_values_are_every_resolved_secret(tmp_path: Path) -> None:
    pass_file = tmp_path / "gpg.pass"
    pass_file.write_text("gpg-passphrase-value\n")
    pass_file.chmod(0o600)
    document = {
        "settings": {"gpg_passphrase_file": str(pass_file)},
        "sources": {"a": ftp_source(password_env=None, password="inline-password"),
                    "b": sftp_source(key_passphrase_env="RS_KEY_PASS", password_env="RS_PW")},
    }
    environ = {"RS_KEY_PASS": "key-passphrase-value", "RS_PW": "sftp-password-value",
               "UNRELATED": "not-a-secret"}
    config = parse_config(document, environ=environ)
    expected = {"gpg-passphrase-value", "inline-password", "key-passphrase-value",
                "sftp-password-value"}
    found = secret_values(config)
    assert set(found) == expected and found == sorted(found, key=len, reverse=True)
    # a document that does not validate (both forms of one secret set) is still scrubbed
    document["sources"]["b"]["password"] = "second-form"
    with pytest.raises(ConfigError):
        parse_config(document, environ=environ)
    assert set(secret_values(document, environ)) == expected | {"second-form"}


# --- the section registry -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Alerts:
    """A section declared only here: what issue 15's [notify] will look like."""

    url: SecretRef = secret(env_doc="env var holding the alert URL",
                            inline_doc="the alert URL itself (a secret)")
    on: tuple[str, ...] = setting("events that alert", kind="list", default=["fail"],
                                  choices=("fail", "warn", "new", "success"))
    timeout: float = setting("seconds per alert", kind="float", default=10.0, bounds=(1, 60))


@pytest.fixture
def registry() -> Iterator[None]:
    """The section registry as it was, after a test that registers its own section."""
    saved = dict(SECTIONS)
    yield
    SECTIONS.clear()
    SECTIONS.update(saved)


def test_a_section_is_a_dataclass_registered_once(registry: None) -> None:
    register_section("alerts", Alerts)
    document = {"sources": {"a": sftp_source()},
                "alerts": {"url": "https://alerts.example/token", "on": ["fail", "new"]}}
    config = parse_config(document)
    alerts = config.extra_sections["alerts"]
    assert isinstance(config, Config) and isinstance(alerts, Alerts)
    assert alerts.on == ("fail", "new") and alerts.timeout == 10.0
    assert alerts.url.config_key == "alerts.url"
    resolved = alerts.url.resolve()
    assert resolved is not None and resolved.reveal() == "https://alerts.example/token"
    problems = problems_of({"sources": {"a": sftp_source()},
                            "alerts": {"on": ["fail", "sometimes"], "timeout": 0,
                                       "url_env": "X", "url": "y", "tiemout": 3}})
    assert [str(problem) for problem in problems] == [
        "alerts.on: may hold fail, warn, new, success, not 'sometimes'",
        "alerts.timeout: must be between 1 and 60",
        "alerts.tiemout: unknown key (did you mean 'timeout'?)",
        "alerts.url: set only one of alerts.url_env, alerts.url",
    ]
    assert "\n[alerts]\n# url_env = \"\"" in starter_config()
    assert '# on = ["fail"]' in starter_config()
    assert redacted_document(document)["alerts"] == {"url": REDACTED, "on": ["fail", "new"]}
    assert "https://alerts.example/token" in secret_values(config)


# --- the shared ledger's keys -------------------------------------------------------------------


@pytest.mark.parametrize(("url", "problem"), [
    ("postgresql://rs@db.internal:5432/reportsync", None),
    ("postgres://rs@db.internal/reportsync?sslmode=verify-full&connect_timeout=5", None),
    ("postgresql://rs@h1:5432,h2:5433/reportsync", None),
    ("postgresql://rs@[::1]:5432/reportsync", None),
    ("mysql://rs@db.internal/reportsync", "must be a postgresql:// URL"),
    ("db.internal:5432", "must be a postgresql:// URL"),
    ("postgresql://rs:Secret-77@db.internal/reportsync", "must not hold a password"),
    ("postgresql://rs:@db.internal/reportsync", "must not hold a password"),
    ("postgresql://rs@db.internal/reportsync?PASSWORD=Secret-77", "must not hold a password"),
    ("postgresql://rs:Secret-77", "port that is not a number"),
])
def test_ledger_url_is_a_postgresql_url_without_a_password(url: str, problem: str | None) -> None:
    document = {"settings": {"ledger_url": url}, "sources": {"a": ftp_source()}}
    if problem is None:
        assert parse_config(document).settings.ledger_url == url
        return
    with pytest.raises(ConfigError) as refused:
        parse_config(document)
    assert refused.value.exit_code == ExitCode.CONFIG
    assert [p.key for p in refused.value.problems] == ["settings.ledger_url"]
    assert problem in str(refused.value.problems[0])
    assert "Secret-77" not in str(refused.value.to_dict()), "the password is not repeated"


def test_the_ledger_password_is_a_secret_by_schema(tmp_path: Path) -> None:
    document = {"settings": {"ledger_url": "postgresql://rs:Secret-77@db/ledger?password=Pw-88",
                             "ledger_password_env": "RS_LEDGER_PW"},
                "sources": {"a": ftp_source()}}
    redacted = redacted_document(document)["settings"]
    assert redacted["ledger_url"] == f"postgresql://rs:{REDACTED}@db/ledger?password={REDACTED}"
    assert redacted["ledger_password_env"] == "RS_LEDGER_PW"
    text = redacted_text(dump_toml(document))
    assert "Secret-77" not in text and "Pw-88" not in text
    clean = {"settings": {"ledger_url": "postgresql://rs@db/ledger"}}
    assert redacted_document(clean) == clean, "a URL without a password is shown as it is"
    document["settings"]["ledger_url"] = "postgresql://rs@db/ledger"
    config = parse_config(document, environ={"RS_LEDGER_PW": "ledger-password-value"})
    assert config.settings.ledger_password.env == "RS_LEDGER_PW"
    assert "ledger-password-value" in secret_values(config), "scrubbed from bundles"


def test_include_and_exclude_match_exactly_as_fnmatch_does() -> None:
    # SourceConfig.matches compiles each pattern list once (issue 13: it runs for every listed
    # name); what it selects must stay fnmatch's answer, pattern by pattern
    import fnmatch

    patterns = ["*", "*.pgp", "U*.xml.gpg", "[abc]?.csv", "[!x]*", "*.PGP", "a*b*c", "*[*]*",
                "report-202?-*.asc", "x.pgp"]
    names = ["a.pgp", "A.PGP", "U1.xml.gpg", "b1.csv", "x.pgp", "xy", "abc", "a*c", "ab\nc",
             "report-2026-1.asc", "report-20266-1.asc", ".pgp", "", "é.pgp", "x.pgp\n"]
    for include in ([patterns[0]], patterns[1:3], patterns[3:6], patterns[6:]):
        for exclude in ([], ["x*"], patterns[4:6]):
            source = parse_config({"sources": {"t": {
                "protocol": "ftp", "host": "h", "username": "u", "password_env": "RS_UNUSED",
                "remote_dir": "x", "download_dir": "/tmp/rs-d", "output_dir": "/tmp/rs-o",
                "include": include, "exclude": exclude}}}).sources["t"]
            for name in names:
                expected = (any(fnmatch.fnmatchcase(name, p) for p in include)
                            and not any(fnmatch.fnmatchcase(name, p) for p in exclude))
                assert source.matches(name) == expected, (include, exclude, name)
