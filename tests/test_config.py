"""The config language: defaults, flat keys, overrides and every user-facing error."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
import yaml
from helpers import write_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmablate.config.keys import (
    apply_overrides,
    field_reference,
    load_run_config,
    parse_yaml,
    validate_run_config,
)
from lmablate.config.run import FLAT_KEYS, SECTIONS, RunConfig
from lmablate.errors import ConfigError


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_run_config(raw)
    return str(info.value)


def test_defaults_are_the_reference_baseline():
    cfg = RunConfig()
    assert (cfg.model.d_model, cfg.model.n_heads, cfg.model.n_layers, cfg.model.d_ff) == (
        384,
        6,
        12,
        1536,
    )
    assert (cfg.train.batch_size, cfg.train.seq_len, cfg.train.max_steps) == (8, 512, 2000)
    assert cfg.train.learning_rate == 3e-4 and cfg.train.weight_decay == 0.1
    assert cfg.data.dataset == "HuggingFaceTB/smollm-corpus"
    assert cfg.data.subset == "cosmopedia-v2" and cfg.data.num_documents == 500
    assert cfg.data.tokenizer == "HuggingFaceTB/SmolLM-135M"
    assert cfg.model.mlp == "swiglu" and cfg.model.kv_heads == 6


def test_the_issue_contract_shape_loads(tmp_path):
    path = write_yaml(
        tmp_path / "run.yaml",
        """\
        model: {d_model: 384, n_heads: 6, n_kv_heads: 6, n_layers: 12, d_ff: 1536, mlp: silu,
                rope_theta: 10000.0, norm_eps: 1.0e-5, tie_embeddings: true}
        train: {batch_size: 8, seq_len: 512, learning_rate: 3.0e-4, min_lr_ratio: 0.1,
                warmup_steps: 100, max_steps: 2000, weight_decay: 0.1, grad_clip: 1.0,
                grad_accum_steps: 1, precision: auto, eval_every: 400, eval_tokens: 65536,
                checkpoint_every: 500, seed: 0, data_seed: 0, compile: false}
        data: {source: hf, dataset: HuggingFaceTB/smollm-corpus, subset: cosmopedia-v2,
               split: train, text_field: text, num_documents: 500,
               tokenizer: HuggingFaceTB/SmolLM-135M, val_fraction: 0.1}
        """,
    )
    cfg = load_run_config(path)
    assert cfg.model.mlp == "silu" and cfg.train.eval_tokens == 65536


def test_flat_keys_mean_their_section():
    flat = validate_run_config(
        {"batch_size": 16, "learning_rate": 5.0e-4, "d_model": 192, "source": "builtin"}
    )
    nested = validate_run_config(
        {
            "train": {"batch_size": 16, "learning_rate": 5.0e-4},
            "model": {"d_model": 192},
            "data": {"source": "builtin"},
        }
    )
    assert flat == nested


def test_flat_keys_are_unambiguous():
    assert set(FLAT_KEYS) == {f for cls in SECTIONS.values() for f in cls.model_fields}


def test_a_key_given_twice_is_an_error():
    assert "given twice" in error_of({"batch_size": 4, "train": {"batch_size": 8}})


def test_scientific_notation_without_a_dot_is_a_number():
    assert parse_yaml("lr: 1e-4") == {"lr": 1e-4}
    assert validate_run_config({"learning_rate": "3e-4"}).train.learning_rate == 3e-4


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"learning_rat": 1e-3}, "learning_rat: unknown key; did you mean 'learning_rate'?"),
        ({"train": {"batch_sise": 4}}, "train.batch_sise: unknown key; did you mean 'batch_size'?"),
        ({"model": {"learning_rate": 1e-3}}, "'learning_rate' belongs in the 'train' section"),
        (
            {"data": {"tokenizer": {"train_bp": {}}}},
            "data.tokenizer.train_bp: unknown key; did you mean 'train_bpe'?",
        ),
        ({"model": {"d_model": "wide"}}, "model.d_model: expected an integer (got 'wide')"),
        ({"model": {"n_layers": 3.5}}, "model.n_layers: expected an integer (got 3.5)"),
        ({"model": {"n_layers": 0}}, "model.n_layers: Input should be greater than 0"),
        ({"model": {"d_ff": -4}}, "model.d_ff: Input should be greater than 0"),
        ({"model": {"mlp": "gelo"}}, "model.mlp: unknown mlp 'gelo'; did you mean 'gelu'?"),
        (
            {"model": {"d_model": 100, "n_heads": 3}},
            "model.d_model (100) must be divisible by model.n_heads (3)",
        ),
        (
            {"model": {"n_heads": 6, "n_kv_heads": 4}},
            "model.n_heads (6) must be divisible by model.n_kv_heads (4); valid n_kv_heads: "
            "[1, 2, 3, 6]",
        ),
        ({"model": {"d_model": 36, "n_heads": 4}}, "head dimension d_model / n_heads = 36 / 4 = 9"),
        (
            {"train": {"warmup_steps": 50, "max_steps": 50}},
            "train.warmup_steps (50) must be smaller than train.max_steps (50)",
        ),
        (
            {"train": {"batch_size": 6, "grad_accum_steps": 4}},
            "train.grad_accum_steps (4) must divide train.batch_size (6)",
        ),
        ({"train": {"learning_rate": 0}}, "train.learning_rate: Input should be greater than 0"),
        ({"train": {"precision": "fp8"}}, "train.precision: Input should be"),
        ({"train": {"device": "gpu"}}, "train.device 'gpu' is not a device"),
        ({"data": {"val_fraction": 0.0}}, "data.val_fraction: Input should be greater than 0"),
        ({"data": {"val_fraction": 0.6}}, "data.val_fraction: Input should be less than or equal"),
        (
            {"data": {"source": "s3"}},
            "data.source: Input should be 'hf', 'local', 'builtin' or 'builtin_code'",
        ),
        ({"data": {"source": "local"}}, "data.path is required when data.source is 'local'"),
        (
            {"data": {"source": "local", "path": "/no/such/corpus.txt"}},
            "data.path '/no/such/corpus.txt' does not exist",
        ),
        ({"data": {"tokenizer": "./no/such/tokenizer"}}, "looks like a path but does not exist"),
        (
            {"data": {"tokenizer": {"train_bpe": {"vocab_size": 100}}}},
            "data.tokenizer.train_bpe.vocab_size: Input should be greater than or equal to 260",
        ),
        ({"model": [1, 2]}, "model: expected a mapping of fields, got a list"),
    ],
)
def test_user_mistakes_name_field_value_and_fix(raw, expected):
    assert expected in error_of(raw)


def test_all_unknown_keys_are_reported_at_once():
    message = error_of({"learnin_rate": 1, "model": {"d_mdel": 2}})
    assert "learnin_rate" in message and "model.d_mdel" in message


def test_overrides_dotted_flat_and_nested():
    raw = {"train": {"learning_rate": 3e-4}, "d_model": 128, "n_heads": 4}
    out = apply_overrides(
        raw,
        [
            "train.learning_rate=1e-3",
            "batch_size=16",
            "data.tokenizer.train_bpe.vocab_size=512",
            "mlp=silu",
            "num_documents=null",
        ],
    )
    cfg = validate_run_config(out)
    assert cfg.train.learning_rate == 1e-3 and cfg.train.batch_size == 16
    assert cfg.data.tokenizer.train_bpe.vocab_size == 512  # type: ignore[union-attr]
    assert cfg.model.mlp == "silu" and cfg.model.d_model == 128
    assert cfg.data.num_documents is None


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("learnin_rate=1", "learnin_rate is not a config field; did you mean 'learning_rate'?"),
        ("model.heads=4", "model.heads is not a field of model; did you mean 'n_heads'?"),
        ("model.zzz=4", "(valid: d_model, n_heads"),
        ("batch_size", "expected KEY=VALUE"),
        ("batch_size=[1", "invalid YAML"),
    ],
)
def test_bad_overrides(override, expected):
    with pytest.raises(ConfigError) as info:
        apply_overrides({}, [override])
    assert expected in str(info.value)


def test_yaml_errors_carry_line_and_column(tmp_path):
    path = write_yaml(
        tmp_path / "bad.yaml",
        """\
        model:
          d_model: 128
        train: {batch_size: [8
        """,
    )
    with pytest.raises(ConfigError, match=re.escape(f"{path}:4:1: invalid YAML")):
        load_run_config(path)


def test_duplicate_yaml_keys_are_rejected(tmp_path):
    path = write_yaml(tmp_path / "dup.yaml", "train:\n  seed: 1\n  seed: 2\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:3:3: invalid YAML: duplicate key 'seed'"):
        load_run_config(path)


@pytest.mark.parametrize(
    ("content", "expected"), [("", "the file is empty"), ("- a\n- b\n", "got a list")]
)
def test_config_file_must_be_a_mapping(tmp_path, content, expected):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load_run_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config(tmp_path / "nope.yaml")


def test_errors_name_the_file(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "train: {lr: 1}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: train.lr: unknown key")):
        load_run_config(path)


def test_field_reference_documents_every_field():
    reference = field_reference()
    for name, cls in SECTIONS.items():
        assert f"### `{name}`" in reference
        for field_name, field in cls.model_fields.items():
            assert field.description, f"{name}.{field_name} has no description"
            # a nested section's fields are listed under its name: `contamination.ngram`
            assert f"| `{field_name}` |" in reference or f"| `{field_name}." in reference


def test_resolved_config_round_trips():
    cfg = validate_run_config(
        {
            "d_model": 128,
            "n_heads": 4,
            "source": "builtin",
            "tokenizer": {"train_bpe": {"vocab_size": 1024}},
        }
    )
    dumped = yaml.safe_dump(cfg.model_dump(mode="json"))
    assert validate_run_config(yaml.safe_load(dumped)) == cfg


# Property: whatever YAML a user writes, loading either succeeds or raises ConfigError.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 5000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
_keys = st.one_of(
    st.sampled_from([*FLAT_KEYS, *SECTIONS, "train_bpe", "description"]), st.text(max_size=10)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=6))
def test_arbitrary_mappings_load_or_raise_config_error(raw):
    with contextlib.suppress(ConfigError):
        validate_run_config(raw)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_arbitrary_yaml_text_parses_or_raises_config_error(text):
    with contextlib.suppress(ConfigError):
        parse_yaml(text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"train": {"learning_rate": float("inf")}},
            "train.learning_rate: Input should be a finite",
        ),
        ({"train": {"z_loss": float("nan")}}, "train.z_loss: Input should be a finite number"),
        ({"model": {"rope_theta": float("inf")}}, "model.rope_theta: Input should be a finite"),
        ({"train": {"seed": 2**64}}, "train.seed: Input should be less than or equal to 92233"),
        ({"data": {"split_seed": 2**63}}, "data.split_seed: Input should be less than or equal"),
    ],
)
def test_non_finite_numbers_and_overflowing_seeds_are_config_errors(raw, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        validate_run_config(raw)


def test_non_finite_sampling_settings_are_refused():
    from lmablate.errors import LmablateError
    from lmablate.generation import Sampling

    for settings_ in ({"temperature": float("inf")}, {"repetition_penalty": float("nan")}):
        with pytest.raises(LmablateError, match="invalid sampling settings"):
            Sampling(**settings_)


def test_counts_a_typo_would_make_huge_are_refused(tmp_path):
    from lmablate.config.study import load_study
    from lmablate.errors import LmablateError
    from lmablate.generation import Sampling

    path = write_yaml(
        tmp_path / "s.yaml", "name: s\ndata: {source: builtin}\nbaseline: {max_steps: 10}\n"
    )
    for seeds in (0, 10**6):
        with pytest.raises(ConfigError, match=r"--seeds \d+: give 1 to 1000 replicates"):
            load_study(path, seeds=seeds)
    with pytest.raises(LmablateError, match=r"max_new_tokens 10000000 \(valid: 1 to 65,536"):
        Sampling(max_new_tokens=10**7)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"model": {"n_layers": 10**12}},
            "model.n_layers: Input should be less than or equal to "
            "4096 (got 1000000000000); deeper than any published",
        ),
        (
            {"train": {"seq_len": 2**40}},
            "train.seq_len: Input should be less than or equal to "
            "4194304 (got 1099511627776); a longer context",
        ),
        ({"train": {"muon_ns_steps": 100}}, "torch.optim.Muon refuses 100 or more"),
    ],
)
def test_sizes_a_typo_would_make_huge_fail_at_once_with_the_reason(raw, expected):
    with pytest.raises(ConfigError, match=re.escape(expected)):
        validate_run_config(raw)


def test_a_huge_bad_value_is_quoted_short():
    with pytest.raises(ConfigError) as info:
        validate_run_config({"model": {"d_model": "x" * 10**6}})
    assert len(str(info.value)) < 300 and "..." in str(info.value)


def test_set_on_a_whole_section_or_a_per_replicate_seed_is_refused(tmp_path):
    from lmablate.config.keys import apply_overrides
    from lmablate.config.study import load_study

    for text in ("data=null", "train=", "model={}"):
        with pytest.raises(ConfigError, match=r"names the whole \w+ section"):
            apply_overrides({}, [text])
    study = write_yaml(
        tmp_path / "s.yaml", "name: s\ndata: {source: builtin}\nbaseline: {max_steps: 10}\n"
    )
    for text in ("seed=3", "train.data_seed=1"):
        with pytest.raises(ConfigError, match="set per replicate by the study's seeds"):
            load_study(study, [text])
    with pytest.raises(ConfigError, match="names the whole data section"):
        load_study(study, ["data=null"])


def test_a_study_file_given_as_a_run_config_says_to_use_run(tmp_path):
    from lmablate.config.keys import load_run_config

    study = write_yaml(
        tmp_path / "s.yaml", "name: s\ndata: {source: builtin}\nbaseline: {max_steps: 10}\n"
    )
    with pytest.raises(ConfigError, match=r"is a study file .* lmablate run "):
        load_run_config(study)


def test_files_that_are_not_yaml_text_get_a_clear_error(tmp_path):
    from lmablate.config.keys import read_yaml_mapping

    (tmp_path / "binary.yaml").write_bytes(b"name: x\n\xff\xfe\x00\x01")
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}]\n"
        for i in range(20)
    )
    (tmp_path / "bomb.yaml").write_text(bomb)
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 1200 + "]" * 1200 + "\n")
    for path, message in (
        (tmp_path / "binary.yaml", r"is not UTF-8 text \(byte 8 is not valid UTF-8\)"),
        (tmp_path, "is a directory; give a file"),
        (Path("/dev/null"), "is not a regular file"),
        (tmp_path / "bomb.yaml", r"more than 100,000 values once its YAML aliases"),
        (tmp_path / "deep.yaml", "nested too deeply"),
    ):
        with pytest.raises(ConfigError, match=message):
            read_yaml_mapping(path)


def test_a_huge_nested_value_is_quoted_short():
    with pytest.raises(ConfigError) as info:
        validate_run_config({"model": {"d_model": [[[list(range(10**6))]]] * 50}})
    assert len(str(info.value)) < 400
