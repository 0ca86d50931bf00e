"""Moldau's security: listeners, TLS, SASL authentication, authorization and quotas."""
