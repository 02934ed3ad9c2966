"""Quality metrics and paired bootstrap intervals on hand-made cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from opportune.server.eval.metrics import edit_similarity, identifier_f1, identifiers, score
from opportune.server.eval.runner import ConfigError, load_configuration, preset_layer
from opportune.server.eval.stats import format_interval, paired_mean_difference, paired_ratio_difference


def test_exact_and_first_line_match_ignore_surrounding_whitespace() -> None:
    s = score("return x + 1\n", "return x + 1")
    assert (s.exact_match, s.first_line_match, s.empty, s.edit_similarity, s.identifier_f1) == (1, 1, 0, 1, 1)
    s = score("if a:\n    b()", "if a:\n    c()")
    assert s.exact_match == 0 and s.first_line_match == 1
    assert score("", "foo").empty == 1 and score("", "foo").first_line_match == 0


def test_edit_similarity_is_one_minus_normalised_levenshtein() -> None:
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("", "abc") == 0.0
    assert edit_similarity("abc", "abc") == 1.0


def test_identifier_f1_counts_names_not_keywords_or_punctuation() -> None:
    assert identifiers("for item in self.items: yield item", "python") == ["item", "self", "items", "item"]
    assert identifiers("const x = await load(y)", "javascript") == ["x", "load", "y"]
    # prediction {foo, bar}, truth {foo, baz}: precision 1/2, recall 1/2.
    assert identifier_f1("foo(bar)", "foo[baz]") == pytest.approx(0.5)
    # prediction {a, b, c}, truth {a}: precision 1/3, recall 1 -> F1 = 0.5.
    assert identifier_f1("a + b + c", "a") == pytest.approx(0.5)
    assert identifier_f1("x.x", "x") == pytest.approx(2 * 0.5 * 1 / 1.5)  # multisets: one of two x matches
    assert identifier_f1("()", ")") == 1.0 and identifier_f1("", "name") == 0.0


def test_accepted_share_follows_what_a_person_would_take() -> None:
    # The whole suggestion is a prefix of what follows: all of it.
    assert score("self.a", "self.a = 1").accepted_share == pytest.approx(6 / 10)
    # Diverges inside a word: back to the last word boundary ("self.").
    assert score("self.abc", "self.abd").accepted_share == pytest.approx(5 / 8)
    assert score("zzz", "abc").accepted_share == 0.0


def test_paired_mean_difference_is_seeded_and_paired() -> None:
    a = [0, 1, 0, 1, 1, 0, 0, 1]
    assert paired_mean_difference(a, a).low == 0.0 and paired_mean_difference(a, a).high == 0.0
    b = [1, 1, 1, 1, 1, 0, 1, 1]  # better on 3 of 8, never worse
    d = paired_mean_difference(a, b, seed=3)
    assert d.estimate == pytest.approx(3 / 8)
    assert d.low is not None and d.high is not None and 0 <= d.low < 3 / 8 < d.high <= 1
    assert d == paired_mean_difference(a, b, seed=3)
    # Pairing matters: a constant shift has no spread at all, however noisy the tasks are.
    rng = np.random.default_rng(0)
    noisy = rng.normal(size=50)
    shifted = paired_mean_difference(noisy, noisy + 0.1)
    assert shifted.low == pytest.approx(0.1) and shifted.high == pytest.approx(0.1) and shifted.excludes_zero
    assert paired_mean_difference([1.0], [0.0]).low is None
    with pytest.raises(ValueError):
        paired_mean_difference([1, 2], [1])


def test_paired_ratio_difference_is_a_ratio_of_sums() -> None:
    # Spans: (accepted chars, opportunities) for A and for B.
    d = paired_ratio_difference([10, 0, 5], [10, 10, 10], [20, 5, 5], [10, 10, 10], seed=1)
    assert d.estimate == pytest.approx(30 / 30 - 15 / 30)
    assert d.low is not None and d.high is not None and d.estimate is not None
    assert d.low <= d.estimate <= d.high
    assert paired_ratio_difference([1], [0], [1], [1]).estimate is None
    assert format_interval(d).startswith("+0.500 [")


def test_configurations_from_presets_and_files(tmp_path: Path) -> None:
    assert preset_layer("prefix+ctx256") == {
        "completion": {"prompt_strategy": "prefix", "context_tokens": 256}
    }
    c = load_configuration("small=builtin:ctx256")
    assert c.name == "small" and c.settings.completion.context_tokens == 256
    assert c.differences() == {"completion.context_tokens": 256}
    path = tmp_path / "B.toml"
    path.write_text('[completion]\nprompt_strategy = "prefix"\n')
    c = load_configuration(str(path))
    assert c.name == "B" and c.settings.completion.prompt_strategy == "prefix"
    path.write_text('[completion]\nprompt_strategy = "prefx"\n')
    with pytest.raises(ConfigError, match="prompt_strategy"):
        load_configuration(str(path))
    with pytest.raises(ConfigError, match="unknown preset word"):
        load_configuration("builtin:fast")
