"""Cheapest exact mix against an independent brute force, the FAQ, and suggestions."""

from __future__ import annotations

import itertools

import pytest

from services.billing.pricing import Catalog, cheapest_mix, quote

CATALOG = Catalog.load()


def brute_force(n: int) -> int:
    best = None
    sizes = [10, 20, 30, 40, 50]
    prices = {10: 3500, 20: 6000, 30: 8000, 40: 9500, 50: 10500}
    for counts in itertools.product(*(range(n // s + 1) for s in sizes)):
        used = sum(c * s for c, s in zip(counts, sizes, strict=True))
        if used > n:
            continue
        cost = sum(c * prices[s] for c, s in zip(counts, sizes, strict=True)) + (n - used) * 500
        best = cost if best is None else min(best, cost)
    assert best is not None
    return best


@pytest.mark.parametrize("n", range(1, 201))
def test_quote_matches_brute_force(n: int) -> None:
    q = quote(CATALOG, n)
    assert q.total_cents == brute_force(n)
    assert sum(line.package_size * line.quantity for line in q.lines) == n
    assert sum(line.amount_cents for line in q.lines) == q.total_cents
    assert q.currency == "BRL"


def test_eleven_channels_are_a_ten_pack_and_one_single() -> None:
    q = quote(CATALOG, 11)
    assert q.total_cents == 4000
    assert cheapest_mix(CATALOG, 11) == {10: 1, 1: 1}
    assert q.suggestion is None


@pytest.mark.parametrize(("n", "exact", "better", "saving"), [(9, 4500, 10, 1000), (25, 8500, 30, 500),
                                                               (29, 10500, 30, 2500), (49, 14000, 50, 3500)])
def test_suggests_a_larger_pack_that_costs_less(n: int, exact: int, better: int, saving: int) -> None:
    q = quote(CATALOG, n)
    assert q.total_cents == exact  # what is charged never changes silently
    assert q.suggestion is not None
    assert (q.suggestion["channels"], q.suggestion["saving_cents"]) == (better, saving)


@pytest.mark.parametrize("n", [0, 1, 10, 11, 20, 50, 100])
def test_no_suggestion_when_exact_is_cheapest(n: int) -> None:
    assert quote(CATALOG, n).suggestion is None


def test_catalogue_comes_from_configuration() -> None:
    cheap = Catalog.from_dict({"currency": "BRL", "single_cents": 100, "packs": {"10": 500}})
    assert quote(cheap, 12).total_cents == 700


def test_catalogue_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        Catalog.from_dict({"currency": "BRL", "single_cents": 0, "packs": {}})
