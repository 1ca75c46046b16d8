"""The config schema's machinery: a key's metadata, the field helpers that attach it to a
dataclass attribute, the registry of sections, and the checks of one value (type, range, form).

A section of the file (``[settings]``, ``[retention]``, ``[sources.NAME]``) is a frozen dataclass
(``model.py``) whose fields carry their keys' metadata. Validation, the starter config ``init``
writes, the docs check, redaction and which keys apply to which protocol all read that metadata
through ``SECTIONS``: a key is declared once, in its field.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
import stat
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reportsync.config.paths import expand_path
from reportsync.errors import Problem
from reportsync.fsutil import printable

KeyKind = Literal["str", "int", "float", "bool", "path", "list", "choice"]
SecretPart = Literal["env", "file", "inline"]
Form = Callable[[Any], "str | None"]
"""An extra check of a value already of the right kind: the problem, or None when it is fine."""

KEYS_METADATA = "reportsync.config.keys"
REDACTED = "<redacted>"
# characters no string or path in a config may hold: they end a line in a log, a server
# command (FTP) or a path (NUL)
LINE_BREAKING = ("\0", "\r", "\n")

_KIND_TEXT = {"str": "string", "int": "whole number", "float": "number", "bool": "boolean",
              "path": "path", "list": "list of strings"}
_SECRET_SUFFIX: dict[SecretPart, str] = {"env": "_env", "file": "_file", "inline": ""}


@dataclass(frozen=True)
class Key:
    """One config key: its kind, default, the comment the starter config shows, and its rules."""

    name: str
    kind: KeyKind
    default: Any  # as TOML has it (a list, not a tuple); None: not set
    doc: str
    choices: tuple[str, ...] = ()  # a choice's values; for a list, what each item may be
    example: Any = None  # shown in the starter config instead of the default
    protocols: tuple[str, ...] = ()  # the protocols it applies to; () = every one
    elsewhere: Literal["refused", "ignored"] = "refused"  # set for another protocol
    required: bool = False
    secret: bool = False  # the value is itself a secret (an inline password): never shown
    bounds: tuple[float, float] | None = None  # inclusive range of a number
    form: Form | None = field(default=None, compare=False, repr=False)
    attribute: str = ""  # the dataclass attribute this key fills
    part: SecretPart | None = None  # for the keys that together name one secret (a SecretRef)
    # the attribute's value when the key is not set, from the table's other values (the port
    # from the protocol, a folder from the platform)
    default_of: Callable[[Mapping[str, Any]], Any] | None = field(default=None, compare=False,
                                                                  repr=False)
    normalize: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)
    # a secret that holds several (Apprise URLs): its items, each scrubbed on its own as well
    items: Callable[[str], list[str]] | None = field(default=None, compare=False, repr=False)
    # what a redacted config shows of a value that is not a secret but may carry one by mistake
    # (a password written into a URL): the value with that part replaced
    redact: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)

    def applies_to(self, protocol: str) -> bool:
        return not self.protocols or protocol in self.protocols

    @property
    def type_text(self) -> str:
        """The type as docs/configuration.md shows it: ``whole number 0-20``, ``"keep" | ...``."""
        choices = " \\| ".join(f'`"{choice}"`' for choice in self.choices)
        if self.kind == "choice":
            return choices
        if self.kind == "list" and self.choices:
            return f"list of {choices}"
        text = _KIND_TEXT[self.kind]
        if self.bounds is not None:
            text += f" {_number(self.bounds[0])}\u2013{_number(self.bounds[1])}"  # an en dash
        return text

    @property
    def protocols_text(self) -> str:
        """Which protocols it applies to, as the docs' table starts the cell: ``sftp only``."""
        if not self.protocols:
            return "all"
        return ", ".join(self.protocols) + (" only" if self.elsewhere == "refused" else "")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def setting(
    doc: str,
    *,
    kind: KeyKind | None = None,
    default: Any = None,
    choices: tuple[str, ...] = (),
    example: Any = None,
    protocols: tuple[str, ...] = (),
    elsewhere: Literal["refused", "ignored"] = "refused",
    required: bool = False,
    bounds: tuple[float, float] | None = None,
    form: Form | None = None,
    default_of: Callable[[Mapping[str, Any]], Any] | None = None,
    normalize: Callable[[Any], Any] | None = None,
    redact: Callable[[Any], Any] | None = None,
) -> Any:
    """A dataclass field that is one config key (named like the field).

    The field gets ``default`` as its dataclass default unless the key is required or its value
    is computed (``default_of``): then the loader always passes it.
    """
    if kind is None:  # choices alone: one of them
        if not choices:
            raise TypeError("setting() needs a kind (or choices)")
        kind = "choice"
    key = Key(name="", kind=kind, default=default, doc=doc, choices=choices, example=example,
              protocols=protocols, elsewhere=elsewhere, required=required, bounds=bounds,
              form=form, default_of=default_of, normalize=normalize, redact=redact)
    metadata = {KEYS_METADATA: (key,)}
    if required or default_of is not None:
        return field(metadata=metadata)
    return field(default=_frozen(default), metadata=metadata)


def secret(
    *,
    env_doc: str,
    file_doc: str = "or: a file (0600) holding it",
    inline_doc: str | None = None,
    env_example: str | None = None,
    file_example: str | None = None,
    protocols: tuple[str, ...] = (),
    items: Callable[[str], list[str]] | None = None,
) -> Any:
    """A dataclass field (a ``SecretRef``) filled from the keys ``<name>_env`` (a variable's
    name), ``<name>_file`` (a file) and, with ``inline_doc``, ``<name>`` (the secret itself,
    accepted only in a private file). At most one of them may be set. ``items``: how a secret
    that holds several (a list of URLs) splits into them, so each is scrubbed on its own."""
    keys = [Key(name="", kind="str", default=None, doc=env_doc, example=env_example,
                protocols=protocols, part="env", items=items),
            Key(name="", kind="path", default=None, doc=file_doc, example=file_example,
                protocols=protocols, part="file", items=items)]
    if inline_doc is not None:
        keys.append(Key(name="", kind="str", default=None, doc=inline_doc, protocols=protocols,
                        secret=True, part="inline", items=items))
    return field(metadata={KEYS_METADATA: tuple(keys)})


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def field_keys(model: type[Any]) -> Iterator[tuple[dataclasses.Field[Any], tuple[Key, ...]]]:
    """Each field of ``model`` that holds config keys, with its keys (named), in field order."""
    for model_field in dataclasses.fields(model):
        declared: tuple[Key, ...] = model_field.metadata.get(KEYS_METADATA, ())
        if declared:
            yield model_field, tuple(
                dataclasses.replace(key, attribute=model_field.name,
                                    name=model_field.name + _SECRET_SUFFIX[key.part]
                                    if key.part else model_field.name)
                for key in declared)


# --- sections ------------------------------------------------------------------------------------


@dataclass
class TableView:
    """One table of the file while it is checked: what a section's rules look at."""

    where: str  # "settings", "sources.ibkr"
    values: dict[str, Any]  # every key: the file's (valid) value, else the default
    present: set[str]  # the keys the file sets, valid or not
    problems: list[Problem]
    file_is_private: bool
    config_path: Path | None

    def problem(self, key: str, message: str) -> None:
        self.problems.append(Problem(f"{self.where}.{key}", message))


Check = Callable[[TableView], None]


@dataclass(frozen=True)
class Section:
    """A section of the config file and the dataclass it becomes."""

    name: str  # as in the file: "settings"
    model: type[Any]
    keys: tuple[Key, ...]
    many: bool = False  # [name.NAME] tables, one model each, in file order (sources)
    attribute: str = ""  # the Config attribute that holds it ("" = Config.extra_sections)
    variant_key: str | None = None  # "protocol": the key ``Key.protocols`` refers to
    checks: tuple[Check, ...] = ()  # rules across keys, run once the variant is known
    removed: Mapping[str, str] = field(default_factory=dict)  # key of old versions → what now
    table_name: tuple[re.Pattern[str], str] | None = None  # NAME's rule and the problem text
    # a ``many`` section without any table: the problem, and its remedy when it is the only one
    needed: tuple[str, str] | None = None
    # an optional feature: the starter config shows the whole section commented out, after these
    # comment lines, with each key's example (rather than a table of defaults)
    starter_note: tuple[str, ...] = ()

    @property
    def doc_heading(self) -> str:
        """The heading of its part of docs/configuration.md."""
        return f"`[{self.name}.NAME]`" if self.many else f"`[{self.name}]`"

    def key(self, name: str) -> Key | None:
        return next((key for key in self.keys if key.name == name), None)

    def secrets(self) -> list[tuple[str, dict[SecretPart, Key]]]:
        """The attributes that are secrets (SecretRef), with the keys that name each."""
        return [(model_field.name, {key.part: key for key in keys if key.part})
                for model_field, keys in field_keys(self.model) if keys[0].part]


SECTIONS: dict[str, Section] = {}
"""Every section, in the order the starter config and the docs show them."""


def make_section(name: str, model: type[Any], **options: Any) -> Section:
    keys = tuple(key for _, field_keys_ in field_keys(model) for key in field_keys_)
    return Section(name=name, model=model, keys=keys, **options)


def register_section(name: str, model: type[Any], **options: Any) -> Section:
    """Declare a section: ``model`` is a frozen dataclass whose fields are ``setting()`` and
    ``secret()`` fields. Options are ``Section``'s (``attribute`` names the Config field)."""
    section = make_section(name, model, **options)
    SECTIONS[name] = section
    return section


# --- one value -------------------------------------------------------------------------------------


class Invalid(ValueError):
    """A value that breaks its key's rule; the message is the problem."""


def check_value(key: Key, raw: Any, base: Path | None, environ: Mapping[str, str]) -> Any:
    """The value ``raw`` (from the file) for ``key``, converted; Invalid when it breaks a rule."""
    value = _converted(key, raw, base, environ)
    if key.form is not None:
        problem = key.form(value)
        if problem is not None:
            raise Invalid(problem)
    return key.normalize(value) if key.normalize is not None else value


def _converted(key: Key, raw: Any, base: Path | None, environ: Mapping[str, str]) -> Any:
    kind = key.kind
    if kind in ("str", "choice"):
        if not isinstance(raw, str):
            raise Invalid(f"must be a string, not {toml_type(raw)}")
        _one_line(raw)
        if kind == "choice" and raw not in key.choices:
            raise Invalid(f"must be one of {', '.join(key.choices)}, not {printable_value(raw)}")
        return raw
    if kind == "path":
        if not isinstance(raw, str) or not raw:
            raise Invalid("must be a non-empty path string")
        _one_line(raw)
        path = expand_path(raw, base, environ)
        _one_line(str(path), " (after expanding variables)")
        return path
    if kind == "bool":
        if not isinstance(raw, bool):
            raise Invalid(f"must be true or false, not {toml_type(raw)}")
        return raw
    if kind == "int":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise Invalid(f"must be a whole number, not {toml_type(raw)}")
        _in_bounds(key, raw)
        return raw
    if kind == "float":
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise Invalid(f"must be a number, not {toml_type(raw)}")
        if not math.isfinite(raw):
            raise Invalid(f"must be a finite number, not {raw}")
        _in_bounds(key, raw)
        return float(raw)
    if kind == "list":
        if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
            raise Invalid("must be a list of strings")
        for item in raw:  # the line rule first: a choice's problem line quotes the value
            _one_line(item)
        for item in raw:
            if key.choices and item not in key.choices:
                raise Invalid(f"may hold {', '.join(key.choices)}, not {printable_value(item)}")
        return tuple(raw)
    raise AssertionError(f"unknown schema kind {kind}")  # pragma: no cover


def _one_line(text: str, where: str = "") -> None:
    if any(char in text for char in LINE_BREAKING):
        raise Invalid(f"must not contain a NUL, CR or LF character{where}")


def _in_bounds(key: Key, value: float) -> None:
    if key.bounds is not None and not key.bounds[0] <= value <= key.bounds[1]:
        low, high = key.bounds
        raise Invalid(f"must be between {_number(low)} and {_number(high)}")


def toml_type(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def printable_value(text: str, limit: int = 80) -> str:
    """A value quoted for a message: control characters escaped, a long one cut."""
    return printable(text if len(text) <= limit else text[:limit - 3] + "...")


def did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- forms ---------------------------------------------------------------------------------------

_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def dns_name_or_ip(host: str) -> str | None:
    """A host name resolvers accept (IDNA, labels of 1 to 63 characters, at most 253 in all) or an
    IPv4/IPv6 address; what getaddrinfo would choke on is refused here, with the key."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    refused = f"must be a DNS name or an IP address, not {printable_value(host)}"
    name = host[:-1] if host.endswith(".") else host  # a fully qualified name's final dot
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return f"{refused}: a label (the text between dots) is empty or longer than 63 characters"
    if not ascii_name or len(ascii_name) > 253:
        return f"{refused}: a name has 1 to 253 characters"
    for label in ascii_name.split("."):
        if not _DNS_LABEL.fullmatch(label):
            return (f"{refused}: each label holds letters, digits, '-' and '_' only, "
                    "1 to 63 of them, and does not start or end with '-'")
    return None


def ssh_fingerprint(value: str) -> str | None:
    if re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", value):
        return None
    return "must look like SHA256:<43 base64 characters> (as `ssh-keygen -l` prints)"


def pgp_fingerprint_or_empty(value: str) -> str | None:
    if not value or re.fullmatch(r"[0-9A-Fa-f]{16,40}", value):
        return None
    return "must be a key fingerprint (hex)"


POSTGRES_SCHEMES = ("postgresql", "postgres")
URL_PASSWORD_REFUSED = ("must not hold a password (it is not repeated here): put it in "
                        "ledger_password_env or ledger_password_file, or in libpq's ~/.pgpass")


def postgres_url(url: str) -> str | None:
    """A libpq connection URL without a password: ``postgresql://USER@HOST:PORT/DBNAME``.

    A password inside it would show wherever the URL does (a process list, a log, a support
    bundle), so it is refused, without repeating any part of the URL that could be it.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in POSTGRES_SCHEMES:
        return "must be a postgresql:// URL (postgresql://USER@HOST:PORT/DBNAME)"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        return URL_PASSWORD_REFUSED
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    if any(name.lower() == "password" for name in query):
        return URL_PASSWORD_REFUSED
    for host in hosts.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        if ":" in port and not port.rpartition(":")[2].isdigit():
            # ``user:secret`` without an ``@``: libpq would read the secret as a port and say so
            return "has a port that is not a number (a password does not belong in the URL)"
    return None


def url_without_password(url: Any) -> Any:
    """``url`` with a password written into it replaced by ``<redacted>`` (for a bundle's copy
    of a config that was refused for it); a value that is not a string shows nothing."""
    if not isinstance(url, str):
        return REDACTED
    if postgres_url(url) != URL_PASSWORD_REFUSED and "password" not in url.lower():
        return url
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{hosts}" if at and ":" in userinfo \
        else parts.netloc
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", rf"\1\2{REDACTED}", parts.query)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def not_empty(value: tuple[str, ...]) -> str | None:
    return None if value else "is empty: no file would ever be fetched"


def folder(path: Path) -> str | None:
    """A folder reportsync creates when needed: what is there must be a folder, and the nearest
    existing parent too (a file in the way fails every command later, without the key)."""
    for candidate in (path, *path.parents):
        try:
            mode = candidate.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return None  # cannot look: the command that uses it reports what it finds
        if stat.S_ISDIR(mode):
            return None
        what = "a file, not a folder" if stat.S_ISREG(mode) else "not a folder"
        if candidate == path:
            return f"{path} is {what}"
        return f"{path} cannot be created: {candidate} is {what}"
    return None
