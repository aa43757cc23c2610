"""sidecar.core.rules: the expiry rules a create or a cleanup hands to its store."""

from __future__ import annotations

from sidecar.core.models import GenerationStatus
from sidecar.core.rules import ExpiryRule, expiry_ages, expiry_rules, micros

F = GenerationStatus.FAILED
C = GenerationStatus.COMPLETED
NOW_US = 1_800_000_000_000_000


def test_expiry_rules_read_as_the_cutoff_of_each_age_at_now() -> None:
    ages = expiry_ages(3600, 600, 60)

    rules = expiry_rules(NOW_US, ages)

    expected = (
        ExpiryRule(None, NOW_US - micros(3600)),
        ExpiryRule(F, NOW_US - micros(600)),
        ExpiryRule(C, NOW_US - micros(60)),
    )
    assert tuple(rules) == expected
    assert list(rules) == list(expected)  # read again: the same rules
    assert len(rules) == 3
    assert [rules[i] for i in range(3)] == list(expected)
    assert rules[-1] == expected[-1]
    assert rules[1:] == expected[1:]
    assert "ExpiryRule(status=<GenerationStatus.FAILED" in repr(rules)


def test_expiry_rules_with_no_ages_are_empty() -> None:
    rules = expiry_rules(NOW_US, ())
    assert len(rules) == 0
    assert list(rules) == []
