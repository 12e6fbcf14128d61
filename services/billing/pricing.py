"""Prices of N channels: the cheapest exact mix of singles and official packs. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

DEFAULT_CATALOG = Path(__file__).with_name("catalog.json")


@dataclass(frozen=True)
class Catalog:
    currency: str
    single_cents: int
    packs: tuple[tuple[int, int], ...]  # (size, price_cents), ascending by size

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Catalog:
        packs = tuple(sorted((int(size), int(price)) for size, price in data["packs"].items()))
        catalog = cls(currency=str(data["currency"]), single_cents=int(data["single_cents"]), packs=packs)
        if catalog.single_cents <= 0 or any(size < 2 or price <= 0 for size, price in packs):
            raise ValueError("catalogue prices must be positive and packs larger than one channel")
        return catalog

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        return cls.from_dict(orjson.loads((path or DEFAULT_CATALOG).read_bytes()))

    @cached_property
    def items(self) -> tuple[tuple[int, int], ...]:
        """Every purchasable unit, largest first so ties prefer fewer, bigger packs."""
        return tuple(sorted(((1, self.single_cents), *self.packs), reverse=True))

    @property
    def largest_pack(self) -> int:
        return max((size for size, _ in self.packs), default=1)


@dataclass(frozen=True)
class Line:
    description: str
    package_size: int
    quantity: int
    unit_amount_cents: int

    @property
    def amount_cents(self) -> int:
        return self.quantity * self.unit_amount_cents

    def as_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "package_size": self.package_size,
            "quantity": self.quantity,
            "unit_amount_cents": self.unit_amount_cents,
            "amount_cents": self.amount_cents,
        }


@dataclass(frozen=True)
class Quote:
    channels: int
    lines: tuple[Line, ...]
    currency: str
    suggestion: dict[str, Any] | None

    @property
    def total_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "channels": self.channels,
            "total_cents": self.total_cents,
            "currency": self.currency,
            "lines": [line.as_dict() for line in self.lines],
        }
        if self.suggestion is not None:
            out["suggestion"] = self.suggestion
        return out


def _cheapest_table(catalog: Catalog, upto: int) -> tuple[list[int], list[int]]:
    """cost[n] of exactly n channels and the item size chosen last, by dynamic programming."""
    infinity = 1 << 62
    cost = [0] + [infinity] * upto
    choice = [0] * (upto + 1)
    for n in range(1, upto + 1):
        for size, price in catalog.items:
            if size <= n and cost[n - size] + price < cost[n]:
                cost[n] = cost[n - size] + price
                choice[n] = size
    return cost, choice


def cheapest_mix(catalog: Catalog, channels: int) -> dict[int, int]:
    """{package size: count} of the cheapest exact combination for `channels` channels."""
    if channels < 0:
        raise ValueError("channels must be zero or more")
    _, choice = _cheapest_table(catalog, channels)
    mix: dict[int, int] = {}
    n = channels
    while n:
        mix[choice[n]] = mix.get(choice[n], 0) + 1
        n -= choice[n]
    return mix


def _lines(catalog: Catalog, mix: dict[int, int]) -> tuple[Line, ...]:
    prices = dict(catalog.items)
    return tuple(
        Line(
            description="Extra channel" if size == 1 else f"Pack of {size} channels",
            package_size=size,
            quantity=count,
            unit_amount_cents=prices[size],
        )
        for size, count in sorted(mix.items(), reverse=True)
    )


def quote(catalog: Catalog, channels: int) -> Quote:
    """The exact-mix price of `channels`, with a suggestion when buying more would cost less."""
    horizon = channels + catalog.largest_pack
    cost, _ = _cheapest_table(catalog, horizon)
    exact = cost[channels]
    suggestion = None
    best = min(range(channels + 1, horizon + 1), key=lambda m: (cost[m], m), default=None)
    if best is not None and cost[best] < exact:
        mix = cheapest_mix(catalog, best)
        single_pack = next(iter(mix)) if len(mix) == 1 and next(iter(mix.values())) == 1 else None
        what = f"a pack of {single_pack} channels" if single_pack else f"{best} channels"
        suggestion = {
            "channels": best,
            "total_cents": cost[best],
            "saving_cents": exact - cost[best],
            "message": (
                f"{what} costs {_brl(cost[best])}, {_brl(exact - cost[best])} less than "
                f"{channels} channels at {_brl(exact)}"
            ),
        }
        if single_pack:
            suggestion["package_size"] = single_pack
    return Quote(channels, _lines(catalog, cheapest_mix(catalog, channels)), catalog.currency, suggestion)


def _brl(cents: int) -> str:
    return f"R${cents // 100},{cents % 100:02d}"
