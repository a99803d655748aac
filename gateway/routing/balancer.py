"""Which deployment of a model takes the next try: weighted random, or least-in-flight.

Both only look at deployments whose breaker would let a call through and that this request has
not already tried (a retry goes elsewhere when it can). The work is O(deployments) with no
allocation beyond one small list, so routing over two deployments costs about what one does.

``least_in_flight`` (the default) picks the deployment with the fewest calls in flight per unit
of weight, ties broken by weight: under load it follows the weights, and a slow deployment,
which holds its calls longer, gets fewer of them. Measured in ``tests/unit/test_balancer.py``
and ``bench balance``: with one of two deployments made 200 ms slow, it sends it a small share,
where ``weighted`` keeps sending it half the traffic.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

from gateway.catalog import Strategy


class Candidate(Protocol):
    weight: float
    in_flight: int


C = TypeVar("C", bound=Candidate)


def pick_weighted(candidates: Sequence[C], rng: random.Random) -> C:
    """A random candidate, each with probability weight / total weight."""
    total = 0.0
    for candidate in candidates:
        total += candidate.weight
    point = rng.random() * total
    for candidate in candidates:
        point -= candidate.weight
        if point < 0:
            return candidate
    return candidates[-1]


def pick_least_in_flight(candidates: Sequence[C], rng: random.Random) -> C:
    """The candidate with the fewest calls in flight per unit of weight; ties by weight."""
    best: list[C] = []
    best_load = float("inf")
    for candidate in candidates:
        load = (candidate.in_flight + 1) / candidate.weight
        if load < best_load:
            best_load, best = load, [candidate]
        elif load == best_load:
            best.append(candidate)
    return best[0] if len(best) == 1 else pick_weighted(best, rng)


PICKERS = {Strategy.WEIGHTED: pick_weighted, Strategy.LEAST_IN_FLIGHT: pick_least_in_flight}
