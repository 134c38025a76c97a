"""Client-side TLS for MQTT: one `ssl.SSLContext` from a `BrokerEndpoint`'s files, used alike by
aiomqtt (`tls_context=`) and paho (`tls_set_context`)."""

from __future__ import annotations

import ssl

from nacelle.config import BrokerEndpoint, ConfigError


def client_context(endpoint: BrokerEndpoint) -> ssl.SSLContext | None:
    """The TLS context for `endpoint`, or None for plain TCP (no `ca_file`).

    Verifies the broker's certificate against the fleet CA and the host name dialled (an IP
    address is checked against the certificate's IP entries), TLS 1.2 at least; presents the
    client certificate when there is one. Errors name the field whose file is at fault.
    """
    if endpoint.ca_file is None:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(endpoint.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"broker.ca_file {endpoint.ca_file}: not a usable CA certificate: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if endpoint.cert_file is not None:
        try:
            context.load_cert_chain(endpoint.cert_file, endpoint.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"broker.cert_file {endpoint.cert_file} / broker.key_file {endpoint.key_file}: "
                f"not a usable certificate and matching key: {exc}"
            ) from exc
    return context
