"""The commands that look at a store and change single items or scopes: thin shells over
``agent_datastore.admin`` and the proxies."""

from __future__ import annotations

import json

import click

from .. import admin
from .._core import ENSURE_INDEXES_TIMEOUT
from ._base import (
    EXIT_NOT_FOUND,
    CommandError,
    _confirm,
    _items,
    _json_argument,
    _json_flag,
    _namespace_option,
    _print_json,
    _print_names,
    _store,
    _table,
    _translated_errors,
    _yes_option,
    cli,
)


@cli.command()
@_json_flag
def demo(as_json: bool) -> None:
    """Run the reference's complete example in memory."""
    from ..demo import run_demo

    if as_json:
        _print_json(run_demo(echo=lambda _line: None))
    else:
        run_demo()


@cli.command()
@_json_flag
@click.pass_context
def users(ctx: click.Context, as_json: bool) -> None:
    """List the users that hold data."""
    _print_names(admin.users(_store(ctx)), as_json)


@cli.command()
@click.argument("user")
@_json_flag
@click.pass_context
def agents(ctx: click.Context, user: str, as_json: bool) -> None:
    """List the agents of USER that hold data."""
    _print_names(admin.agents(_store(ctx), user), as_json)


@cli.command()
@click.argument("user")
@click.argument("agent")
@_json_flag
@click.pass_context
def namespaces(ctx: click.Context, user: str, agent: str, as_json: bool) -> None:
    """List the namespaces of USER's AGENT that hold data."""
    _print_names(admin.namespaces(_store(ctx), user, agent), as_json)


@cli.command()
@click.argument("user")
@click.argument("agent")
@_namespace_option
@click.option(
    "--prefix", "-p", help="Only keys that start with this text (literal, case-sensitive)."
)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many keys.")
@_json_flag
@click.pass_context
def keys(
    ctx: click.Context,
    user: str,
    agent: str,
    namespace: str,
    prefix: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List the keys of a namespace, sorted."""
    _print_names(admin.keys(_store(ctx), user, agent, namespace, prefix, limit), as_json)


@cli.command()
@click.argument("user")
@click.argument("agent")
@click.argument("key")
@_namespace_option
@_json_flag
@click.pass_context
def get(ctx: click.Context, user: str, agent: str, key: str, namespace: str, as_json: bool) -> None:
    """Show an item with its metadata, dates and size."""
    found = admin.item(_store(ctx), user, agent, key, namespace)
    if found is None:
        raise CommandError(f"no key {key!r} in {user}/{agent}/{namespace}", EXIT_NOT_FOUND)
    if as_json:
        _print_json(found)
        return
    for name in ("userId", "agentName", "namespace", "key", "createdAt", "updatedAt", "version"):
        click.echo(f"{name + ':':<11} {found[name]}")
    expired = " (expired: no agent sees it; the server deletes it soon)" if found["expired"] else ""
    click.echo(f"{'expiresAt:':<11} {found['expiresAt'] or 'never'}{expired}")
    click.echo(f"{'size:':<11} {found['size']} bytes")
    click.echo(f"{'metadata:':<11} {json.dumps(found['metadata'], ensure_ascii=False)}")
    click.echo("value:")
    click.echo(json.dumps(found["value"], indent=2, ensure_ascii=False))


@cli.command()
@click.option(
    "--top",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many of the largest to show.",
)
@_json_flag
@click.pass_context
def stats(ctx: click.Context, top: int, as_json: bool) -> None:
    """Show counts, sizes and the largest scopes."""
    summary = admin.stats(_store(ctx), top)
    if as_json:
        _print_json(summary)
        return
    click.echo(
        _table(
            ["documents", "users", "agents", "namespaces", "bytes"],
            [[summary[n] for n in ("documents", "users", "agents", "namespaces", "size")]],
        )
    )
    for kind, columns in [
        ("users", ["userId"]),
        ("agents", ["userId", "agentName"]),
        ("namespaces", ["userId", "agentName", "namespace"]),
    ]:
        rows = [
            [g.get(c, "(missing)") for c in columns] + [g["documents"], g["size"]]
            for g in summary[f"largest_{kind}"]
        ]
        click.echo(f"\nlargest {kind}:")
        click.echo(_table([*columns, "documents", "bytes"], rows))


@cli.command(name="set")
@click.argument("user")
@click.argument("agent")
@click.argument("key")
@click.argument("value")
@_namespace_option
@click.option(
    "--metadata", "-m", metavar="JSON", help="A JSON object merged into the item's metadata."
)
@_json_flag
@click.pass_context
def set_(
    ctx: click.Context,
    user: str,
    agent: str,
    key: str,
    value: str,
    namespace: str,
    metadata: str | None,
    as_json: bool,
) -> None:
    """Store VALUE, a JSON text, under KEY."""
    parsed = _json_argument(value, "VALUE")
    meta = _json_argument(metadata, "--metadata") if metadata is not None else None
    _store(ctx).proxy(user, agent, namespace).set(key, parsed, metadata=meta)
    report = {"set": key, "namespace": namespace}
    _print_json(report) if as_json else click.echo(f"set {key!r} in {user}/{agent}/{namespace}")


# How many keys a question or a report names before it only counts the rest.
_KEYS_NAMED = 10


def _key_names(keys: list[str]) -> str:
    named = ", ".join(map(repr, keys[:_KEYS_NAMED]))
    rest = len(keys) - _KEYS_NAMED
    return f"{named} and {rest} more" if rest > 0 else named


def _no_keys(keys: list[str], where: str) -> str:
    return f"no key{'' if len(keys) == 1 else 's'} {_key_names(keys)} in {where}"


@cli.command()
@click.argument("user")
@click.argument("agent")
@click.argument("keys", metavar="KEY...", nargs=-1, required=True)
@_namespace_option
@_yes_option
@_json_flag
@click.pass_context
def delete(
    ctx: click.Context,
    user: str,
    agent: str,
    keys: tuple[str, ...],
    namespace: str,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete one or more items.

    Looks first: keys that do not exist are reported, and the question is asked only when
    something exists (exit 1 when nothing does)."""
    store = _store(ctx)
    where = f"{user}/{agent}/{namespace}"
    # one query for every key, reading no value; repeats count once, as in delete_many
    found = admin.existing_keys(store, user, agent, keys, namespace)
    found_set = set(found)
    missing = [key for key in dict.fromkeys(keys) if key not in found_set]
    if not found:
        if as_json:
            _print_json({"deleted": 0, "missing": missing})
            ctx.exit(EXIT_NOT_FOUND)
        raise CommandError(_no_keys(missing, where), EXIT_NOT_FOUND)
    if missing and not as_json:  # before the question, so that the answer is informed
        click.echo(f"agent-datastore: {_no_keys(missing, where)}", err=True)
    question = (
        f"Delete {found[0]!r} from {where}?"
        if len(found) == 1
        else f"Delete {_items(len(found))} from {where}: {_key_names(found)}?"
    )
    _confirm(question, yes)
    # only what was asked about: a missing key written meanwhile was not confirmed
    deleted = store.proxy(user, agent, namespace).delete_many(found)
    if as_json:
        _print_json({"deleted": deleted, "missing": missing})
    elif deleted == len(found):
        click.echo(f"deleted {_items(deleted)}: {_key_names(found)}")
    else:  # deleted by someone else between the look and the delete
        click.echo(f"deleted {_items(deleted)} of {_key_names(found)}; the rest were gone")
    if not deleted:
        ctx.exit(EXIT_NOT_FOUND)


@cli.command()
@click.argument("user")
@click.argument("agent")
@click.option("--namespace", "-n", required=True, help="The namespace to empty.")
@_yes_option
@_json_flag
@click.pass_context
def clear(
    ctx: click.Context, user: str, agent: str, namespace: str, yes: bool, as_json: bool
) -> None:
    """Delete every item of one namespace."""
    proxy = _store(ctx).proxy(user, agent, namespace)
    _confirm(f"Delete every item of {user}/{agent}/{namespace}?", yes)
    deleted = proxy.clear()
    _print_json({"deleted": deleted}) if as_json else click.echo(
        f"deleted {_items(deleted)} from {user}/{agent}/{namespace}"
    )


@cli.command()
@click.argument("user")
@click.argument("agent", required=False)
@_yes_option
@_json_flag
@click.pass_context
def purge(ctx: click.Context, user: str, agent: str | None, yes: bool, as_json: bool) -> None:
    """Erase all data of USER, or only of USER's AGENT."""
    store = _store(ctx)
    scope = f"user {user!r}" + (f", agent {agent!r}" if agent else "")
    _confirm(f"Erase every item of {scope}, in every namespace?", yes)
    deleted = admin.purge(store, user, agent)
    _print_json({"deleted": deleted}) if as_json else click.echo(
        f"erased {_items(deleted)} of {scope}"
    )


@cli.command()
@_json_flag
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check the connection, the index and the documents.

    Exits 0 when healthy, 1 when a check fails, 3 when the database cannot be reached (4
    when it refuses, 2 for a URI that is not one). --json prints a JSON object in every
    case: when the checks cannot run, {"healthy": false, "error": ...}."""
    try:
        with _translated_errors():
            report = admin.doctor(_store(ctx))
    except CommandError as exc:
        if as_json:
            # a monitor reading stdout gets its answer even when there is no store to ask; the
            # error is the line text mode prints, and nothing more of the database
            _print_json({"healthy": False, "error": exc.format_message()})
        raise  # the group prints that line on stderr, with its exit code
    if as_json:
        _print_json(report)
    else:
        click.echo(f"round trip:        {report['latency_ms']:.1f} ms")
        click.echo(f"server version:    {report['server_version']}")
        missing = "MISSING (run ensure-indexes)"
        click.echo(f"unique index:      {report['unique_index'] or missing}")
        click.echo(f"ttl index:         {report['ttl_index'] or missing}")
        for problem in report["index_problems"]:
            click.echo(f"  {problem}")
        click.echo(f"documents:         {report['documents']} (estimated from metadata)")
        click.echo(f"invalid documents: {report['invalid_documents']}")
        for sample in report["invalid_sample"]:
            click.echo(f"  {json.dumps(sample, ensure_ascii=False)}")
        click.echo("healthy" if report["healthy"] else "NOT healthy")
    if not report["healthy"]:
        ctx.exit(EXIT_NOT_FOUND)


@cli.command(name="ensure-indexes")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=ENSURE_INDEXES_TIMEOUT,
    show_default=True,
    help="Seconds to wait for the index build; the server aborts a build still running then.",
)
@_json_flag
@click.pass_context
def ensure_indexes(ctx: click.Context, timeout: float, as_json: bool) -> None:
    """Create the unique and TTL indexes if they are missing.

    Waits for the build, at most --timeout seconds; the server aborts a build still running
    then."""
    _store(ctx).ensure_indexes(timeout=timeout)
    _print_json({"index": "ok"}) if as_json else click.echo("unique and TTL indexes present")
