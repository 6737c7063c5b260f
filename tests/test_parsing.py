"""Parser unit tests on hand-written replies, malformed ones included."""

from __future__ import annotations

from seftgen.stages.parsing import feedback_gaps, parse_critic, parse_reviser, parse_score, parse_verdict

LABELS = ["keep", "minor", "major"]


def test_reviser_keep_returns_original_verbatim() -> None:
    reply = parse_reviser("### Label\nkeep\n### Revised Response\n", LABELS, "orig")
    assert (reply.label, reply.revised, reply.error) == ("keep", "orig", None)


def test_reviser_minor_and_major() -> None:
    reply = parse_reviser("### Label\n**Major**\n### Revised Response\nA better answer.\nSecond line.", LABELS, "o")
    assert reply.label == "major" and reply.revised == "A better answer.\nSecond line."
    assert parse_reviser("### Label:\nminor\n\n### Revised Response:\nFixed.", LABELS, "o").revised == "Fixed."


def test_reviser_malformed_replies_are_errors_not_crashes() -> None:
    assert parse_reviser("Sure! Here is a better answer.", LABELS, "o").error == "parse: no '### Label' section"
    assert "unknown label 'rewrite'" in parse_reviser("### Label\nrewrite\n", LABELS, "o").error
    assert "no revised response" in parse_reviser("### Label\nminor\n### Revised Response\n   ", LABELS, "o").error
    assert parse_reviser("", LABELS, "o").revised is None


CRITIC = """### Feedback
Weaknesses: the answer forgets the units.
Overall Score: [[6]]
Suggestions: state the result in Celsius.

### Improved Response
72 °F is about 22.2 °C: (72 - 32) x 5/9 = 22.2."""


def test_critic_reply_parses_feedback_score_and_refinement() -> None:
    reply = parse_critic(CRITIC)
    assert reply.error is None and reply.score == 6
    assert reply.feedback.startswith("Weaknesses:") and "### Feedback" not in reply.feedback
    assert reply.refinement.startswith("72 °F is about 22.2 °C")
    assert feedback_gaps(reply.feedback, reply.score, ["weakness", "suggest"]) == []


def test_critic_malformed() -> None:
    assert parse_critic("Weaknesses: none. Overall Score: [[9]]").error == "parse: no '### Improved Response' section"
    assert parse_critic("### Improved Response\nbetter").error == "parse: empty feedback"
    incomplete = parse_critic("Weaknesses: vague.\n### Improved Response\nX")
    assert feedback_gaps(incomplete.feedback, incomplete.score, ["weakness", "suggest"]) == ["suggest", "score"]


def test_scores() -> None:
    assert parse_score("ok. Overall Score: [[ 8 ]]") == 8
    assert parse_score("Overall Score: [[3]] ... on reflection Overall Score: [[5]]") == 5
    assert parse_score("Overall Score: [[11]]") is None and parse_score("Score: 7") is None


def test_text_verdicts() -> None:
    assert parse_verdict("The better response is Response B.") == "B"
    assert parse_verdict("Response A is long, but Response (B) wins") == "B"
    assert parse_verdict("I cannot decide.") is None
