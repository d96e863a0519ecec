"""SQL that adds a bucket's values in `np.add.reduceat`'s order.

Why: the engine buckets 1m bars in numpy (`tasks.engine.buckets.aggregate_buckets`:
`np.add.reduceat` for the volume), while the database's relations are kept in SQL, whose
`sum()` is a plain running sum. Floating-point addition is not associative, so the two
differ in the last bit of about every other bucket, and so would a live signal's volume_z
and score from `signalengine backtest`'s. Both the plain-PostgreSQL upkeep
(tasks.marketdata.timeframes) and the TimescaleDB exact views (core.timescale_objects) add
through this instead.
"""

from __future__ import annotations

__all__ = ["reduceat_sum_sql"]

# numpy's pairwise summation (what `np.add.reduceat` adds a segment's values after the
# first with): fewer than 8 values in a plain running sum; up to 128 in 8 interleaved
# running sums, combined as a tree, then the leftover (< 8) values one by one.
_PAIRWISE_LANES = 8
_PAIRWISE_BLOCK = 128
_ZERO = "'-0'::float8"  # x + -0.0 == x for every x (+0.0 would turn -0.0 into +0.0)


def reduceat_sum_sql(item: str, count: str, rows: int) -> str:
    """SQL adding `item.format(1) .. item.format(count)` as `np.add.reduceat` adds a segment.

    reduceat: first value + pairwise sum of the others (numpy's order, unrolled up to
    `rows` values: the most a bucket can hold). Subscripts past `count` read NULL and add
    as -0.0, which changes no sum. Exact up to `_PAIRWISE_BLOCK` + 1 rows per bucket;
    beyond that numpy splits the block in halves, which this does not (the last bits of
    such a bucket may differ: sql/timescale/README.md). `item` is a template with one `{}`
    for the 1-based position ("v[{}]"), `count` the SQL of how many values there are.
    """

    def value(index: str) -> str:
        return f"coalesce({item.format(index)}, {_ZERO})"

    def chain(start: str, terms: list[str]) -> str:
        out = start
        for term in terms:
            out = f"({out} + {term})"
        return out

    short = chain(value("2"), [value(str(i)) for i in range(3, min(rows, _PAIRWISE_LANES) + 1)])
    if rows <= _PAIRWISE_LANES:  # every bucket: under 8 values after the first
        return f"({value('1')} + {short})"
    rest = min(rows, _PAIRWISE_BLOCK + 1) - 1  # values after the first, at most
    block = f"({count} - 1 - mod({count} - 1, {_PAIRWISE_LANES}))"  # those the lanes take

    def lane(j: int) -> str:
        # value i of the rest (0-based) is item i + 2; a lane adds values j, j + 8, ...
        terms = [
            f"(CASE WHEN {i} < {block} THEN {value(str(i + 2))} ELSE {_ZERO} END)"
            for i in range(j + _PAIRWISE_LANES, rest, _PAIRWISE_LANES)
        ]
        return chain(value(str(j + 2)), terms)

    r = [lane(j) for j in range(_PAIRWISE_LANES)]
    tree = f"((({r[0]} + {r[1]}) + ({r[2]} + {r[3]})) + (({r[4]} + {r[5]}) + ({r[6]} + {r[7]})))"
    # the leftover values, one by one (past `count` they read NULL: -0.0)
    long = chain(tree, [value(f"{block} + {i + 2}") for i in range(_PAIRWISE_LANES - 1)])
    return f"({value('1')} + (CASE WHEN {count} <= {_PAIRWISE_LANES} THEN {short} ELSE {long} END))"
