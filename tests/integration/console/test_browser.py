"""The console in a real headless Chromium over a real worker on a real Kafka (issue 22's acceptance test).

A small simulated scenario runs through a worker until a campaign member has been alerted on its own
behaviour too. An analyst signs in, opens the queue, opens the campaign, and dismisses that member. Then
the topics show the verdicts signed on ``analyst-verdicts`` under the analyst's name and on the account's
partition, the worker lifts the member's actions (``lift`` on ``enforcement-actions``), and the rest of
the scenario brings no further alert of the dismissed kinds for it, although the same events without the
verdict do (the reference engine). The console's account page shows the lift and the silence. The test
saves screenshots of the queue, the campaign and the account page in ``docs/console/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from pipeline.console import auth, store
from pipeline.contract.verdicts import decode_verdict
from pipeline.detection import Engine
from pipeline.detection.partition import partition_for
from pipeline.kafka import admin
from pipeline.simulate import generate
from tests.integration.console.harness import ConsoleServer, chromium, full_page_screenshot
from tests.integration.workers import Worker, produce_events, read_all, wait_until_idle

pytestmark = pytest.mark.integration
ANALYST_KEY = "browser-test-analyst-key-0123456789abcdef"
PASSWORD = "browser-test-password"
SHOTS = Path(__file__).resolve().parents[3] / "docs" / "console"
OWN = "account_behaviour"


def pick_member(events: list[dict[str, Any]], settings) -> tuple[str, int, int]:
    """(account, split, own alerts without a verdict): the campaign member whose first own-behaviour alert
    comes earliest after its campaign alert, with another own-behaviour alert later."""
    engine = Engine.from_config(settings)
    member: set[str] = set()
    own: dict[str, list[int]] = {}
    for i, ev in enumerate(events):
        for out in engine.process(ev):
            acct, v = out.value.get("account_id"), out.value
            if out.topic != "anomaly-alerts" or acct is None:
                continue
            if v.get("campaign_id"):
                member.add(acct)
            elif v["kind"] == OWN and acct in member:
                own.setdefault(acct, []).append(i)
    candidates = {a: idx for a, idx in own.items() if len(idx) >= 2}
    assert candidates, "the scenario has a campaign member alerted on its own behaviour twice"
    acct = min(candidates, key=lambda a: candidates[a][0])
    return acct, candidates[acct][0] + 1, len(candidates[acct])


def values(settings, topic: str) -> list[tuple[Any, dict[str, Any]]]:
    return [(m, msgpack.unpackb(m.value)) for m in read_all(settings.bootstrap, settings.topic(topic))]


def sign_in(driver: Any, url: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url + "/")
    driver.find_element(By.NAME, "user").send_keys("ana")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()


def verdicts_sent(settings, target: str) -> list[tuple[Any, dict[str, Any]]]:
    """The verdicts on ``analyst-verdicts``, checked: one per scope of the account, signed with the analyst
    key, by the signed-in analyst, keyed by the account and on its partition."""
    sent = values(settings, "analyst-verdicts")
    assert len(sent) == 2 and {v["kind"] for _, v in sent} == {OWN, "coordinated_campaign"}, sent
    for msg, _ in sent:
        checked = decode_verdict(msg.value, {"current": ANALYST_KEY.encode()})
        assert (checked["account_id"], checked["verdict"], checked["analyst"]) == (target, "false_positive", "ana")
        assert msg.key == target.encode() and msg.partition == partition_for(target, settings.input_partitions)
    return sent


def wait_page(driver: Any, url: str, *texts: str, timeout: float = 120) -> str:
    """Load ``url`` again until the page shows every text."""
    deadline = time.monotonic() + timeout
    while True:
        driver.get(url)
        page = driver.page_source
        if all(t in page for t in texts) or time.monotonic() > deadline:
            assert all(t in page for t in texts), f"{url} never showed {texts}"
            return page
        time.sleep(1.0)


def test_an_analyst_dismisses_a_campaign_member_in_the_browser_and_the_pipeline_lifts_and_silences_it(
        kafka_bootstrap, make_settings, tmp_path):
    from selenium.webdriver.common.by import By

    settings = make_settings(bootstrap=kafka_bootstrap, analyst_key=ANALYST_KEY)
    admin.create_topics(settings)
    events = generate("tiny", 1).events
    target, split, own_without_verdict = pick_member(events, settings)
    users = tmp_path / "users"
    auth.add_user(users, "ana", PASSWORD)

    worker = Worker(settings, tmp_path / "worker.log")
    server = ConsoleServer(settings, tmp_path / "console.db", users)
    driver = None
    try:
        produce_events(settings, events[:split])
        wait_until_idle(settings, [worker])
        alerts = [v for _, v in values(settings, "anomaly-alerts") if v["account_id"] == target]
        campaign_id = next(a["campaign_id"] for a in alerts if a["campaign_id"])
        # a campaign the detector merged into an older one leaves the queue: follow it to the survivor
        merged = {m: a["campaign_id"] for _, a in values(settings, "anomaly-alerts") for m in store.merged_ids(a)}
        while campaign_id in merged:
            campaign_id = merged[campaign_id]
        server.start()
        driver = chromium()

        # sign in, the queue, the campaign
        sign_in(driver, server.url)
        wait_page(driver, server.url + "/", campaign_id)
        driver.find_element(By.CSS_SELECTOR, f"a[href*='/campaign/{campaign_id}']").click()
        full_page_screenshot(driver, SHOTS / "campaign.png")

        # dismiss the member with a note
        row = driver.find_element(By.ID, f"member-{target}")
        row.find_element(By.NAME, "note").send_keys("our own load test, not a harvest")
        row.find_element(By.CSS_SELECTOR, "button.dismiss").click()
        assert f"dismissed {target}" in driver.find_element(By.ID, "flash").text

        # the verdicts on analyst-verdicts: signed, by ana, one per scope, on the account's partition
        sent = verdicts_sent(settings, target)

        # the worker applies them: the lifts on enforcement-actions
        wait_until_idle(settings, [worker])
        lifts = [v for _, v in values(settings, "enforcement-actions")
                 if v["account_id"] == target and v["action"] == "lift"]
        assert lifts and {a for v in lifts for a in v["alert_ids"]} <= {v["alert_id"] for _, v in sent}
        assert '"outcome": "accepted"' in (tmp_path / "worker.log").read_text()

        # and silences the account: the rest of the scenario brings no further own-behaviour alert
        produce_events(settings, events[split:])
        wait_until_idle(settings, [worker])
        own = [v for _, v in values(settings, "anomaly-alerts") if v["account_id"] == target and v["kind"] == OWN]
        assert len(own) == 1 < own_without_verdict

        # the console shows it
        page = wait_page(driver, f"{server.url}/account/{target}", "lifted by the pipeline", "silenced",
                         "our own load test")
        assert "waiting" not in page
        full_page_screenshot(driver, SHOTS / "account.png")
        wait_page(driver, server.url + "/?status=", "dismissed")  # the whole scenario, whatever its status
        full_page_screenshot(driver, SHOTS / "queue.png", max_height=1100)
        assert server.consumer.error is None
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        worker.stop()
