"""A state record has a bounded size by construction (issue 20, attack 3): 512 members of long org ids made
a 1.3 MB link-group record, which the worker could not write, and it restarted on the same input."""

from __future__ import annotations

import msgpack
import pytest

from pipeline.contract.codec import CodecError, decode_event
from pipeline.contract.models import ID_MAX_CHARS, STRING_MAX_CHARS
from pipeline.detection import Engine
from pipeline.detection.config import DetectionConfig
from pipeline.detection.messages import LinkUpdate, MemberSummary
from pipeline.worker.outbox import KAFKA_MAX_MESSAGE_BYTES
from tests import factories

LINK_STATE_BOUND = 512 * 1024
"""What a link group of ``link_member_cap`` members with every string at its longest stays under: half
the largest record a topic takes, with room for what later versions add to a member."""


def test_an_org_id_longer_than_the_bound_never_reaches_detection() -> None:
    with pytest.raises(CodecError, match="org_id: expected string of at most 128 chars"):
        decode_event(msgpack.packb(factories.event(1, org_id="o" * 2_600)))


def test_a_link_group_of_the_most_members_with_the_longest_strings_is_a_bounded_record() -> None:
    """More than ``link_member_cap`` accounts report to one card, each with the longest account id, org id
    and payment fingerprint the codec lets through: the group keeps at most the cap and its record stays
    under ``LINK_STATE_BOUND``, well within what the worker's producer sends."""
    cfg = DetectionConfig()
    engine = Engine(cfg)
    card = "p" * STRING_MAX_CHARS
    ts = factories.BASE_TS
    for i in range(cfg.link_member_cap + 100):
        account = f"{i:06d}" + "a" * (ID_MAX_CHARS - 6)
        org = f"{i:06d}" + "o" * (STRING_MAX_CHARS - 6)
        s = MemberSummary(account, ts + i * 1000, 40, 400.0, 0.9, 0.9, 2**24 - 1, ts // 3_600_000, ts, org, "free",
                          0.9, card, 0.9, 0.9)
        engine.on_link_update(LinkUpdate(f"pay:{card}", s), i)
    group = engine.links.get(f"pay:{card}")
    assert len(group.members) == cfg.link_member_cap
    size = len(group.to_bytes())
    assert size < LINK_STATE_BOUND < KAFKA_MAX_MESSAGE_BYTES, size
