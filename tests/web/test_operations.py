"""Running the web side: Prometheus metrics (parsed by prometheus-client's own parser), HTTPS
with a certificate from `assist-broker certs`, and API tokens from the command line."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_handoff import cli
from tests.harness import BrokerHarness
from tests.web.openapi_check import checked_session


async def scrape(harness: BrokerHarness) -> dict[str, float]:
    async with (
        checked_session() as http,
        http.get(f"{harness.base_url}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


async def test_metrics_count_what_happened(harness: BrokerHarness) -> None:
    before = await scrape(harness)
    assert before["assist_live_sessions"] == 0 and before["assist_tunnels"] == 0
    ticket = await harness.ticket()
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket)
    assert (await harness.ssh(key, ticket, "head -c 5000 /dev/zero")).status == 0
    await harness.wait_audit(ticket, "channel.closed")
    bad = await harness.helper("000-000-000")
    assert await bad.finish() == 2
    async with (
        checked_session() as http,
        http.get(
            f"{harness.base_url}/api/v1/me", headers={"Authorization": "Bearer abt_wrong"}
        ) as response,
    ):
        assert response.status == 401

    during = await scrape(harness)
    assert during["assist_live_sessions"] == 1 and during["assist_tunnels"] == 1
    assert during["assist_consent_codes_total{outcome=issued}"] == 1
    assert during["assist_consent_codes_total{outcome=redeemed}"] == 1
    assert during["assist_consent_codes_total{outcome=rejected}"] == 1
    assert during["assist_bytes_relayed_total{direction=to_engineer,kind=exec}"] == 5000
    assert during["assist_auth_failures_total{where=api}"] == 1
    assert during["assist_audit_write_seconds_count"] > 5
    assert 0 < during["assist_audit_write_seconds_sum"] < 5

    helper.interrupt()
    await helper.finish()
    await harness.wait_audit(ticket, "session.ended")
    after = await scrape(harness)
    assert after["assist_live_sessions"] == 0


async def test_https_with_a_certificate_from_the_command_line(tmp_path: Path) -> None:
    plain = await BrokerHarness(tmp_path / "a").start()
    made = await cli(plain, "certs", "--host", "127.0.0.1", "--json")
    await plain.stop()
    assert made.status == 0, made.stderr
    paths = json.loads(made.stdout)
    assert oct(Path(paths["key"]).stat().st_mode & 0o777) == "0o600"

    harness = await BrokerHarness(
        tmp_path / "b", http_tls_cert=paths["certificate"], http_tls_key=paths["key"]
    ).start()
    try:
        trust = ssl.create_default_context(cafile=paths["certificate"])
        async with checked_session() as http:
            url = f"https://127.0.0.1:{harness.http_port}/healthz"
            async with http.get(url, ssl=trust) as response:
                assert response.status == 200
                assert response.headers["Strict-Transport-Security"].startswith("max-age=")
                assert "default-src 'none'" in response.headers["Content-Security-Policy"]
            try:
                async with http.get(url.replace("https", "http")) as response:
                    raise AssertionError(f"plain HTTP answered {response.status}")
            except aiohttp.ClientError:
                pass  # nothing in clear
    finally:
        await harness.stop()


async def test_api_tokens_from_the_command_line(harness: BrokerHarness) -> None:
    await harness.token("audrey", "auditor")
    made = await cli(harness, "token", "create", "audrey", "--expires", "1d", "--json")
    assert made.status == 0, made.stderr
    token = json.loads(made.stdout)
    async with checked_session() as http:
        headers = {"Authorization": f"Bearer {token['token']}"}
        async with http.get(f"{harness.base_url}/api/v1/me", headers=headers) as response:
            assert response.status == 200 and (await response.json())["name"] == "audrey"
        revoked = await cli(harness, "token", "revoke", str(token["id"]))
        assert revoked.status == 0, revoked.stderr
        async with http.get(f"{harness.base_url}/api/v1/me", headers=headers) as response:
            assert response.status == 401
    listed = await cli(harness, "token", "list", "audrey", "--json")
    rows = json.loads(listed.stdout)
    assert [r["revoked"] for r in rows] == [False, True]
    assert token["token"] not in str(await harness.audit())  # never the token itself
