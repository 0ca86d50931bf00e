"""Kafka's ``sasl.jaas.config`` values: ``<LoginModule class> <flag> key="value" ...;``.

Only what a broker reads from them is used: PLAIN users (``user_alice="alice-secret"`` options of
``PlainLoginModule``) and the unsecured OAUTHBEARER validator's options. Errors name the problem and never
quote a value, since values are passwords.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.config import ConfigError

FLAGS = ("required", "requisite", "sufficient", "optional")
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
_USER_PREFIX = "user_"


@dataclass(frozen=True)
class JaasEntry:
    """One login module entry."""

    module: str
    flag: str
    options: dict[str, str] = field(default_factory=dict, repr=False)


def parse_jaas_config(text: str, setting: str) -> list[JaasEntry]:
    """The entries of a JAAS configuration value (each ends with ``;``)."""
    entries: list[JaasEntry] = []
    pos, end = 0, len(text)
    while True:
        pos = _skip_space(text, pos)
        if pos >= end:
            break
        module, pos = _word(text, pos)
        pos = _skip_space(text, pos)
        flag, pos = _word(text, pos)
        if not module or flag.lower() not in FLAGS:
            raise ConfigError(f"setting {setting!r}: expected '<LoginModule class> required key=\"value\" ...;'"
                              f" (the flag is one of {', '.join(FLAGS)})")
        options: dict[str, str] = {}
        while True:
            pos = _skip_space(text, pos)
            if pos >= end:
                raise ConfigError(f"setting {setting!r}: the entry for {module} does not end with ';'")
            if text[pos] == ";":
                pos += 1
                break
            key, pos = _word(text, pos, stop="=;")
            if not key or pos >= end or text[pos] != "=":
                raise ConfigError(f"setting {setting!r}: expected key=value in the options of {module}")
            value, pos = _value(text, pos + 1, setting, key)
            options[key] = value
        entries.append(JaasEntry(module, flag.lower(), options))
    if not entries:
        raise ConfigError(f"setting {setting!r} is empty")
    return entries


def plain_users(entries: list[JaasEntry]) -> dict[str, str]:
    """PLAIN user names and passwords from ``user_<name>="<password>"`` options."""
    users: dict[str, str] = {}
    for entry in entries:
        for key, value in entry.options.items():
            if key.startswith(_USER_PREFIX) and len(key) > len(_USER_PREFIX):
                users[key[len(_USER_PREFIX):]] = value
    return users


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _word(text: str, pos: int, stop: str = ";") -> tuple[str, int]:
    start = pos
    while pos < len(text) and not text[pos].isspace() and text[pos] not in stop:
        pos += 1
    return text[start:pos], pos


def _value(text: str, pos: int, setting: str, key: str) -> tuple[str, int]:
    if pos < len(text) and text[pos] == '"':
        out = []
        pos += 1
        while pos < len(text):
            ch = text[pos]
            if ch == "\\" and pos + 1 < len(text):
                out.append(text[pos + 1])
                pos += 2
                continue
            if ch == '"':
                return "".join(out), pos + 1
            out.append(ch)
            pos += 1
        raise ConfigError(f"setting {setting!r}: the quoted value of {key} is not closed")
    value, pos = _word(text, pos)
    return value, pos
