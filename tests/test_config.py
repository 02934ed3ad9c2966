"""Settings: defaults, camelCase keys, validation that names the bad key and keeps the rest."""

from pathlib import Path

from opportune.server.config import Settings, load_toml, resolve


def test_camel_and_snake_case_keys_apply() -> None:
    s, errors = resolve(
        {"completion": {"deadlineMs": 120, "max_tokens": 16}, "telemetry": {"storeText": True}}
    )
    assert errors == []
    assert s.completion.deadline_ms == 120 and s.completion.max_tokens == 16 and s.telemetry.store_text


def test_bad_keys_are_named_and_the_rest_still_applies() -> None:
    s, errors = resolve({"completion": {"deadlineMs": "fast", "maxTokens": 8, "bogus": 1}, "nope": {}})
    assert any("completion.deadlineMs" in e and "expected int" in e for e in errors)
    assert any("completion.bogus: unknown setting" in e for e in errors)
    assert any(e.startswith("nope: unknown") for e in errors)
    assert s.completion.deadline_ms == Settings().completion.deadline_ms
    assert s.completion.max_tokens == 8


def test_literal_values_are_checked() -> None:
    s, errors = resolve({"completion": {"multiline": "sometimes"}})
    assert errors and "multiline" in errors[0]
    assert s.completion.multiline == "auto"


def test_experiment_arms_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "opportune.toml"
    path.write_text(
        """
[experiment]
name = "ctx"
[[experiment.arms]]
name = "small"
weight = 1
completion = { context_tokens = 128 }
[[experiment.arms]]
name = "large"
weight = 3
completion = { context_tokens = 768 }
"""
    )
    errors: list[str] = []
    s, problems = resolve(load_toml(path, errors))
    assert errors == [] and problems == []
    assert [a.name for a in s.experiment.arms] == ["small", "large"]
    assert s.experiment.arms[1].completion == {"context_tokens": 768}


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "opportune.toml"
    path.write_text("[completion\n")
    errors: list[str] = []
    assert load_toml(path, errors) == {}
    assert "invalid TOML" in errors[0]


def test_values_out_of_range_are_reported_and_the_previous_ones_kept() -> None:
    base, errors = resolve({"completion": {"debounceMs": 50}})
    assert errors == []
    settings, errors = resolve(
        {"completion": {"debounceMs": 3_600_000, "deadlineMs": -300, "temperature": 0.2}}, base=base
    )
    assert settings.completion.debounce_ms == 50 and settings.completion.deadline_ms == 300
    assert settings.completion.temperature == 0.2
    assert len(errors) == 2 and all("kept" in e for e in errors), errors
    squeezed, errors = resolve(
        {"model": {"nCtx": 512}, "completion": {"contextTokens": 600, "maxTokens": 40}}
    )
    assert squeezed.completion.context_tokens == 472 and "using 472" in errors[0]
