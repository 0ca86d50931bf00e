"""Principals: who a connection is, as Kafka names them (``User:alice``).

A PLAINTEXT or SSL connection without a client certificate is ``User:ANONYMOUS``; a SASL connection is the
user it authenticated as; an SSL connection with a client certificate is its subject's distinguished name
in RFC 2253 form (``CN=app,OU=eng,O=Example,C=US``, most specific first, as Java's X500Principal writes it)
mapped through ``ssl.principal.mapping.rules``: ``RULE:pattern/replacement/[LU]`` entries (Java regex
syntax for what Python's ``re`` shares; ``$1`` in the replacement) and ``DEFAULT`` (the name unchanged),
the first whose pattern matches the whole name winning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from broker.config import ConfigError

USER_TYPE = "User"
ANONYMOUS = "User:ANONYMOUS"

# Attribute keywords Java's RFC 2253 output uses, by the names Python's ssl module reports.
_KEYWORDS = {"commonName": "CN", "countryName": "C", "localityName": "L", "stateOrProvinceName": "ST",
             "organizationName": "O", "organizationalUnitName": "OU", "streetAddress": "STREET",
             "domainComponent": "DC", "userId": "UID"}
_SPECIAL = set(',+"\\<>;=')


def user_principal(name: str) -> str:
    return f"{USER_TYPE}:{name}"


def distinguished_name(cert: dict[str, Any]) -> str:
    """The certificate subject as an RFC 2253 string (last RDN first, multi-valued RDNs joined by +)."""
    rdns = cert.get("subject", ())
    parts = []
    for rdn in reversed(rdns):
        parts.append("+".join(f"{_KEYWORDS.get(attr, attr)}={_escape(str(value))}" for attr, value in rdn))
    return ",".join(parts)


def _escape(value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        if ch in _SPECIAL or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str] | None  # None: DEFAULT
    replacement: str = ""
    case: str = ""

    def apply(self, dn: str) -> str | None:
        if self.pattern is None:
            return dn
        match = self.pattern.fullmatch(dn)
        if match is None:
            return None
        result = match.expand(self.replacement)
        return result.lower() if self.case == "L" else result.upper() if self.case == "U" else result


class PrincipalMapper:
    """``ssl.principal.mapping.rules``, parsed once per listener."""

    def __init__(self, rules: str = "DEFAULT") -> None:
        self.text = rules
        self._rules = tuple(_parse_rules(rules))

    def map(self, dn: str) -> str | None:
        """The user name for a distinguished name; None when no rule applies (authentication fails)."""
        for rule in self._rules:
            name = rule.apply(dn)
            if name is not None:
                return name
        return None


def _parse_rules(text: str) -> Iterable[_Rule]:
    where = "setting 'ssl.principal.mapping.rules'"
    pos, end = 0, len(text)
    found = False
    while pos < end:
        while pos < end and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= end:
            break
        if text.startswith("DEFAULT", pos):
            yield _Rule(None)
            pos += len("DEFAULT")
        elif text.startswith("RULE:", pos):
            pattern, pos = _until_slash(text, pos + len("RULE:"), where)
            replacement, pos = _until_slash(text, pos, where)
            case = ""
            if pos < end and text[pos] in "LU":
                case, pos = text[pos], pos + 1
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{where}: bad pattern {pattern!r}: {exc}") from None
            yield _Rule(compiled, _python_replacement(replacement), case)
        else:
            raise ConfigError(f"{where}: expected RULE:pattern/replacement/[LU] or DEFAULT at {text[pos:]!r}")
        found = True
        # Whatever follows a rule up to the next separator is ignored, as in Kafka.
        while pos < end and text[pos] not in ",\n":
            pos += 1
    if not found:
        raise ConfigError(f"{where} is empty; DEFAULT keeps the whole distinguished name")


def _until_slash(text: str, pos: int, where: str) -> tuple[str, int]:
    out = []
    while pos < len(text):
        ch = text[pos]
        if ch == "\\" and pos + 1 < len(text):
            nxt = text[pos + 1]
            out.append(nxt if nxt == "/" else ch + nxt)
            pos += 2
            continue
        if ch == "/":
            return "".join(out), pos + 1
        out.append(ch)
        pos += 1
    raise ConfigError(f"{where}: a RULE needs the form RULE:pattern/replacement/[LU], got {text!r}")


def _python_replacement(java: str) -> str:
    """Java's ``$1`` group references as Python's ``\\g<1>``; other backslashes kept literal."""
    out = []
    i = 0
    while i < len(java):
        ch = java[i]
        if ch == "$" and i + 1 < len(java) and java[i + 1].isdigit():
            j = i + 1
            while j < len(java) and java[j].isdigit():
                j += 1
            out.append(f"\\g<{java[i + 1:j]}>")
            i = j
            continue
        out.append("\\\\" if ch == "\\" else ch)
        i += 1
    return "".join(out)
