"""The EC2 adapter of the launcher port: the only module that talks to EC2 (and SSM, for the AMI).

It is imported lazily (by the daemon, ``cancel`` and ``logs``), so importing boto3 at the top is
fine: ``schedule``/``list``/``status`` never pay for it.

Design choices, and why:

* One boto3 ``Session`` per launcher; its clients are created on first use under a lock and then
  shared by the launch pool's threads (botocore clients are thread-safe, sessions are not).
* Every client has short connect/read timeouts and ``standard`` retries with 3 attempts in total,
  so a hung endpoint costs the calling thread about a minute at worst, never "for ever".
* Except ``RunInstances``: it has a client of its own that sends each request exactly once. A
  resend is the daemon's decision, made after a tag lookup, because a resend is only harmless where
  ``ClientToken`` is honoured (AWS), not under an emulator that ignores it (moto), and because only
  the daemon knows whether it still wants the attempt. :func:`run_instances_error` sorts the
  failures: nothing started (capacity, quotas, validation, permissions), refused as too fast
  (throttling), may have started (read timeout, connection reset or closed, 5xx), or already
  started under this token with other parameters (``IdempotentParameterMismatch``). The error
  mapping lives in :mod:`.ec2_errors`.
* ``AWS_REGION`` is honoured here because botocore itself only reads ``AWS_DEFAULT_REGION``.
* Credentials and the instance metadata service (IMDS): :meth:`EC2Launcher.check_credentials`
  asks botocore's normal provider chain and never sets ``AWS_EC2_METADATA_DISABLED``. Disabling
  IMDS "when nothing is configured" would break exactly the operators who configure nothing
  because they rely on an instance role, and flipping a process-wide environment variable would
  also change every other AWS client in the process (the DynamoDB store). The wait is already
  bounded: botocore asks IMDS with ``metadata_service_timeout`` = 1 s and
  ``metadata_service_num_attempts`` = 1 by default (a token request, then one fallback request),
  so on a laptop without credentials the check fails after about two seconds at worst, offline.
  Users who want zero IMDS traffic set ``AWS_EC2_METADATA_DISABLED=true`` themselves.
  The check makes no API call: it proves credentials exist, not that they work; bad credentials
  surface on the first call as a ``LaunchError`` carrying AWS's code (``AuthFailure`` ...).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
import time
from datetime import timezone
from typing import Any, Iterable, Iterator, Sequence

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ConfigError, LaunchError
from ..model import Job
from .userdata import USER_DATA_LIMIT
from .base import (
    ATTEMPT_TAG,
    JOB_ID_TAG,
    LIVE_STATES,
    EC2Settings,
    InstanceInfo,
    Launched,
    LaunchOutcomeUnknown,
)
from .ec2_params import instance_tags, metadata_options, run_instances_params  # noqa: F401  (boto3-free)
from .ec2_errors import NO_CREDENTIALS, NO_REGION, _config_error, run_instances_error, to_launch_error

#: Codes meaning "no such instance" (a malformed id cannot name an instance either).
NOT_FOUND_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})

#: ``GetConsoleOutput(Latest=True)`` only works on Nitro instances; these codes mean "ask again
#: without it".
_LATEST_UNSUPPORTED = frozenset({"UnsupportedOperation", "InvalidParameterValue",
                                 "InvalidParameterCombination", "InvalidParameter"})

MAX_CLIENT_TOKEN = 64
AMI_CACHE_SECONDS = 12 * 3600  # a long-lived daemon picks up the monthly AL2023 AMI refresh
_BATCH = 100  # ids per DescribeInstances filter / TerminateInstances call

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


def _int_tag(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in ids if i))


def decode_console_output(output: str | None) -> str:
    """Real EC2 returns the console output base64-encoded; moto returns it decoded.

    Console text always contains spaces, base64 never does, so a space-free payload that decodes
    as base64 is taken to be encoded. Undecodable bytes become U+FFFD rather than an error.
    """
    if not output:
        return ""
    compact = output.replace("\r", "").replace("\n", "")
    if " " not in output and "\t" not in output and len(compact) % 4 == 0 and _BASE64.fullmatch(compact):
        try:
            return base64.b64decode(compact, validate=True).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            pass
    return output


class EC2Launcher:
    """:class:`~jobman_cli.launchers.base.Launcher` on Amazon EC2 (boto3)."""

    def __init__(self, settings: EC2Settings | None = None, *, connect_timeout: float = 5.0,
                 read_timeout: float = 20.0, max_attempts: int = 3, page_size: int | None = None) -> None:
        self.settings = settings or EC2Settings()
        region = self.settings.region or os.environ.get("AWS_REGION") or None
        try:
            self._session = boto3.session.Session(profile_name=self.settings.profile, region_name=region)
        except BotoCoreError as exc:
            raise _config_error(exc, "cannot load the AWS configuration") from exc
        self._config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            user_agent_extra="jobman",
        )
        #: RunInstances only: every request is sent once (see the module doc).
        self._send_once = self._config.merge(Config(retries={"mode": "standard", "total_max_attempts": 1}))
        self._token_filter = True  # False once the endpoint refused the ``client-token`` filter
        self._page_size = page_size
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._ami_lock = threading.Lock()
        self._ami: tuple[str, float] | None = None  # (image id, monotonic time resolved)
        self._root_devices: dict[str, str] = {}  # image id -> root device name

    # ------------------------------------------------------------------ plumbing
    def _client(self, service: str, *, send_once: bool = False) -> Any:
        """The one client per service (and retry mode), made on first use (so a bad config fails
        where it is used). ``send_once``: without botocore's retries (RunInstances)."""
        key = f"{service}:once" if send_once else service
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                try:
                    client = self._session.client(service, endpoint_url=self.settings.endpoint_url,
                                                  config=self._send_once if send_once else self._config)
                except BotoCoreError as exc:
                    raise _config_error(exc, f"cannot configure the AWS {service} client") from exc
                self._clients[key] = client
            return client

    @property
    def _ec2(self) -> Any:
        return self._client("ec2")

    @property
    def _ec2_run(self) -> Any:
        """The EC2 client for RunInstances: each request sent exactly once."""
        return self._client("ec2", send_once=True)

    def _info(self, instance: dict[str, Any]) -> InstanceInfo:
        tags = {t.get("Key"): t.get("Value") for t in instance.get("Tags") or ()}
        launch_time = instance.get("LaunchTime")
        if launch_time is not None and launch_time.tzinfo is not None:
            launch_time = launch_time.astimezone(timezone.utc)
        return InstanceInfo(
            instance_id=instance["InstanceId"],
            state=str((instance.get("State") or {}).get("Name") or "unknown"),
            job_id=_int_tag(tags.get(JOB_ID_TAG)),
            attempt=_int_tag(tags.get(ATTEMPT_TAG)),
            store_id=tags.get(self.settings.store_tag_key),
            launch_time=launch_time,
            instance_type=instance.get("InstanceType"),
            availability_zone=(instance.get("Placement") or {}).get("AvailabilityZone"),
            subnet_id=instance.get("SubnetId"),
            market="spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand",
            state_reason=(instance.get("StateReason") or {}).get("Code"),
        )

    def _describe(self, filters: list[dict[str, Any]]) -> list[InstanceInfo]:
        """DescribeInstances with filters, following every page (moto pages at 100 too)."""
        pagination = {"PageSize": self._page_size} if self._page_size else {}
        found: list[InstanceInfo] = []
        try:
            pages = self._ec2.get_paginator("describe_instances").paginate(
                Filters=filters, PaginationConfig=pagination)
            for page in pages:
                for reservation in page.get("Reservations") or ():
                    found.extend(self._info(i) for i in reservation.get("Instances") or ())
        except (ClientError, BotoCoreError) as exc:
            raise to_launch_error(exc) from exc
        return found

    def _image_id(self) -> str:
        """The AMI: a literal id, or an SSM parameter resolved once and cached for hours."""
        parameter = self.settings.ami_parameter
        if parameter is None:
            return self.settings.ami  # type: ignore[return-value]
        with self._ami_lock:
            if self._ami is not None and time.monotonic() - self._ami[1] < AMI_CACHE_SECONDS:
                return self._ami[0]
            try:
                value = self._client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"]
            except (ClientError, BotoCoreError) as exc:
                raise to_launch_error(exc, f"cannot resolve the AMI from SSM parameter {parameter}") from exc
            self._ami = (value, time.monotonic())
            return value

    def _root_device(self, image_id: str) -> str:
        """The AMI's root device name (``/dev/xvda`` on Amazon Linux), for ``--disk-gb``; cached."""
        with self._ami_lock:
            cached = self._root_devices.get(image_id)
        if cached is not None:
            return cached
        try:
            images = self._ec2.describe_images(ImageIds=[image_id]).get("Images") or []
        except (ClientError, BotoCoreError) as exc:
            raise to_launch_error(exc, f"cannot read the root device of AMI {image_id} (for --disk-gb)") from exc
        device = str((images[0] if images else {}).get("RootDeviceName") or "")
        if not device:
            raise LaunchError(f"InvalidAMIID.NotFound: AMI {image_id} has no root device to size (--disk-gb)",
                              retryable=False, code="InvalidAMIID.NotFound")
        with self._ami_lock:
            self._root_devices[image_id] = device
        return device

    def _tags(self, job: Job, store_id: str) -> list[dict[str, str]]:
        return instance_tags(job, self.settings, store_id)

    # ------------------------------------------------------------------ the port
    def launch(self, job: Job, *, user_data: str, store_id: str) -> str:
        token = job.launch_token
        if token is None:
            raise ValueError(f"job {job.id} has no launch token; claim it before launching")
        if len(token) > MAX_CLIENT_TOKEN or not token.isascii():
            raise ValueError(f"launch token of job {job.id} must be at most 64 ASCII characters")
        size = len(user_data.encode("utf-8"))
        if size > USER_DATA_LIMIT:  # moto does not enforce this; fail the same way everywhere
            raise LaunchError(f"UserDataTooLarge: user-data is {size} bytes; EC2 accepts at most {USER_DATA_LIMIT}",
                              retryable=False, code="UserDataTooLarge")
        image_id = self._image_id()
        root_device = self._root_device(image_id) if job.disk_gb is not None else None
        params = run_instances_params(job, self.settings, user_data, image_id=image_id, store_id=store_id,
                                      root_device=root_device)
        try:
            response = self._ec2_run.run_instances(**params)
        except (ClientError, BotoCoreError) as exc:
            raise run_instances_error(exc, job, token) from exc
        instances = response.get("Instances") or []
        if not instances:  # an answer that says nothing: as if it had been lost
            raise LaunchOutcomeUnknown("NoInstance: RunInstances answered without an instance", code="NoInstance")
        zone = (instances[0].get("Placement") or {}).get("AvailabilityZone")
        return Launched.of(str(instances[0]["InstanceId"]), zone)

    def find_instances(self, store_id: str, *, job_id: int | None = None, attempt: int | None = None,
                       include_terminated: bool = False, client_token: str | None = None) -> list[InstanceInfo]:
        filters: list[dict[str, Any]] = [{"Name": f"tag:{self.settings.store_tag_key}", "Values": [store_id]}]
        if job_id is not None:
            filters.append({"Name": f"tag:{JOB_ID_TAG}", "Values": [str(job_id)]})
        if attempt is not None:
            filters.append({"Name": f"tag:{ATTEMPT_TAG}", "Values": [str(attempt)]})
        if not include_terminated:
            filters.append({"Name": "instance-state-name", "Values": list(LIVE_STATES)})
        found = self._describe(filters)
        # Belt and braces: a filter an emulator ignores must not hand us another store's instance.
        found = [i for i in found if i.store_id == store_id and (job_id is None or i.job_id == job_id)
                 and (attempt is None or i.attempt == attempt)
                 and (include_terminated or i.state != "terminated")]
        if not found and client_token:
            found = [i for i in self._by_client_token(client_token)
                     if include_terminated or i.state != "terminated"]
        return sorted(found, key=lambda i: (i.job_id or 0, i.attempt or 0, i.instance_id))

    def _by_client_token(self, token: str) -> list[InstanceInfo]:
        """Instances launched with ``token`` (the ``client-token`` filter of real EC2). An endpoint
        that does not know the filter (moto answers 500) gives nothing, now and from then on."""
        if not self._token_filter:
            return []
        try:
            return self._describe([{"Name": "client-token", "Values": [token]}])
        except NotImplementedError:  # in-process moto raises it from inside the call
            self._token_filter = False
        except LaunchError as exc:
            if not exc.retryable:  # refused (an unknown filter); a transient error only skips this look
                self._token_filter = False
        return []

    def describe(self, instance_ids: Sequence[str]) -> dict[str, InstanceInfo]:
        # A filter (not InstanceIds=) so one unknown id does not fail the whole call.
        result: dict[str, InstanceInfo] = {}
        for chunk in _chunks(_unique(instance_ids), _BATCH):
            for info in self._describe([{"Name": "instance-id", "Values": chunk}]):
                if info.instance_id in chunk:
                    result[info.instance_id] = info
        return result

    def terminate(self, instance_ids: Sequence[str]) -> None:
        for chunk in _chunks(_unique(instance_ids), _BATCH):
            try:
                self._terminate(chunk)
            except ClientError as exc:
                code = (exc.response.get("Error") or {}).get("Code")
                if code not in NOT_FOUND_CODES:
                    raise to_launch_error(exc) from exc
                if len(chunk) > 1:  # AWS refuses the whole batch: retry one by one, skip the unknown
                    for instance_id in chunk:
                        try:
                            self._terminate([instance_id])
                        except ClientError as one:
                            if (one.response.get("Error") or {}).get("Code") not in NOT_FOUND_CODES:
                                raise to_launch_error(one) from one

    def _terminate(self, ids: list[str]) -> None:
        try:
            self._ec2.terminate_instances(InstanceIds=ids)
        except BotoCoreError as exc:
            raise to_launch_error(exc) from exc

    def console_output(self, instance_id: str) -> str:
        ec2 = self._ec2
        try:
            try:
                response = ec2.get_console_output(InstanceId=instance_id, Latest=True)
            except ClientError as exc:
                if (exc.response.get("Error") or {}).get("Code") not in _LATEST_UNSUPPORTED:
                    raise
                response = ec2.get_console_output(InstanceId=instance_id)
        except (ClientError, BotoCoreError) as exc:
            raise to_launch_error(exc) from exc
        return decode_console_output(response.get("Output"))

    def check_credentials(self) -> None:
        try:
            if not self._session.region_name:
                raise ConfigError(NO_REGION)
            credentials = self._session.get_credentials()
        except BotoCoreError as exc:
            raise _config_error(exc, "cannot load AWS credentials") from exc
        if credentials is None:
            raise ConfigError(NO_CREDENTIALS)
