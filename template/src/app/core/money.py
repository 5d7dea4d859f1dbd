"""Money as an exact Decimal amount in a currency's minor units; binary floats are refused.

``0.1 + 0.2 != 0.3`` in binary floating point, and ``Decimal(0.1)`` keeps the float's error
(``0.1000000000000000055511151231257827...``). Amounts therefore enter as ``str``, ``int``
or ``Decimal`` and leave as ``Decimal``, ``str`` or an integer count of minor units; a
float anywhere raises ``TypeError``. Store amounts in ``Numeric`` columns (or integer minor
units), never ``Float``.
"""

import functools
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from types import MappingProxyType

MINOR_UNITS = MappingProxyType(
    {
        "AUD": 2,
        "BHD": 3,
        "CAD": 2,
        "CHF": 2,
        "CNY": 2,
        "CZK": 2,
        "DKK": 2,
        "EUR": 2,
        "GBP": 2,
        "HKD": 2,
        "INR": 2,
        "JPY": 0,
        "KRW": 0,
        "KWD": 3,
        "NOK": 2,
        "NZD": 2,
        "PLN": 2,
        "SEK": 2,
        "SGD": 2,
        "USD": 2,
    }
)
"""Digits after the decimal point per ISO 4217 currency; extend it for the ones you use."""

type Amount = Decimal | int | str
"""What an amount may be built from: never a float."""


def to_decimal(value: Amount) -> Decimal:
    """Convert ``value`` to a finite Decimal without ever passing through a float.

    Args:
        value: A Decimal, an int, or a decimal string such as ``"12.30"``.

    Returns:
        The exact Decimal.

    Raises:
        TypeError: If ``value`` is a float, a bool, or another type.
        ValueError: If ``value`` is not a finite decimal number.
    """
    if isinstance(value, float):
        raise TypeError(
            f"money refuses float {value!r}: a binary float cannot hold most decimal amounts; "
            f"pass a str such as {str(value)!r} or a Decimal"
        )
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise TypeError(f"money needs a Decimal, int or str amount, got {type(value).__name__}")
    try:
        result = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {value!r}") from None
    if not result.is_finite():
        raise ValueError(f"money must be finite, got {value!r}")
    return result


@functools.total_ordering
@dataclass(frozen=True, slots=True)
class Money:
    """An amount of one currency, quantized to the currency's minor units.

    ``Money("10.005", "EUR")`` is ``10.00 EUR`` (banker's rounding, ROUND_HALF_EVEN);
    ``Money(0.1, "EUR")`` raises ``TypeError``. Arithmetic needs equal currencies.
    """

    amount: Decimal
    currency: str

    def __init__(self, amount: Amount, currency: str) -> None:
        """Build a Money value.

        Args:
            amount: Decimal, int or decimal string; never a float.
            currency: ISO 4217 code listed in ``MINOR_UNITS``.

        Raises:
            TypeError: If ``amount`` is a float or another unsupported type.
            ValueError: If the amount is not finite or the currency is unknown.
        """
        code = currency.upper()
        if code not in MINOR_UNITS:
            raise ValueError(f"unknown currency {currency!r}; add it to MINOR_UNITS")
        exponent = Decimal(1).scaleb(-MINOR_UNITS[code])
        quantized = to_decimal(amount).quantize(exponent, rounding=ROUND_HALF_EVEN)
        object.__setattr__(self, "amount", quantized)
        object.__setattr__(self, "currency", code)

    @classmethod
    def exact(cls, amount: Amount, currency: str) -> "Money":
        """Build Money only when no rounding is needed, for amounts a client sent.

        ``Money.exact("10.5", "EUR")`` is ``10.50 EUR``; ``Money.exact("10.005", "EUR")`` raises,
        where the constructor would round to ``10.00`` and silently change what was asked for.

        Args:
            amount: Decimal, int or decimal string; never a float.
            currency: ISO 4217 code listed in ``MINOR_UNITS``.

        Returns:
            The Money value, equal to ``amount``.

        Raises:
            TypeError: If ``amount`` is a float or another unsupported type.
            ValueError: If the currency is unknown or ``amount`` has more decimal places
                than the currency's minor units.
        """
        exact = to_decimal(amount)
        money = cls(exact, currency)
        if money.amount != exact:
            digits = MINOR_UNITS[money.currency]
            raise ValueError(
                f"{money.currency} amounts have at most {digits} decimal places, got {amount}"
            )
        return money

    @classmethod
    def from_minor(cls, units: int, currency: str) -> "Money":
        """Build Money from an integer count of minor units (cents, pence, yen).

        Args:
            units: The amount in minor units.
            currency: ISO 4217 code listed in ``MINOR_UNITS``.

        Returns:
            The Money value.
        """
        digits = MINOR_UNITS.get(currency.upper(), 0)
        return cls(to_decimal(units).scaleb(-digits), currency)

    @property
    def minor_units(self) -> int:
        """The amount as an integer count of minor units, for storage or payment APIs."""
        return int(self.amount.scaleb(MINOR_UNITS[self.currency]))

    def __str__(self) -> str:
        """Return the amount and currency, for example ``12.30 EUR``."""
        return f"{self.amount} {self.currency}"

    def __add__(self, other: "Money") -> "Money":
        """Add two amounts of the same currency."""
        return Money(self.amount + self._same(other).amount, self.currency)

    def __sub__(self, other: "Money") -> "Money":
        """Subtract an amount of the same currency."""
        return Money(self.amount - self._same(other).amount, self.currency)

    def __neg__(self) -> "Money":
        """Return the negated amount."""
        return Money(-self.amount, self.currency)

    def __mul__(self, factor: Decimal | int) -> "Money":
        """Multiply by an exact factor (quantity, rate as Decimal); floats are refused."""
        return Money(self.amount * to_decimal(factor), self.currency)

    __rmul__ = __mul__

    def __lt__(self, other: "Money") -> bool:
        """Compare two amounts of the same currency."""
        return self.amount < self._same(other).amount

    def split(self, parts: int) -> tuple["Money", ...]:
        """Split into ``parts`` amounts that differ by at most one minor unit and sum exactly.

        Args:
            parts: How many amounts to produce.

        Returns:
            The amounts, larger ones first.

        Raises:
            ValueError: If ``parts`` is less than 1.
        """
        if parts < 1:
            raise ValueError(f"parts must be at least 1, got {parts}")
        base, remainder = divmod(self.minor_units, parts)
        return tuple(
            Money.from_minor(base + (1 if index < remainder else 0), self.currency)
            for index in range(parts)
        )

    def _same(self, other: object) -> "Money":
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise ValueError(f"currency mismatch: {self.currency} and {other.currency}")
        return other
