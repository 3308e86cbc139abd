"""Read with a client nobody here wrote: kcat (librdkafka) sees plain msgpack maps that match schemas/."""

from __future__ import annotations

import os
import shutil
import subprocess

import msgpack
import pytest

from pipeline.contract.schemas import validator
from tests import factories
from tests.integration.workers import run_to_idle

pytestmark = pytest.mark.integration


def _kcat() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("kcat is not installed: .ci/run installs Debian's kcat package")
        pytest.skip("kcat is not installed (apt-get install kcat)")
    return path


def _read(kcat: str, bootstrap: str, topic: str) -> list[bytes]:
    out = subprocess.run([kcat, "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
                          "-f", "%S %s"], check=True, capture_output=True, timeout=60).stdout
    values, i = [], 0
    while i < len(out):  # "<length> <payload>" repeated: payloads are binary, so split by length
        space = out.index(b" ", i)
        n = int(out[i:space])
        values.append(out[space + 1:space + 1 + n])
        i = space + 1 + n
    return values


def test_alerts_and_actions_read_with_kcat_are_plain_msgpack_maps_valid_against_the_schemas(
        kafka_bootstrap, make_settings, tmp_path):
    kcat = _kcat()
    settings = make_settings(bootstrap=kafka_bootstrap)
    run_to_idle(settings, factories.harvester_and_noise(3_000), tmp_path / "worker.log")
    for topic, kind in (("anomaly-alerts", "anomaly_alert"), ("enforcement-actions", "enforcement_action")):
        values = _read(kcat, kafka_bootstrap, settings.topic(topic))
        assert values, f"nothing on {topic}"
        for raw in values:
            obj = msgpack.unpackb(raw, raw=False)
            assert isinstance(obj, dict) and "__faust" not in obj
            validator(kind, obj["schema_version"]).validate(obj)
