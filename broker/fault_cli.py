"""``moldau fault``: list, add and clear a running broker's fault rules over its control endpoint.

    moldau fault --bootstrap localhost:9092 list
    moldau fault fail Produce NOT_LEADER_OR_FOLLOWER --count 3 --topic orders
    moldau fault delay Fetch 500
    moldau fault close --after 10
    moldau fault drop Produce
    moldau fault offline orders 0            (and: moldau fault online orders 0)
    moldau fault move-coordinator --group billing --duration-ms 5000
    moldau fault fail-disk orders 0
    moldau fault add --kind fail --api Produce --error NOT_LEADER_OR_FOLLOWER --count 3
    moldau fault clear [ID]

The broker needs ``control.endpoint.enable=true`` (``moldau serve --profile ci`` sets it). Output is a
table or one line per action for people, JSON with ``--json``. Exit codes: 0 done, 1 the broker could
not be reached or refused (endpoint off, unknown rule id), 2 bad usage or a rule the broker rejected.
``add_parser`` adds the subcommand to ``moldau``'s parser and ``run`` executes it; nothing beyond
argparse is imported until ``run``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_TIMEOUT_S = 10.0

_KINDS = ("fail", "delay", "close", "drop", "offline", "disk", "coordinator")


def _count(text: str) -> int | None:
    """``--count``: a positive number, or ``all`` for a rule that acts until cleared."""
    if text.lower() in ("all", "always", "unlimited"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'all', got {text!r}")
    return value


def connection_options(parser: argparse.ArgumentParser, *, with_defaults: bool) -> None:
    # Accepted before and after the action; the action's copies have no defaults so they do not
    # overwrite values given before it.
    def default(value: Any) -> Any:
        return value if with_defaults else argparse.SUPPRESS

    parser.add_argument("--bootstrap", metavar="HOST:PORT", default=default(DEFAULT_BOOTSTRAP),
                        help=f"the broker (default {DEFAULT_BOOTSTRAP})")
    parser.add_argument("--json", action="store_true", default=default(False), help="print JSON for scripts")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", default=default(DEFAULT_TIMEOUT_S),
                        help=f"give up on the broker after this long (default {DEFAULT_TIMEOUT_S:g})")


def _request_scope(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topic", help="only requests naming this topic")
    parser.add_argument("--client-id", help="only requests from this client id")
    parser.add_argument("--group", help="only requests naming this consumer group")
    parser.add_argument("--duration-ms", type=int, metavar="MS", help="the rule ends after this long")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``fault`` to ``moldau``'s subcommands (an ``add_subparsers`` result); returns its parser."""
    fault = commands.add_parser(
        "fault", help="inject faults into a running broker (its control endpoint)",
        description="List, add and clear the fault rules of a running Moldau broker, through the control "
                    "endpoint on its Kafka port (control.endpoint.enable=true; the ci profile sets it).",
        epilog="APIs go by Kafka's names (Produce, Fetch, JoinGroup, ...) or keys; errors by Kafka's names "
               "(NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, ...) or codes.")
    connection_options(fault, with_defaults=True)
    fault.set_defaults(fault_parser=fault)
    actions = fault.add_subparsers(dest="fault_action", metavar="ACTION")
    shared = type(fault)(add_help=False)  # moldau's parser class, whatever it is
    connection_options(shared, with_defaults=False)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, parents=[shared], help=help_text, description=help_text[0].upper()
                                 + help_text[1:] + ".")
        sub.set_defaults(fault_parser=sub)
        return sub

    action("list", "list the rules in force")
    clear = action("clear", "clear one rule by id, or every rule (those matching the filters given)")
    clear.add_argument("id", nargs="?", type=int, help="the rule's id (from list)")
    clear.add_argument("--kind", choices=_KINDS, help="only rules of this kind")
    clear.add_argument("--topic", help="only rules for this topic")
    clear.add_argument("--partition", type=int, help="only rules for this partition")

    add = action("add", "add a rule of any kind, field by field")
    add.add_argument("--kind", required=True, choices=_KINDS)
    add.add_argument("--api", help="API name or key")
    add.add_argument("--error", help="Kafka error name or code (fail)")
    add.add_argument("--count", type=_count, help="act this many times, then go (default: until cleared)")
    add.add_argument("--delay-ms", type=int, metavar="MS", help="response delay (delay)")
    add.add_argument("--after", type=int, metavar="N", help="requests served per connection before it is "
                                                             "closed (close)")
    add.add_argument("--partition", type=int, help="partition (offline, disk; default every one)")
    _request_scope(add)

    fail = action("fail", "answer matching requests with a Kafka error, unhandled")
    fail.add_argument("api", help="API name or key, e.g. Produce")
    fail.add_argument("error", help="Kafka error name or code, e.g. NOT_LEADER_OR_FOLLOWER")
    fail.add_argument("--count", type=_count, default=1, help="how many requests (default 1; 'all')")
    _request_scope(fail)

    delay = action("delay", "hold back the responses to matching requests")
    delay.add_argument("api", help="API name or key, e.g. Fetch")
    delay.add_argument("delay_ms", type=int, metavar="MS", help="the delay in milliseconds")
    delay.add_argument("--count", type=_count, default=None, help="how many responses (default all)")
    _request_scope(delay)

    close = action("close", "close connections, unanswered, after some requests")
    close.add_argument("--after", type=int, default=0, metavar="N",
                       help="matching requests each connection may make first (default 0)")
    close.add_argument("--count", type=_count, default=1, help="how many connections (default 1; 'all')")
    close.add_argument("--api", help="only requests of this API")
    _request_scope(close)

    drop = action("drop", "never answer matching requests (clients time out)")
    drop.add_argument("api", help="API name or key, e.g. Produce")
    drop.add_argument("--count", type=_count, default=1, help="how many requests (default 1; 'all')")
    _request_scope(drop)

    for name, help_text in (("offline", "take a partition offline: no leader, NOT_LEADER_OR_FOLLOWER"),
                            ("fail-disk", "fail a partition's disk: KAFKA_STORAGE_ERROR")):
        sub = action(name, help_text)
        sub.add_argument("topic")
        sub.add_argument("partition", nargs="?", type=int, help="default: every partition of the topic")
        sub.add_argument("--duration-ms", type=int, metavar="MS", help="back to normal after this long")
    online = action("online", "bring a partition taken offline back (clears its offline rules)")
    online.add_argument("topic")
    online.add_argument("partition", nargs="?", type=int, help="default: every partition of the topic")

    move = action("move-coordinator", "move the group coordinator away (NOT_COORDINATOR), then back")
    move.add_argument("--group", help="only this group (default every group)")
    move.add_argument("--client-id", help="only requests from this client id")
    move.add_argument("--duration-ms", type=int, metavar="MS",
                      help="service recovers after this long (default: when cleared)")
    return fault


def run(args: argparse.Namespace) -> int:
    """Execute ``moldau fault ...``; the exit code."""
    if getattr(args, "fault_action", None) is None:
        args.fault_parser.print_help(sys.stderr)
        return EXIT_USAGE
    from broker.faults import FaultClient

    try:
        client = FaultClient(args.bootstrap, timeout=args.timeout)
        return _run(client, args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:  # ControlEndpointError included: unreachable, endpoint off, refused
        return _fail(str(exc), EXIT_RUNTIME)


def _run(client: Any, args: argparse.Namespace) -> int:
    name = args.fault_action
    if name == "list":
        rules = client.rules()
        _print({"rules": rules} if args.json else format_table(rules))
        return EXIT_OK
    if name == "clear":
        cleared = client.clear(args.id, kind=args.kind, topic=args.topic, partition=args.partition)
        if args.id is not None and not cleared:
            if args.json:
                _print({"cleared": 0})
            return _fail(f"no fault rule {args.id} on {args.bootstrap}", EXIT_RUNTIME)
        _print({"cleared": cleared} if args.json else f"cleared {cleared} rule{'' if cleared == 1 else 's'}")
        return EXIT_OK
    if name == "online":
        cleared = client.bring_partition_online(args.topic, args.partition)
        _print({"cleared": cleared} if args.json else
               f"cleared {cleared} offline rule{'' if cleared == 1 else 's'} for {args.topic}")
        return EXIT_OK
    kind, fields = rule_from_args(args)
    rule = client.add(kind, **fields)
    _print(rule if args.json else f"added rule {rule['id']}: {describe(rule)}")
    return EXIT_OK


def rule_from_args(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The (kind, fields) an adding action describes."""
    fields = {key: getattr(args, key, None) for key in ("api", "error", "count", "delay_ms", "after", "topic",
                                                        "partition", "client_id", "group", "duration_ms")}
    kind = {"add": getattr(args, "kind", None), "fail-disk": "disk",
            "move-coordinator": "coordinator"}.get(args.fault_action, args.fault_action)
    return kind, fields


def _fail(message: str, code: int) -> int:
    print(f"moldau fault: error: {message}", file=sys.stderr, flush=True)
    return code


def _print(value: Any) -> None:
    print(value if isinstance(value, str) else json.dumps(value, indent=2), flush=True)


# ---------------------------------------------------------------- human output

_EFFECT = {
    "drop": "no answer",
    "offline": "no leader (LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER)",
    "disk": "KAFKA_STORAGE_ERROR",
    "coordinator": "NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE",
}


def _scope(rule: dict[str, Any]) -> str:
    parts = [f"{key}={rule[key]}" for key in ("api", "topic", "partition", "client_id", "group")
             if rule.get(key) is not None]
    return " ".join(parts) or "everything"


def _effect(rule: dict[str, Any]) -> str:
    kind = rule["kind"]
    if kind == "fail":
        return str(rule["error"])
    if kind == "delay":
        return f"+{rule['delay_ms']} ms"
    if kind == "close":
        return f"close after {rule.get('after') or 0}"
    return _EFFECT.get(kind, kind)


def describe(rule: dict[str, Any]) -> str:
    """One line for a rule: kind, scope, effect, how long it lasts."""
    limits = []
    if rule.get("remaining") is not None:
        limits.append(f"{rule['remaining']} more time{'' if rule['remaining'] == 1 else 's'}")
    if rule.get("expires_in_ms") is not None:
        limits.append(f"for {rule['expires_in_ms'] / 1000:g} s")
    lasting = ", ".join(limits) or "until cleared"
    return f"{rule['kind']} [{_scope(rule)}] -> {_effect(rule)}, {lasting}"


def format_table(rules: list[dict[str, Any]]) -> str:
    if not rules:
        return "no fault rules"
    header = ("ID", "KIND", "SCOPE", "EFFECT", "LEFT", "HITS", "EXPIRES")
    rows = [(str(r["id"]), r["kind"], _scope(r), _effect(r),
             "-" if r.get("remaining") is None else str(r["remaining"]), str(r.get("hits", 0)),
             "-" if r.get("expires_in_ms") is None else f"in {r['expires_in_ms'] / 1000:g} s") for r in rules]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in (header, *rows))
