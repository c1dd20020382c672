"""``jobman cost``: totals of the cost receipts of ended jobs (see :mod:`jobman_cli.cost.totals`).

Locally it reads the store; with ``--server`` it asks the daemon's ``GET /jobMan/v1.1/cost``
(:func:`jobman_cli.api_routes.cost_answer`), which answers the same JSON, so both print alike.
"""

from __future__ import annotations

from typing import Any

import click

from .cli_base import State, print_json, store_option


@click.command(name="cost")
@store_option
@click.option("--since", default=None, metavar="DUR", help="Only jobs that ended in the last DUR (7d, 30d, 12h).")
@click.option("--by", "by", default=None, type=click.Choice(["title", "image", "tag"]),
              help="Totals per title, image, or tag (the recurring schedule that made the job).")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as JSON.")
@click.pass_obj
def cost(state: State, since: str | None, by: str | None, as_json: bool) -> None:
    """What ended jobs cost: the sum of their receipts, per group, and the jobs without a price.

    A job's receipt is its instance's running seconds times the price of its type, zone and market,
    plus its root volume (see `jobman status ID`). Data transfer, taxes, savings plans and
    reserved-instance discounts are not in it.
    """
    from .service import parse_list_since

    seconds = None if since is None else parse_list_since(since)
    service = state.service(create=False)
    if state.remote:
        from urllib.parse import urlencode

        query = urlencode([(k, v) for k, v in (("since", None if seconds is None else str(seconds)), ("by", by))
                           if v is not None])
        data = service._call("GET", "/cost" + (f"?{query}" if query else ""))  # type: ignore[attr-defined]
    else:
        from datetime import timedelta

        from .cost.totals import totals
        from .model import TERMINAL_STATES

        cutoff = None if seconds is None else service.clock.now() - timedelta(seconds=seconds)
        data = totals(service.store.list_records(TERMINAL_STATES), by=by, since=cutoff).to_json()
    if as_json:
        print_json(data)
        return
    click.echo(render(data), nl=False)


def render(data: dict[str, Any]) -> str:
    """The human report of :meth:`Totals.to_json <jobman_cli.cost.totals.Totals.to_json>`'s answer."""
    from .cost.receipt import format_usd
    from .housekeeping import id_ranges
    from .model import parse_time
    from .render import plain_table

    def plural(n: int) -> str:
        return "" if n == 1 else "s"

    lines = []
    if data.get("by"):
        columns = (str(data["by"]).upper(), "JOBS", "PRICED", "COST")
        rows = [(str(g["key"]), str(g["jobs"]), str(g["priced"]), format_usd(g["cost"])) for g in data["groups"] or ()]
        lines.append(plain_table(rows, columns).rstrip("\n"))
    since = parse_time(data.get("since"))
    window = f" since {since:%Y-%m-%d %H:%M} UTC" if since else ""
    lines.append(f"Total {format_usd(data['cost'])} for {data['priced']} priced job{plural(data['priced'])} "
                 f"of {data['jobs']} ended{window}.")
    unpriced = data["unpriced"]
    if unpriced["count"]:
        lines.append(f"Without a price ({unpriced['count']}: pending, or unknown — see jobman status ID): "
                     f"{id_ranges(unpriced['ids'])}")
    if data.get("not-launched"):
        lines.append(f"Never launched (nothing billed): {data['not-launched']}")
    return "\n".join(lines) + "\n"
