from decimal import Decimal

import pytest

from app.core.money import Money, to_decimal


@pytest.mark.parametrize("amount", [0.1, 10.0, float("nan")], ids=["0.1", "10.0", "nan"])
def test_money_refuses_float(amount: float) -> None:
    """A float amount raises a TypeError that says what to pass instead."""
    with pytest.raises(TypeError, match="money refuses float"):
        Money(amount, "EUR")  # type: ignore[arg-type]  # the point: the type forbids it too


def test_money_refuses_bool_and_other_types() -> None:
    """True is an int to Python but never an amount."""
    with pytest.raises(TypeError, match="got bool"):
        to_decimal(True)  # noqa: FBT003 - the bad input under test


@pytest.mark.parametrize("amount", ["abc", "NaN", "Infinity"], ids=["text", "nan", "inf"])
def test_money_refuses_non_finite_strings(amount: str) -> None:
    """Strings must hold a finite decimal number."""
    with pytest.raises(ValueError, match=r"decimal amount|finite"):
        Money(amount, "EUR")


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("10.005", "EUR", Decimal("10.00")),
        ("10.015", "EUR", Decimal("10.02")),
        ("1234.5", "JPY", Decimal(1234)),
        ("1.2345", "KWD", Decimal("1.234")),
        (7, "usd", Decimal("7.00")),
    ],
    ids=["half-even-down", "half-even-up", "jpy", "kwd", "int-lowercase"],
)
def test_money_quantizes_to_minor_units(
    amount: str | int, currency: str, expected: Decimal
) -> None:
    """Amounts are rounded half-even to the currency's minor units."""
    money = Money(amount, currency)

    assert expected == money.amount
    assert expected.as_tuple().exponent == money.amount.as_tuple().exponent


def test_money_adds_exactly_where_floats_do_not() -> None:
    """0.10 + 0.20 is exactly 0.30."""
    total = Money("0.10", "EUR") + Money("0.20", "EUR")

    assert Money("0.30", "EUR") == total
    assert str(total) == "0.30 EUR"


def test_money_refuses_mixed_currencies() -> None:
    """Adding or comparing EUR and USD is an error, not a silent sum."""
    with pytest.raises(ValueError, match="currency mismatch"):
        Money("1", "EUR") + Money("1", "USD")
    with pytest.raises(ValueError, match="currency mismatch"):
        assert Money("1", "EUR") < Money("2", "USD")


def test_money_multiplies_by_exact_factors_only() -> None:
    """A Decimal rate is fine; a float rate is refused."""
    assert Money("19.99", "EUR") * Decimal("0.19") == Money("3.80", "EUR")
    assert 3 * Money("1.10", "EUR") == Money("3.30", "EUR")
    with pytest.raises(TypeError, match="money refuses float"):
        Money("19.99", "EUR") * 0.19  # type: ignore[operator]  # the point: floats are refused


def test_money_round_trips_minor_units() -> None:
    """Minor units are the integer form for storage and payment APIs."""
    money = Money.from_minor(1234, "EUR")

    assert money == Money("12.34", "EUR")
    assert money.minor_units == 1234
    assert Money.from_minor(500, "JPY").minor_units == 500


@pytest.mark.parametrize(
    ("amount", "parts", "expected"),
    [("10.00", 3, ["3.34", "3.33", "3.33"]), ("-0.05", 2, ["-0.02", "-0.03"])],
    ids=["positive", "negative"],
)
def test_money_split_sums_exactly(amount: str, parts: int, expected: list[str]) -> None:
    """Splitting never loses or invents a cent."""
    shares = Money(amount, "EUR").split(parts)

    assert [Money(share, "EUR") for share in expected] == list(shares)
    assert sum(shares, Money(0, "EUR")) == Money(amount, "EUR")


def test_money_rejects_unknown_currencies() -> None:
    """Only currencies with known minor units are accepted."""
    with pytest.raises(ValueError, match="unknown currency"):
        Money("1", "XYZ")


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("10.5", "EUR", "10.50"),
        ("10.500", "EUR", "10.50"),
        ("7", "JPY", "7"),
        ("1.234", "KWD", "1.234"),
    ],
    ids=["fewer-digits", "trailing-zeros", "jpy", "kwd"],
)
def test_money_exact_keeps_amounts_that_need_no_rounding(
    amount: str, currency: str, expected: str
) -> None:
    """An amount within the currency's minor units is taken as it is."""
    assert Decimal(expected) == Money.exact(amount, currency).amount


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("10.005", "EUR"), ("1.5", "JPY"), ("0.0001", "KWD")],
    ids=["eur-3-places", "jpy-fraction", "kwd-4-places"],
)
def test_money_exact_refuses_amounts_that_would_round(amount: str, currency: str) -> None:
    """Rounding a client's amount would change what was asked for: refuse it instead."""
    with pytest.raises(ValueError, match="decimal places"):
        Money.exact(amount, currency)
