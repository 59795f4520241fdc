"""Consent codes without a database: format, parsing, keyed hashing, rate limiting."""

from __future__ import annotations

import re

import pytest

from broker.errors import CodeRejected
from broker.session.consent import CodeHasher, new_code, normalize
from broker.session.ratelimit import RateLimiter


def test_codes_are_nine_digits_in_three_groups() -> None:
    codes = {new_code() for _ in range(200)}
    assert all(re.fullmatch(r"\d{3}-\d{3}-\d{3}", c) for c in codes)
    assert len(codes) > 190  # random, not a counter


@pytest.mark.parametrize("typed", ["123-456-789", "123 456 789", " 123456789 ", "123-456 789"])
def test_people_may_type_spaces_and_dashes(typed: str) -> None:
    assert normalize(typed) == "123456789"


@pytest.mark.parametrize(
    "typed",
    ["12345678", "1234567890", "123-456-78a", "".join(chr(0xFF11 + i) for i in range(9)), ""],
)
def test_anything_else_is_malformed(typed: str) -> None:
    with pytest.raises(CodeRejected) as exc:
        normalize(typed)
    assert exc.value.code == "malformed"


def test_hash_is_keyed() -> None:
    one, two = CodeHasher(b"a" * 32), CodeHasher(b"b" * 32)
    assert one.hash("123-456-789") == one.hash("123456789")
    assert one.hash("123-456-789") != two.hash("123-456-789")
    assert CodeHasher.same(one.hash("111111111"), one.hash("111-111-111"))
    with pytest.raises(ValueError):
        CodeHasher(b"short")


def test_rate_limiter_per_source_and_global() -> None:
    now = [0.0]
    limiter = RateLimiter(per_source=2, overall=3, window=10, clock=lambda: now[0])
    assert limiter.check("a") == 0
    limiter.failed("a")
    now[0] = 1
    limiter.failed("a")
    assert limiter.check("a") == pytest.approx(9)  # the failure at t=0 expires at t=10
    assert limiter.check("b") == 0
    limiter.failed("b")
    assert limiter.check("c") == 0  # three failures overall, but none from "c"
    assert limiter.check("b") == pytest.approx(9)  # "b" failed and the total is reached
    now[0] = 10.5  # the failure at t=0 has left the window: one left for "a", two overall
    assert limiter.check("a") == 0 and limiter.check("b") == 0
    limiter.failed("a")
    assert limiter.check("a") == pytest.approx(0.5)  # "a" again at its limit until t=11
