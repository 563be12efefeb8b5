"""The reference solution against HuggingFace on every checkpoint, the tolerance's margins, and the mapping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

from grader.lab import contract, oracle
from grader.lab.common import logits_tolerance
from grader.models import ModelSource
from reference.decoder import GPTModel
from reference.pretrained import compare_outputs, get_weight_mapping, load_gpt2_weights

CHECKPOINTS = ("tiny", "wide", "small")
INPUTS = ("one token", "long", "batched")
TEXT = "Hello, my name is GPT-2. I read text one token at a time, and every position sees only the past."
LONG_TOKENS = 256  # or the whole context when it is shorter (tiny: 128, wide: 96)
MISTAKES = {
    "exact-erf GELU": oracle.Variant(gelu="erf"),
    "float16 residual": oracle.Variant(residual_dtype="float16"),
    "unbiased LayerNorm variance": oracle.Variant(ln_variance="unbiased"),
}
MAPPING_LAYERS = (1, 2, 12, 48)


@dataclass
class Loaded:
    """One checkpoint loaded both ways: HuggingFace's model and the reference GPTModel."""

    name: str
    source: ModelSource
    hf: GPT2LMHeadModel
    tokenizer: Any
    reference: GPTModel
    attributes: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]
    _hf_logits: dict[str, np.ndarray] = field(default_factory=dict)
    _logits: dict[str, np.ndarray] = field(default_factory=dict)

    def hf_logits(self, label: str) -> np.ndarray:
        """HuggingFace's float32 logits for the named input, computed once."""
        if label not in self._hf_logits:
            ids = self.inputs[label]
            with torch.no_grad():
                out = self.hf(torch.from_numpy(np.atleast_2d(ids))).logits.float().numpy()
            self._hf_logits[label] = out if ids.ndim == 2 else out[0]
        return self._hf_logits[label]

    def logits(self, label: str) -> np.ndarray:
        """The reference GPTModel's logits for the named input, computed once."""
        if label not in self._logits:
            self._logits[label] = self.reference(self.inputs[label])
        return self._logits[label]


def make_inputs(shape: contract.ModelShape, tokenizer: Any) -> dict[str, np.ndarray]:
    """A 1-token input, a long one (real text, both vocabulary ends, then random ids) and a (3, 24) batch."""
    rng = np.random.default_rng(2024)
    length = min(shape.max_seq_len, LONG_TOKENS)
    text = tokenizer(TEXT)["input_ids"]
    long = np.concatenate([text, [0, shape.vocab_size - 1], rng.integers(0, shape.vocab_size, length)])[:length]
    return {
        "one token": np.array(tokenizer("Hello")["input_ids"], dtype=np.int64),
        "long": long.astype(np.int64),
        "batched": rng.integers(0, shape.vocab_size, (3, 24)).astype(np.int64),
    }


def load(name: str, source: ModelSource) -> Loaded:
    """Load a checkpoint into HuggingFace and, through load_gpt2_weights, into the reference GPTModel."""
    hf = GPT2LMHeadModel.from_pretrained(source.path).eval()
    tokenizer = GPT2Tokenizer.from_pretrained(source.path)
    reference = load_gpt2_weights(GPTModel(**source.shape.constructor_kwargs()), str(source.path))
    state = {name: t.detach().numpy() for name, t in hf.state_dict().items()}
    attributes = contract.expected_attributes(state, source.shape.num_layers)
    return Loaded(name, source, hf, tokenizer, reference, attributes, make_inputs(source.shape, tokenizer))


@pytest.fixture(scope="module", params=CHECKPOINTS)
def loaded(request: pytest.FixtureRequest) -> Loaded:
    """Each checkpoint in turn (tiny, wide, then small), loaded both ways."""
    return load(request.param, request.getfixturevalue(request.param))


@pytest.fixture(scope="module")
def loaded_tiny(tiny: ModelSource) -> Loaded:
    """The tiny checkpoint, loaded both ways, for the tests that need one checkpoint only."""
    return load("tiny", tiny)


def max_diff(got: np.ndarray, want: np.ndarray) -> float:
    """The largest absolute difference, after checking that nothing broadcasts."""
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


# ---------------------------------------------------------------- logits


def test_inputs_are_what_they_claim(loaded: Loaded) -> None:
    """The long input fills the context (up to 256 tokens) and reaches both ends of the vocabulary."""
    shape = loaded.source.shape
    assert loaded.inputs["one token"].shape == (1,)
    assert loaded.inputs["long"].shape == (min(shape.max_seq_len, LONG_TOKENS),)
    assert loaded.inputs["long"].shape[0] >= 64
    assert {0, shape.vocab_size - 1} <= set(loaded.inputs["long"].tolist())
    assert loaded.inputs["batched"].shape == (3, 24)


@pytest.mark.parametrize("label", INPUTS)
def test_reference_logits_match_huggingface(loaded: Loaded, label: str) -> None:
    """reference GPTModel + load_gpt2_weights gives HuggingFace's logits at every position, within tolerance."""
    ids = loaded.inputs[label]
    want = loaded.hf_logits(label)
    got = loaded.logits(label)
    assert got.shape == (*ids.shape, loaded.source.shape.vocab_size)
    assert got.dtype == np.float32
    assert np.all(np.isfinite(got))
    tol = logits_tolerance(want)
    per_position = np.abs(got.astype(np.float64) - want).max(axis=-1)  # [..., T]
    d = max_diff(got, want)
    print(
        f"\n{loaded.name} {label} {ids.shape}: max diff {d:.2e}, tol {tol:.2e}, diff/tol {d / tol:.3f}, "
        f"worst position {tuple(int(i) for i in np.unravel_index(per_position.argmax(), per_position.shape))}"
    )
    assert np.all(per_position <= tol), f"positions over tolerance: {np.argwhere(per_position > tol).tolist()[:10]}"


def test_tolerance_separates_noise_from_mistakes(loaded: Loaded) -> None:
    """On the long input, float32 noise is far below the tolerance and each classic mistake far above it."""
    ids = loaded.inputs["long"]
    want = loaded.hf_logits("long")
    tol = logits_tolerance(want)
    n_head = loaded.source.shape.num_heads
    noise = {
        "reference": max_diff(loaded.logits("long"), want),
        "oracle": max_diff(oracle.forward(loaded.attributes, ids, n_head), want),
    }
    worst_noise = max(noise.values())
    print(f"\n{loaded.name} long {ids.shape}: tol {tol:.2e}")
    for who, d in noise.items():
        print(f"  noise ({who}): {d:.2e} = tol/{tol / d:.1f}")
    mistakes = {name: max_diff(oracle.forward(loaded.attributes, ids, n_head, v), want) for name, v in MISTAKES.items()}
    for name, d in mistakes.items():
        print(f"  {name}: {d:.2e} = {d / tol:.1f} x tol = {d / worst_noise:.0f} x noise")
    assert worst_noise <= tol / 5, f"float32 noise {worst_noise:.2e} is not far below the tolerance {tol:.2e}"
    for name, d in mistakes.items():
        assert d >= 5 * tol, f"{name}: {d:.2e} is not far above the tolerance {tol:.2e}"
        assert d >= 100 * worst_noise, f"{name}: {d:.2e} is not 100 x the float32 noise {worst_noise:.2e}"


def test_loader_sets_every_contract_attribute(loaded: Loaded) -> None:
    """After load_gpt2_weights, every attribute of contract section 2 holds its HuggingFace source exactly."""
    shape = loaded.source.shape
    for path in contract.attribute_paths(shape.num_layers):
        value = contract.get_path(loaded.reference, path)
        assert isinstance(value, np.ndarray), path
        assert value.dtype == np.float32, f"{path}: {value.dtype}"
        assert value.shape == contract.attribute_shape(path, shape), path
        assert np.array_equal(value, loaded.attributes[path]), f"{path} differs from its HuggingFace source"


def test_compare_outputs_reports_the_true_difference(loaded_tiny: Loaded) -> None:
    """compare_outputs matches the reference, rejects a corrupted model, and returns the true max diff."""
    loaded = loaded_tiny
    ids = np.asarray(loaded.tokenizer(TEXT)["input_ids"])
    with torch.no_grad():
        want = loaded.hf(torch.from_numpy(ids)[None]).logits[0].numpy()
    match, reported = compare_outputs(loaded.reference, loaded.hf, loaded.tokenizer, TEXT)
    assert match is True
    assert reported == pytest.approx(max_diff(loaded.reference(ids), want), rel=1e-6, abs=1e-12)
    broken = GPTModel(**loaded.source.shape.constructor_kwargs())
    for path, value in loaded.attributes.items():
        contract.set_path(broken, path, value.copy())
    broken.ln_f.beta = broken.ln_f.beta + np.float32(0.01)
    match, reported = compare_outputs(broken, loaded.hf, loaded.tokenizer, TEXT)
    assert match is False
    assert reported == pytest.approx(max_diff(broken(ids), want), rel=1e-6)
    assert reported > logits_tolerance(want)


# ---------------------------------------------------------------- the mapping


def real_state(num_layers: int) -> dict[str, np.ndarray]:
    """GPT2LMHeadModel.state_dict()'s real names for a narrow model, each holding its own random values."""
    config = GPT2Config(vocab_size=11, n_positions=7, n_embd=8, n_layer=num_layers, n_head=2)
    with torch.device("meta"):
        names_shapes = {name: tuple(t.shape) for name, t in GPT2LMHeadModel(config).state_dict().items()}
    rng = np.random.default_rng(num_layers)
    state = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in names_shapes.items()}
    if "lm_head.weight" in state:
        state["lm_head.weight"] = state["transformer.wte.weight"]  # tied, as in every GPT-2
    return state


def is_buffer(name: str) -> bool:
    """Non-parameter buffers that older transformers kept in the state dict (attn.bias, attn.masked_bias)."""
    return name.endswith(contract.IGNORED_SUFFIXES)


@pytest.mark.parametrize("num_layers", MAPPING_LAYERS)
def test_mapping_covers_every_parameter(num_layers: int) -> None:
    """get_weight_mapping's keys are exactly GPT2LMHeadModel's parameters (lm_head.weight optional)."""
    names = {n for n in real_state(num_layers) if not is_buffer(n)}
    assert len(names) == 12 * num_layers + 5  # wte, wpe, ln_f weight and bias, lm_head
    assert names == set(contract.hf_parameter_names(num_layers)), "contract.hf_parameter_names disagrees"
    mapping = get_weight_mapping(num_layers)
    missing = names - set(mapping) - set(contract.OPTIONAL_PARAMS)
    extra = set(mapping) - names
    print(f"\n{num_layers} layers: {len(names)} parameters, {len(mapping)} mapped")
    assert not missing, f"not mapped: {sorted(missing)[:10]}"
    assert not extra, f"not parameters of GPT2LMHeadModel: {sorted(extra)[:10]}"
    if "lm_head.weight" in mapping:
        assert mapping["lm_head.weight"][0] == "token_embedding.weight"


@pytest.mark.parametrize("num_layers", MAPPING_LAYERS)
def test_applied_mapping_equals_contract_attributes(num_layers: int) -> None:
    """Applying the mapping gives exactly contract.expected_attributes: two derivations agree."""
    state = real_state(num_layers)
    applied: dict[str, np.ndarray] = {}
    for name, (target, transform) in get_weight_mapping(num_layers).items():
        paths = (target,) if isinstance(target, str) else target
        arrays = transform(state[name].copy())
        arrays = (arrays,) if isinstance(target, str) else tuple(arrays)
        assert len(arrays) == len(paths), name
        for path, array in zip(paths, arrays, strict=True):
            assert path not in applied or np.array_equal(applied[path], array), f"{path} set twice, differently"
            applied[path] = np.asarray(array)
    expected = contract.expected_attributes(state, num_layers)
    assert set(applied) == set(expected) == set(contract.attribute_paths(num_layers))
    shape = contract.ModelShape(vocab_size=11, d_model=8, num_layers=num_layers, num_heads=2, d_ff=32, max_seq_len=7)
    for path, want in expected.items():
        got = applied[path]
        assert got.shape == want.shape == contract.attribute_shape(path, shape), path
        assert got.dtype == np.float32, path
        assert np.array_equal(got, want), f"{path}: the mapping and the contract disagree"
