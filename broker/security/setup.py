"""Start-up of secured listeners: each SSL/SASL_SSL listener's TLS context and principal rules, each
SASL listener's mechanisms and credentials. Everything a file or a setting can get wrong is raised here as
a ConfigError naming it, before any port opens."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from broker.config import ConfigError
from broker.listeners import Listener
from broker.security.principal import PrincipalMapper

if TYPE_CHECKING:
    from broker.config import BrokerConfig
    from broker.listeners import ListenerSpec
    from broker.security.listener_settings import SaslSettings
    from broker.security.oauth_tokens import OAuthBearerValidator
    from broker.server import Broker


def secure_listeners(broker: Broker, specs: list[ListenerSpec]) -> list[Listener]:
    from broker.security.authenticator import SaslListener
    from broker.security.listener_settings import sasl_settings, tls_settings
    from broker.security.tls import ReloadingContext

    config = broker.config
    listeners = []
    for spec in specs:
        listener = Listener(spec)
        listener.principal_mapper = PrincipalMapper(config.listener_setting(spec.name, "ssl.principal.mapping.rules"))
        if spec.uses_tls:
            listener.tls = ReloadingContext(tls_settings(config, spec))
        if spec.uses_sasl:
            settings = sasl_settings(config, spec)
            oauth = oauth_validator(config, spec, settings) if "OAUTHBEARER" in settings.mechanisms else None
            listener.sasl = SaslListener(settings, broker.scram_credentials, oauth, broker.log_throttle,
                                         config.connection_failed_authentication_delay_ms)
        listeners.append(listener)
    return listeners


def oauth_validator(config: BrokerConfig, spec: ListenerSpec, settings: SaslSettings) -> OAuthBearerValidator:
    """The listener's OAUTHBEARER token validator: signed tokens checked against the JWKS file when
    ``sasl.oauthbearer.jwks.endpoint.url`` is set, else Kafka's unsecured default (its options from the
    listener's ``oauthbearer.sasl.jaas.config``)."""
    from broker.security.oauth_tokens import JwksValidator, UnsecuredJwsValidator

    def get(name: str) -> str | None:
        return config.listener_setting(spec.name, name)

    principal_claim = get("sasl.oauthbearer.sub.claim.name") or "sub"
    scope_claim = get("sasl.oauthbearer.scope.claim.name") or "scope"
    url = get("sasl.oauthbearer.jwks.endpoint.url")
    if url:
        audience = tuple(a.strip() for a in (get("sasl.oauthbearer.expected.audience") or "").split(",") if a.strip())
        try:
            return JwksValidator.from_file(
                _jwks_path(url), expected_audience=audience,
                expected_issuer=get("sasl.oauthbearer.expected.issuer"), principal_claim=principal_claim,
                scope_claim=scope_claim,
                allowable_clock_skew_ms=int(get("sasl.oauthbearer.clock.skew.seconds") or 0) * 1000)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"listener {spec.name}: sasl.oauthbearer.jwks.endpoint.url: {exc}") from None
    options = settings.oauth_jaas_options
    try:
        skew_ms = int(options.get("unsecuredValidatorAllowableClockSkewMs", "0"))
    except ValueError:
        raise ConfigError(f"listener {spec.name}: unsecuredValidatorAllowableClockSkewMs in "
                          f"oauthbearer.sasl.jaas.config must be an integer") from None
    required = tuple(s for s in options.get("unsecuredValidatorRequiredScope", "").replace(",", " ").split() if s)
    return UnsecuredJwsValidator(
        principal_claim=options.get("unsecuredValidatorPrincipalClaimName", principal_claim),
        scope_claim=options.get("unsecuredValidatorScopeClaimName", scope_claim),
        required_scopes=required, allowable_clock_skew_ms=skew_ms)


def _jwks_path(url: str) -> Path:
    """The JWKS file a ``file:`` URL (or plain path) names; HTTP endpoints are not fetched."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return Path(unquote(parts.path) if parts.scheme else url).expanduser()
    raise ValueError(f"only file: URLs are supported (download the JWKS to a file), got {url!r}")
