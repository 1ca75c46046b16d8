"""The docs and the starter config cannot drift from the code.

- Every key of the schema (every registered section, config.SECTIONS) is in the starter config
  `init` writes, for every provider, and in docs/configuration.md, in its section, with the
  schema's type, range, default and (for sources) the protocols it applies to; the docs list no
  key the schema does not have.
- Every command and option is in docs/commands.md, and every JSON example there has the shape the
  command really prints (run against a real sshd).
- The README shows the two set-up commands CI runs, and links every page of docs/.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from reportsync.cli import cli
from reportsync.config import (
    PROVIDER_PRESETS,
    SECTIONS,
    SOURCE_KEYS,
    Key,
    load_config,
    parse_config,
    starter_config,
    toml_literal,
)
from reportsync.errors import ExitCode
from tests.servers import LocalServer
from tests.support import REPO_ROOT, PgpIdentity, run_cli_inprocess
from tests.test_fetch_e2e import Workspace, report_xml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DOCS = REPO_ROOT / "docs"
README = REPO_ROOT / "README.md"
SCHEMA: dict[str, tuple[Key, ...]] = {name: section.keys for name, section in SECTIONS.items()}
PROVIDERS = [None, *PROVIDER_PRESETS]


def starter_keys(text: str) -> dict[str, list[str]]:
    """Section → the keys the starter config shows in it (active or commented out)."""
    shown: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        header = re.fullmatch(r"(?:# )?\[(\w+)(?:\..+)?\]", line)  # a section off by default too
        if header:
            section = header.group(1)
            shown.setdefault(section, [])
            continue
        key = re.match(r"^(?:# )?([a-z_]+) = ", line)
        if key and section:
            shown[section].append(key.group(1))
    return shown


@pytest.mark.parametrize("provider", PROVIDERS)
def test_starter_config_shows_every_schema_key_and_validates(provider: str | None) -> None:
    text = starter_config("broker", provider)
    assert starter_keys(text) == {section: [key.name for key in keys]
                                  for section, keys in SCHEMA.items()}, "every key, in schema order"
    config = parse_config(tomllib.loads(text))
    source = config.sources["broker"]
    if provider is not None:
        preset = PROVIDER_PRESETS[provider]
        for name in ("host", "port", "protocol", "remote_dir"):
            assert getattr(source, name) == preset.values[name]
        assert list(source.include) == list(preset.values["include"])


def test_ibkr_presets_are_the_reference_provider() -> None:
    sftp = parse_config(tomllib.loads(starter_config("ibkr", "ibkr-sftp"))).sources["ibkr"]
    assert (sftp.protocol, sftp.host, sftp.port, sftp.remote_dir) == (
        "sftp", "xfer.interactivebrokers.com", 32, "outgoing")
    assert sftp.key_file is not None and sftp.known_hosts is not None
    assert {"*.pgp", "*.gpg", "*.asc", "*.xml", "*.csv"} == set(sftp.include)
    ftp = parse_config(tomllib.loads(starter_config("ibkr", "ibkr-ftp"))).sources["ibkr"]
    assert (ftp.protocol, ftp.host, ftp.port, ftp.passive, ftp.remote_dir) == (
        "ftp", "ftp2.interactivebrokers.com", 21, True, "outgoing")
    assert ftp.password.env == "IBKR_FTP_PASSWORD" and ftp.key_file is None
    assert set(ftp.include) == {"*.pgp", "*.gpg", "*.asc"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_init_writes_a_private_config_that_loads(provider: str | None, tmp_path: Path) -> None:
    path = tmp_path / "conf" / "config.toml"
    args = ["--config", str(path), "init", "--source-name", "acct-1", "--username", "acme"]
    if provider:
        args += ["--provider", provider]
    result = run_cli_inprocess(*args)
    assert result.exit_code == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    config = load_config(path)
    assert list(config.sources) == ["acct-1"] and config.sources["acct-1"].username == "acme"
    assert set(starter_keys(path.read_text())["sources"]) == {key.name for key in SOURCE_KEYS}
    again = run_cli_inprocess(*args)
    assert again.exit_code == 2 and "not overwriting" in again.stderr
    assert run_cli_inprocess(*args, "--force").exit_code == 0


def test_init_refuses_a_bad_source_name(tmp_path: Path) -> None:
    result = run_cli_inprocess("--config", str(tmp_path / "c.toml"), "init", "--source-name", "a b")
    assert result.exit_code == 2 and "invalid source name" in result.stderr
    assert not (tmp_path / "c.toml").exists()


def markdown_sections(text: str, level: str = "## ") -> dict[str, str]:
    """Heading (without the #s) → the text up to the next heading of the same level."""
    sections: dict[str, str] = {}
    title = ""
    for line in text.splitlines():
        if line.startswith(level):
            title = line[len(level):].strip()
            sections[title] = ""
        elif title:
            sections[title] += line + "\n"
    return sections


def documented_keys(section_text: str) -> dict[str, list[str]]:
    """Key → the cells after its name in the section's table (type, default, ...)."""
    rows = re.findall(r"^\| `([a-z_]+)` \|(.*)\|$", section_text, flags=re.MULTILINE)
    return {key: [cell.strip() for cell in re.split(r"(?<!\\)\|", rest)] for key, rest in rows}


def test_configuration_md_documents_every_schema_key() -> None:
    sections = markdown_sections((DOCS / "configuration.md").read_text())
    for name, section in SECTIONS.items():
        documented = documented_keys(sections[section.doc_heading])
        missing = [key.name for key in section.keys if key.name not in documented]
        assert not missing, f"docs/configuration.md [{name}] lacks {missing}"
        extra = sorted(set(documented) - {key.name for key in section.keys})
        assert not extra, f"docs/configuration.md [{name}] documents keys the schema lacks: {extra}"
        for key in section.keys:
            cells = documented[key.name]
            where = f"docs/configuration.md {name}.{key.name}"
            assert cells[0] == key.type_text, f"{where}: type {cells[0]!r}, schema {key.type_text!r}"
            if key.required:
                assert "**required**" in cells[1], f"{where}: required"
            elif key.default is None:
                assert key.default_of is not None or cells[1].startswith("none"), \
                    f"{where}: no default"
            else:
                assert cells[1].startswith(f"`{toml_literal(key.default)}`"), \
                    f"{where}: default {cells[1]!r}, schema {toml_literal(key.default)}"
            if section.variant_key is not None:
                assert cells[2].startswith(key.protocols_text), \
                    f"{where}: protocols {cells[2]!r}, schema {key.protocols_text!r}"


def all_commands(group: click.Group = cli, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found += all_commands(command, path + " ")
        else:
            found.append((path, command))
    return found


def option_names(command: click.Command) -> list[str]:
    names: list[str] = []
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            names += [name for name in param.opts if name.startswith("--")]
    return names


def test_commands_md_documents_every_command_and_option() -> None:
    text = (DOCS / "commands.md").read_text()
    sections = markdown_sections(text)
    for option in option_names(cli):
        assert f"`{option}" in text, f"global option {option}"
    for path, command in all_commands():
        assert f"`{path}`" in sections, f"docs/commands.md has no section for {path}"
        body = sections[f"`{path}`"]
        for option in option_names(command):
            if option == "--help":
                continue
            assert option in body, f"{path} {option} is not documented"
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \|", text, flags=re.MULTILINE), f"exit code {code}"


CHECKED_ELSEWHERE = {"ledger migrate"}  # needs PostgreSQL: tests/test_ledger_migrate.py


def documented_json() -> dict[str, Any]:
    text = (DOCS / "commands.md").read_text()
    blocks = re.findall(r"<!-- json: ([a-z -]+) -->\n```json\n(.*?)\n```", text, flags=re.DOTALL)
    return {name: json.loads(body) for name, body in blocks}


def same_shape(documented: Any, actual: Any, where: str) -> None:
    """Objects have the same keys (recursively); lists compare their first items; scalars their
    JSON type. ``null`` on either side matches anything (the example or the run had none)."""
    if documented is None or actual is None:
        return
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{where}: not an object"
        assert sorted(documented) == sorted(actual), f"{where}: keys differ"
        for key, value in documented.items():
            same_shape(value, actual[key], f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list), f"{where}: not a list"
        if documented and actual:
            same_shape(documented[0], actual[0], f"{where}[0]")
    else:
        def kind(value: Any) -> str:
            return "bool" if isinstance(value, bool) else \
                "number" if isinstance(value, (int, float)) else type(value).__name__
        assert kind(documented) == kind(actual), f"{where}: {kind(documented)} vs {kind(actual)}"


@pytest.fixture
def ws(tmp_path: Path, pgp_identity: PgpIdentity, sftp_server: LocalServer) -> Workspace:
    workspace = Workspace(tmp_path, pgp_identity, sftp_server)
    workspace.write_config()
    return workspace


def test_documented_json_has_the_shape_each_command_prints(ws: Workspace) -> None:
    documented = documented_json()
    ws.put_report("U1.Activity.20261102.xml.pgp", report_xml("U1", "20261102"))
    ws.put_report("U1.Activity.20260720.xml.pgp", report_xml("U1", "20260720"), age_days=95)
    config = ["--config", str(ws.config_path), "--json"]
    root = ws.root
    env = {"RS_BACKUP_PASS": "a long backup passphrase"}
    runs: dict[str, list[str]] = {
        "error": ["--config", str(root / "missing.toml"), "--json", "status"],
        "init": ["--config", str(root / "new.toml"), "--json", "init", "--provider", "ibkr-sftp"],
        "fetch": [*config, "fetch"],
        "retention": [*config, "retention", "--dry-run"],
        "status": [*config, "status"],
        "verify": [*config, "verify"],
        "doctor": [*config, "doctor"],
        "schedule": [*config, "schedule"],
        "keys pgp generate": [*config, "keys", "pgp", "generate", "--name", "Acme", "--email",
                              "new@example.com", "--algo", "ed25519", "--no-passphrase"],
        "keys pgp list": [*config, "keys", "pgp", "list"],
        "keys pgp export-public": [*config, "keys", "pgp", "export-public", "--key",
                                   ws.identity.fingerprint, "--out", str(root / "pub.asc")],
        "keys pgp import": [*config, "keys", "pgp", "import", str(root / "pub.asc")],
        "keys ssh generate": ["--json", "keys", "ssh", "generate", "--out", str(root / "id"),
                              "--no-passphrase"],
        "keys ssh show": ["--json", "keys", "ssh", "show", str(root / "id.pub")],
        "keys backup": [*config, "keys", "backup", "--out", str(root / "k.rsbak"),
                        "--passphrase-env", "RS_BACKUP_PASS"],
        "keys verify-backup": ["--json", "keys", "verify-backup", str(root / "k.rsbak"),
                               "--passphrase-env", "RS_BACKUP_PASS"],
        "keys restore": [*config, "keys", "restore", str(root / "k.rsbak"), "--passphrase-env",
                         "RS_BACKUP_PASS"],
    }
    assert sorted(set(documented) - CHECKED_ELSEWHERE) == sorted(runs), \
        "a JSON example for each of these, no more"
    for name, args in runs.items():
        result = run_cli_inprocess(*args, env=env)
        payload = json.loads(result.stdout)
        assert payload["version"] == 1 and payload["exit_code"] == result.exit_code, name
        if name != "error":
            assert result.exit_code == 0, (name, result.stderr)
            assert payload["command"] == name
        same_shape(documented[name], payload, name)


def documented_finding_ids() -> list[str]:
    """The ids in the first column of troubleshooting.md's finding tables."""
    text = (DOCS / "troubleshooting.md").read_text()
    section = text[text.index("## Checks and their findings"):]
    return re.findall(r"^\| `([a-z][a-z0-9-]*(?:\.[a-z0-9-]+)?)` \|", section, flags=re.MULTILINE)


def test_troubleshooting_md_documents_every_doctor_finding_id_and_no_other() -> None:
    """docs and doctor agree by construction: every id the code can give is documented (with
    its remedy), every documented id is one the code gives (issue 14)."""
    from reportsync.doctor.findings import DoctorFinding
    from reportsync.transports.findings import StepFinding

    code = [finding.value for finding in (*DoctorFinding, *StepFinding)]
    assert len(code) == len(set(code)), "an id is defined twice"
    documented = documented_finding_ids()
    assert len(documented) == len(set(documented)), "an id is documented twice"
    assert sorted(set(code) - set(documented)) == [], "ids the code gives that are not documented"
    assert sorted(set(documented) - set(code)) == [], "documented ids the code does not know"
    # ... and the code gives each one: every member is used outside the module defining it
    for enum, folder in ((DoctorFinding, "doctor"), (StepFinding, "transports")):
        users = "".join(path.read_text() for path in (REPO_ROOT / "reportsync" / folder).rglob("*.py")
                        if path.name != "findings.py")
        unused = [member.name for member in enum if f"{enum.__name__}.{member.name}" not in users]
        assert unused == [], f"{enum.__name__} members no check gives"


def markdown_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md", "docs/commands.md",
                                  "docs/monitoring.md"])
def test_links_resolve(page: str) -> None:
    path = REPO_ROOT / page
    for link in markdown_links(path):
        if re.match(r"^[a-z]+:", link):
            continue  # a web address
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        assert file.exists(), f"{page}: broken link {link}"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page}: no heading for #{anchor} in {file.name}"


def test_readme_shows_the_set_up_commands_ci_runs_and_links_every_doc() -> None:
    readme = README.read_text()
    assert "./scripts/demo" in readme and "./scripts/test" in readme
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    for script in ("scripts/demo", "scripts/test"):
        assert re.search(rf"^bash {script}\b", ci, flags=re.MULTILINE), f"CI runs {script}"
    for script in ("scripts/demo", "scripts/test"):
        assert os.access(REPO_ROOT / script, os.X_OK), f"{script} is executable as the README shows"
    linked = {link.partition("#")[0] for link in markdown_links(README)}
    for page in sorted(DOCS.glob("*.md")):
        assert f"docs/{page.name}" in linked, f"README does not link docs/{page.name}"


def test_the_docs_stand_alone_without_the_steering_folder() -> None:
    # A clone has no ../shared/: the README and docs/ must not send a reader there.
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        text = page.read_text()
        assert "../shared" not in text and "SPEC.md" not in text, page.name
