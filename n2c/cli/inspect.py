"""``n2c inspect``: a NIR graph as a table."""

from __future__ import annotations



def add_parser(sub) -> None:
    i = sub.add_parser("inspect", help="print a NIR graph as a table: nodes, shapes, parameters, backends",
                       description="Print a NIR graph's nodes, types, shapes, parameter summary, n2c metadata, "
                       "and which backend can run it.")
    i.add_argument("graph", help="NIR file")
    i.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    i.set_defaults(func=cmd_inspect)


def cmd_inspect(args) -> int:
    from backends.nir.inspect import describe
    print(describe(args.graph, as_json=args.json, isolate=True))
    return 0
