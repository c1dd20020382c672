"""Notifications (DESIGN.md section 11): tell someone when a job ends.

* :mod:`.targets`    what a target is (webhook, Slack, SNS), its validation and its redacted form;
* :mod:`.deliveries` the delivery records kept on the job, and the pure rules that move them
  (due, claim, settle, give up) — the outbox is the job itself;
* :mod:`.schedule_events` the same records and rules for a schedule's missed/refused occurrences,
  kept on the schedule's record (they have no job);
* :mod:`.message`    the JSON body, the Slack paragraph and the signature;
* :mod:`.send`       one attempt over HTTP or SNS, and what its outcome means (retry or final);
* :mod:`.settings`   ``[notify]`` in config.toml, ``JOBMAN_NOTIFY_*`` and the signing secret.

The daemon's :mod:`jobman_cli.daemon.notifier` drives them. This package imports only the
standard library at import time (boto3 only inside the SNS sender), so ``jobman schedule`` stays fast.
"""
