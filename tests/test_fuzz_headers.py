"""No Accept or Accept-Encoding header can make /metrics or the API answer 5xx (issue 12, item 2).

Header values reach the app as a WSGI server hands them over: latin-1 text, so a client's UTF-8
(full-width digits, say) arrives as its latin-1 reading. Besides arbitrary text, the strategy
builds OpenMetrics media ranges with arbitrary version parameters, where prometheus_client's
own parser raised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from conftest import MakeApp

OPENMETRICS = "application/openmetrics-text"
# What a WSGI server can put in a header value: latin-1, no line breaks.
header_text = st.text(
    st.characters(max_codepoint=255, blacklist_characters="\r\n\x00"), max_size=80
)
version = st.one_of(
    header_text,
    st.sampled_from(["abc", "1.a", "x.y.z", "1.0.0-rc1", "1.0", "1.0.0.0", "", "0.0.1", "2.0.0"]),
    st.just("\uff11.0.0".encode().decode("latin-1")),  # full-width 1, as the server reads it
)
openmetrics = st.builds(
    lambda v, extra: f"{OPENMETRICS}; version={v}{extra}",
    version,
    st.sampled_from(["", "; charset=utf-8", ", text/plain;q=0.5", "; escaping=allow-utf-8"]),
)
accept = st.one_of(header_text, openmetrics)


@pytest.fixture
def header_app(make_app: MakeApp) -> Flask:
    return make_app()


@pytest.mark.parametrize("path", ["/metrics", "/api/v1/health"])
@given(accept=accept, encoding=header_text)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_accept_or_accept_encoding_causes_a_server_error(
    header_app: Flask, path: str, accept: str, encoding: str
) -> None:
    client = header_app.test_client()
    response = client.get(path, headers={"Accept": accept, "Accept-Encoding": encoding})
    assert response.status_code < 500, (accept, encoding, response.get_data()[:300])


@pytest.mark.parametrize(
    "value", ["abc", "1.a", "x.y.z", "1.0.0-rc1", "\uff11.0.0".encode().decode("latin-1")]
)
def test_a_malformed_openmetrics_version_falls_back_to_the_text_format(
    header_app: Flask, value: str
) -> None:
    response = header_app.test_client().get(
        "/metrics", headers={"Accept": f"{OPENMETRICS}; version={value}"}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"sidecar_sessions{" in response.get_data()
