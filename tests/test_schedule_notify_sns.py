"""A schedule event reaches an SNS target (review finding SN3: the Subject was built from a job's
``id``/``status``, a schedule event has neither: KeyError, retried as "no answer" for 24 h, never sent).

In-process mock_aws: an SNS topic with a subscribed SQS queue receives the published message.
"""

from __future__ import annotations

import json
from datetime import timedelta

import boto3
from test_schedule_notify import T0, Setup, _notified
from test_store_dynamodb import aws  # noqa: F401  (fixture)

from jobman_cli.notify.message import subject
from jobman_cli.stores.tinydb import TinyDBStore


def _topic_with_queue(region: str) -> tuple[str, object, str]:
    sns, sqs = boto3.client("sns", region_name=region), boto3.client("sqs", region_name=region)
    topic = sns.create_topic(Name="jobman-schedules")["TopicArn"]
    queue = sqs.create_queue(QueueName="schedule-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return topic, sqs, queue


def test_a_missed_schedule_publishes_one_sns_message_with_a_schedule_subject(tmp_path, aws):  # noqa: F811
    """Five missed minutes -> one SNS message whose Subject names the schedule and 'missed', whose
    attributes carry the event, and the delivery is recorded delivered (not pending on a KeyError)."""
    topic, sqs, queue = _topic_with_queue("eu-west-1")
    setup = Setup(TinyDBStore(tmp_path / "jobs.json"))
    made = setup.create(every="1m", title="nightly", notify=[f"sns:{topic}"])
    setup.step(T0 + timedelta(minutes=5, seconds=1))
    assert setup.events.run_once() == 1
    delivery = _notified(setup.store, made.id)[0]["notifications"][0]
    assert delivery["state"] == "delivered", delivery
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
    assert len(messages) == 1
    envelope = json.loads(messages[0]["Body"])  # SNS -> SQS wraps the message (no raw delivery)
    assert envelope["Subject"] == f"jobman: schedule {made.id} missed"
    data = json.loads(envelope["Message"])
    assert data["event"] == "schedule.missed" and data["schedule-id"] == made.id
    assert envelope["MessageAttributes"]["event"]["Value"] == "schedule.missed"
    assert envelope["MessageAttributes"]["event-id"]["Value"] == data["event-id"] == delivery["event-id"]
    assert setup.events.run_once() == 0  # delivered: nothing more


def test_subjects_for_job_and_schedule_events_fit_sns():
    """SNS refuses a Subject over 100 characters; a refused schedule says 'refused'."""
    assert subject({"event": "schedule.refused", "schedule-id": 7}) == "jobman: schedule 7 refused"
    assert subject({"event": "job.failed", "id": 3, "status": "failed"}) == "jobman: job 3 failed"
    assert len(subject({"event": "job.failed", "id": "x" * 300, "status": "failed"})) == 100
