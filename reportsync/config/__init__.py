"""The config: TOML → frozen dataclasses, every problem reported at once, from one schema.

- ``model``: the dataclasses others read (``Config``, ``Settings``, ``RetentionPolicy``,
  ``SourceConfig``, ``NotifySettings``, ``SecretRef``); each field declares its key, and the
  sections are registered.
- ``schema``: a key's metadata (``Key``), the field helpers (``setting``, ``secret``), the section
  registry (``SECTIONS``, ``register_section``) and the checks of one value.
- ``loader``: ``load_config`` / ``parse_config``, generic over the registered sections.
- ``starter``: the commented starter config ``init`` writes, and the providers' presets.
- ``redact``: the config with its secrets redacted, and every secret it resolves to.
- ``paths``: where the config and the folders are, and how ``~`` and ``$VARS`` expand.

To add a key: a field in its section's dataclass, made with ``setting()`` (or ``secret()`` for
the ``*_env``/``*_file`` keys of a secret). To add a section: a frozen dataclass of such fields,
``register_section(name, Model, attribute=...)``, and (for typed access) a ``Config`` field named
``attribute``. Validation, ``init``, the docs check and redaction follow from the declaration.
"""

from reportsync.config.loader import load_config, parse_config
from reportsync.config.model import (
    DEFAULT_PORTS,
    NO_SOURCE,
    NO_SOURCE_REMEDY,
    NOTIFY_EVENTS,
    PROTOCOLS,
    REQUIRED_SOURCE_KEYS,
    RETENTION_KEYS,
    SETTINGS_KEYS,
    SOURCE_KEYS,
    SOURCE_NAME_PATTERN,
    Config,
    NotifySettings,
    RetentionPolicy,
    Secret,
    SecretRef,
    Settings,
    SourceConfig,
    split_urls,
)
from reportsync.config.paths import (
    APP_NAME,
    CONFIG_ENV,
    default_config_path,
    default_gnupg_home,
    default_state_dir,
    expand_path,
)
from reportsync.config.redact import redacted_document, redacted_text, secret_refs, secret_values
from reportsync.config.schema import (
    REDACTED,
    SECTIONS,
    Key,
    Section,
    TableView,
    register_section,
    secret,
    setting,
)
from reportsync.config.starter import (
    GENERIC_PRESET,
    PROVIDER_PRESETS,
    USERNAME_PLACEHOLDER,
    ProviderPreset,
    starter_config,
)
from reportsync.config.tomlio import dump_toml, toml_literal
from reportsync.errors import ConfigError, Problem
from reportsync.units import MAX_PLAINTEXT_DEFAULT  # re-exported: the config's name for it

__all__ = [
    "APP_NAME",
    "CONFIG_ENV",
    "DEFAULT_PORTS",
    "GENERIC_PRESET",
    "MAX_PLAINTEXT_DEFAULT",
    "NOTIFY_EVENTS",
    "NO_SOURCE",
    "NO_SOURCE_REMEDY",
    "PROTOCOLS",
    "PROVIDER_PRESETS",
    "REDACTED",
    "REQUIRED_SOURCE_KEYS",
    "RETENTION_KEYS",
    "SECTIONS",
    "SETTINGS_KEYS",
    "SOURCE_KEYS",
    "SOURCE_NAME_PATTERN",
    "USERNAME_PLACEHOLDER",
    "Config",
    "ConfigError",
    "Key",
    "NotifySettings",
    "Problem",
    "ProviderPreset",
    "RetentionPolicy",
    "Secret",
    "SecretRef",
    "Section",
    "Settings",
    "SourceConfig",
    "TableView",
    "default_config_path",
    "default_gnupg_home",
    "default_state_dir",
    "dump_toml",
    "expand_path",
    "load_config",
    "parse_config",
    "redacted_document",
    "redacted_text",
    "register_section",
    "secret",
    "secret_refs",
    "secret_values",
    "setting",
    "split_urls",
    "starter_config",
    "toml_literal",
]
