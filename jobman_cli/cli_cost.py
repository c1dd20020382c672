"""``jobman cost``: totals of the cost receipts of ended jobs (see :mod:`jobman_cli.cost.totals`).

Reads the store itself (like ``prune``): with ``--server`` it is a one-line usage error, since the
daemon's API has no totals route.
"""

from __future__ import annotations

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
    from datetime import timedelta

    from .cost.totals import totals
    from .model import TERMINAL_STATES
    from .service import parse_list_since

    seconds = None if since is None else parse_list_since(since)
    if state.remote:
        raise click.UsageError("cost reads the store itself: run it where the store is, without --server")
    service = state.service(create=False)
    cutoff = None if seconds is None else service.clock.now() - timedelta(seconds=seconds)
    result = totals(service.store.list_records(TERMINAL_STATES), by=by, since=cutoff)
    if as_json:
        print_json(result.to_json())
        return
    click.echo(render(result), nl=False)


def render(result) -> str:  # type: ignore[no-untyped-def]
    from .cost.receipt import format_usd
    from .housekeeping import id_ranges
    from .render import plain_table

    lines = []
    if result.by:
        columns = (result.by.upper(), "JOBS", "PRICED", "COST")
        rows = [(g.key, str(g.jobs), str(g.priced), format_usd(g.cost)) for g in result.sorted_groups()]
        lines.append(plain_table(rows, columns).rstrip("\n"))
    window = f" that ended since {result.since:%Y-%m-%d %H:%M} UTC" if result.since else ""
    total = result.all
    lines.append(f"Total {format_usd(total.cost)} for {total.priced} priced job{'' if total.priced == 1 else 's'} "
                 f"of {total.jobs} ended{window}.")
    if total.unpriced:
        lines.append(f"Without a price ({len(total.unpriced)}: pending, or unknown — see jobman status ID): "
                     f"{id_ranges(sorted(total.unpriced))}")
    if total.not_launched:
        lines.append(f"Never launched (nothing billed): {total.not_launched}")
    return "\n".join(lines) + "\n"
