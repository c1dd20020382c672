"""Schedule writes on DynamoDB take effect once when their answers are lost (as the jobs' do:
tests/test_store_dynamodb_faults.py, whose moto server, fault proxy and fixtures this reuses).

Every schedule write is one TransactWriteItems (the item and the schedule marker): its first answer
is lost, botocore resends it, and the resend must be recognised as the write itself (the nonce in
the item), not as someone else's: no second schedule, no skipped id, no change applied twice, and a
delete whose answer was lost is still a success."""

from __future__ import annotations

import dataclasses

import pytest

from store_contract_schedules import append, make_schedule
from test_store_dynamodb_faults import (DROP_FIRST_ANSWERS, aws_credentials, direct, dynamodb,  # noqa: F401
                                        dynamodb_process, proxy, table, through)

from jobman_cli.errors import ScheduleNotFound

pytestmark = pytest.mark.slow


def test_schedule_writes_with_every_first_answer_lost_apply_once(table, proxy, dynamodb,  # noqa: F811
                                                                 aws_credentials):  # noqa: F811
    store = through(proxy)
    proxy.set_rules(DROP_FIRST_ANSWERS)
    made = [store.add_schedule(make_schedule(title=f"s{i}")) for i in range(4)]
    assert [s.id for s in made] == [1, 2, 3, 4]
    for n in range(6):
        store.update_schedule(1, append(f"r{n}"))
    store.update_schedule(2, lambda cur: dataclasses.replace(cur, paused=True))
    store.delete_schedule(3)
    check = direct(dynamodb)
    assert [(s.id, s.title) for s in check.list_schedules()] == [(1, "s0"), (2, "s1"), (4, "s3")]
    first = check.get_schedule(1)
    assert [r["detail"] for r in first.records] == [f"r{n}" for n in range(6)] and first.version == 6
    assert check.get_schedule(2).paused and check.get_schedule(2).version == 1
    with pytest.raises(ScheduleNotFound):
        store.delete_schedule(3)
    assert proxy.stats()["by_action"]["TransactWriteItems"]["dropped"] >= 12  # every write's first answer


def test_a_schedule_write_whose_answers_are_all_lost_is_proved_by_reading_it_back(table, proxy, dynamodb,  # noqa: F811
                                                                                  aws_credentials):  # noqa: F811
    store = through(proxy, total_max_attempts=2)
    proxy.set_rules([{"action": "TransactWriteItems", "fault": "drop_response", "first": 2}])
    s = store.add_schedule(make_schedule(title="landed"))
    assert [x.title for x in direct(dynamodb).list_schedules()] == ["landed"]
    proxy.set_rules([{"action": "TransactWriteItems", "fault": "drop_response", "first": 2}])
    changed = store.update_schedule(s.id, append("once"))
    assert direct(dynamodb).get_schedule(s.id) == changed and len(changed.records) == 1
