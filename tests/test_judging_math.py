"""SELF-JUDGE probability arithmetic and the tournament bracket, on numbers worked out by hand."""

from __future__ import annotations

import random

import pytest

from seftgen.stages.judging import Bracket, PairScore, combine, pair_score

TOKENS = (" A", " B")


def test_pair_score_by_hand() -> None:
    # Order AB: P(A)=0.6, P(B)=0.2 -> a's share 0.75. Order BA (a shown second): P(A)=0.1, P(B)=0.3
    # -> a's share 0.3/0.4 = 0.75. score_a = 0.75, consistent, margin |1.5 - 1| = 0.5.
    s = pair_score({" A": 0.6, " B": 0.2}, {" A": 0.1, " B": 0.3}, TOKENS)
    assert s.p_a_ab == pytest.approx(0.75) and s.p_a_ba == pytest.approx(0.75)
    assert s.score_a == pytest.approx(0.75) and s.margin == pytest.approx(0.5)
    assert s.consistent and s.a_wins


def test_position_bias_is_inconsistent() -> None:
    # The judge always says " A": a wins in AB (0.9/1.0), loses in BA (share of " B" = 0.2/1.0).
    s = pair_score({" A": 0.9, " B": 0.1}, {" A": 0.8, " B": 0.2}, TOKENS)
    assert s.score_a == pytest.approx((0.9 + 0.2) / 2) and not s.consistent
    assert s.margin == pytest.approx(abs(2 * 0.55 - 1))


def test_missing_tokens_are_an_error_not_a_verdict() -> None:
    s = pair_score({" A": 0.0, " B": 0.0}, {" A": 0.5, " B": 0.5}, TOKENS)
    assert s.score_a is None and s.error_kind == "parse"
    assert combine(0.5, 0.5).margin == 0 and not combine(0.5, 0.5).consistent


def quality_judge(quality: dict[int, float]):
    return lambda a, b: PairScore(None, None, 1.0 if quality[a] > quality[b] else 0.0, True, 1.0)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_bracket_finds_best_with_n_minus_1_judgments(n: int) -> None:
    quality = {i: random.Random(i * 7 + n).random() for i in range(n)}
    judge = quality_judge(quality)
    bracket = Bracket.start(list(range(n)), random.Random(0))
    while not bracket.done:
        bracket.advance([judge(a, b) for a, b in bracket.matches()])
    assert bracket.winner == max(quality, key=quality.get)
    assert bracket.judgments == n - 1
    assert sum(1 for r in bracket.record if "bye" in r) == sum(1 for k in _round_sizes(n) if k % 2)


def _round_sizes(n: int) -> list[int]:
    sizes = []
    while n > 1:
        sizes.append(n)
        n = (n + 1) // 2
    return sizes


def test_bracket_by_hand_with_bye() -> None:
    # Order after the shuffle is fixed here: [3, 0, 4, 1, 2]. Round 1: 3-0, 4-1, bye 2.
    # Round 2: [w(3,0), w(4,1), 2] -> one match and a bye. Round 3: the final.
    bracket = Bracket([3, 0, 4, 1, 2])
    assert bracket.matches() == [(3, 0), (4, 1)]
    bracket.advance([PairScore(None, None, 0.2, True, 0.6), PairScore(None, None, 0.9, True, 0.8)])
    assert bracket.alive == [0, 4, 2] and bracket.record[-1] == {"round": 1, "bye": 2}
    bracket.advance([PairScore(None, None, 0.5, False, 0.0)])  # a tie goes to the first (0)
    assert bracket.alive == [0, 2]
    bracket.advance([PairScore(None, None, 0.1, True, 0.8)])
    assert bracket.done and bracket.winner == 2 and bracket.judgments == 4
