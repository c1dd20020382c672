"""``jobman --server URL schedules ...`` and ``schedule --cron/--every``: the schedule verbs over the
daemon's REST API (:mod:`jobman_cli.api_schedules`).

:class:`RemoteSchedules` has the methods ``cli_schedules.schedule_service`` expects (the local
seam answers public JSON too): ``create``, ``get``, ``list``, ``pause``, ``resume``, ``delete``. As
for jobs (:mod:`jobman_cli.remote`), bad input is checked here first with the CLI's field names, so
the message and exit code 2 are the local ones and nothing is sent; the zone defaults to *this*
machine's (the operator's wall clock, as ``--at`` without an offset means this machine's zone),
sent explicitly. Answers come back as the server's JSON, printed as they came.
"""

from __future__ import annotations

from typing import Any

#: Schedule keys as the API and the CLI name them in messages (the job keys: remote._field_translation).
_SCHEDULE_FLAGS = (("cron", "--cron"), ("every", "--every"), ("overlap", "--overlap"))


class RemoteSchedules:
    """The schedules of the daemon behind a :class:`~jobman_cli.remote.RemoteService`."""

    def __init__(self, remote: Any) -> None:
        self.remote = remote

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, **options: Any) -> Any:
        from .remote import RemoteError

        try:
            return self.remote._call(method, path, body, **options)
        except RemoteError as err:
            message = str(err)
            for api_name, flag in _SCHEDULE_FLAGS:
                if message.startswith(api_name + ":") or message.startswith(api_name + "/"):
                    raise RemoteError(flag + message[len(api_name):], err.exit_code) from None
            raise

    def create(self, body: dict[str, Any], names: Any) -> dict[str, Any]:
        """Validate here (the local message, nothing sent), then ``POST /schedules``."""
        from .schedules.service import ScheduleService
        from .service import JobService

        draft = ScheduleService(JobService(None)).validate(body, names)  # type: ignore[arg-type]
        sent = {k: v for k, v in body.items() if k not in ("cron", "every", "tz") and v is not None}
        sent.update({"tz": draft.tz, **({"cron": draft.cron} if draft.cron else {"every": draft.every})})
        return self._call("POST", "/schedules", _jsonable(sent), translate=True)

    def get(self, schedule_id: int) -> dict[str, Any]:
        return self._call("GET", f"/schedules/{int(schedule_id)}")

    def list(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/schedules").get("schedules") or [])

    def pause(self, schedule_id: int) -> dict[str, Any]:
        return self._call("POST", f"/schedules/{int(schedule_id)}/pause")

    def resume(self, schedule_id: int) -> dict[str, Any]:
        return self._call("POST", f"/schedules/{int(schedule_id)}/resume")

    def delete(self, schedule_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"/schedules/{int(schedule_id)}/delete") or {})


def _jsonable(value: Any) -> Any:
    """Tuples (a request's ``notify``, ``command``) as JSON arrays; mappings as objects."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
