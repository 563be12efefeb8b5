"""Three GPT-2s agree within float32 noise, far below the tolerance, and every classic mistake lands far above it.

The three: HuggingFace's ``GPT2LMHeadModel``, the trusted side's float64 NumPy oracle
(``grader/grading/oracle.py``, through ``truth.Expected``) and the reference solution
(``reference/decoder.py`` filled by ``reference/pretrained.load_gpt2_weights``), on the built-in
checkpoints tiny and wide (and small, GPT-2 small's shape, marked slow). Each oracle sub-module is
also checked alone against the reference decoder's, and each ``Variant`` against GPT-2 (none is a no-op).
Run with ``-s`` to see the measurements and, at the end, the table of factors of the tolerance.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields, replace

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from grader.grading import oracle
from grader.grading.checkpoints import ModelSource, resolve_model
from grader.grading.inputs import choose
from grader.grading.localise import SUBSTEP_RTOL
from grader.grading.mistakes import DECODER_MISTAKES, SUBSTEP_MISTAKES
from grader.grading.truth import Expected
from lab04_checks.contract import LOGITS_RTOL, ModelShape, attribute_paths, logits_tolerance
from reference.decoder import GPTModel, create_causal_mask
from reference.pretrained import get_attribute, load_gpt2_weights

CHECKPOINTS = ("tiny", "wide", "small")
SLOW = {"small"}  # built on first use (~6 s); its float64 forward over 1024 tokens takes ~10 s
INPUTS = ("1 token", "full context", "batched (3, 24)")
PAIRS = ("HuggingFace vs oracle", "reference vs HuggingFace", "reference vs oracle")
TEXT = "Hello, my name is GPT-2. I read text one token at a time, and every position sees only the past."
MISTAKE_TOKENS = 128  # the long input of the mistake table: the full context of tiny and wide, 128 of small's 1024
MARGIN = 5  # noise at least this far below the tolerance, mistakes at least this far above it
# LayerNorm's eps (1e-5) moves sqrt(var + eps) by about eps / (2 var): the checkpoints' embeddings are small
# (std 0.1) so that the first LayerNorm's variance is too, and eps outside the sqrt or missing lands well above.

# What the tests measured, printed as one table at the end of the module (run with -s).
TABLE: dict[str, dict[str, float]] = {}


@dataclass
class Run:
    """One checkpoint loaded three ways, with its inputs and everyone's logits, computed once."""

    name: str
    source: ModelSource
    expected: Expected
    hf: GPT2LMHeadModel
    reference: GPTModel
    inputs: dict[str, np.ndarray]
    _cache: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> ModelShape:
        return self.source.shape

    def logits(self, who: str, label: str) -> np.ndarray:
        key = (who, label)
        if key not in self._cache:
            ids = self.inputs[label]
            if who == "HuggingFace":
                with torch.no_grad():
                    out = self.hf(torch.from_numpy(np.atleast_2d(ids))).logits.numpy()
                self._cache[key] = out if ids.ndim == 2 else out[0]
            elif who == "reference":
                self._cache[key] = self.reference(ids, training=False)
            else:
                self._cache[key] = self.expected.logits(ids)
        return self._cache[key]


def make_inputs(expected: Expected, shape: ModelShape) -> dict[str, np.ndarray]:
    """One real token; the full context (real text, both ends of the vocabulary, then random ids); a (3, 24) batch."""
    rng = np.random.default_rng(2024)
    n = shape.max_seq_len
    full = np.concatenate([expected.encode(TEXT), [0, shape.vocab_size - 1], rng.integers(0, shape.vocab_size, n)])
    return {
        "1 token": np.asarray(expected.encode("Hello"), dtype=np.int64),
        "full context": full[:n].astype(np.int64),
        "batched (3, 24)": rng.integers(0, shape.vocab_size, (3, 24)).astype(np.int64),
        "long": full[: min(n, MISTAKE_TOKENS)].astype(np.int64),
        "long, one short": full[: min(n - 1, MISTAKE_TOKENS)].astype(np.int64),  # position_offset needs a free row
    }


@functools.cache
def loaded(name: str) -> Run:
    source = resolve_model(name)
    hf = GPT2LMHeadModel.from_pretrained(source.path).eval()
    reference = GPTModel(**source.shape.constructor_kwargs(), dropout=0.0)
    load_gpt2_weights(reference, str(source.path))
    expected = Expected(source)
    return Run(name, source, expected, hf, reference, make_inputs(expected, source.shape))


def on(names: tuple[str, ...] = CHECKPOINTS) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def max_diff(got: np.ndarray, want: np.ndarray) -> float:
    """The largest absolute difference, once nothing broadcasts and nothing is NaN or infinite."""
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    assert np.all(np.isfinite(got)) and np.all(np.isfinite(want)), "NaN or inf in the output"
    return float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))


@pytest.fixture(scope="module", autouse=True)
def print_table():
    """At the end of the module: every measured factor of the tolerance, a column per checkpoint."""
    yield
    names = [n for n in CHECKPOINTS if n in TABLE]
    if not names:
        return
    rows = list(dict.fromkeys(row for n in names for row in TABLE[n]))
    width = max(len(r) for r in rows)
    lines = [
        f"\nmax |diff| / tolerance (tolerance = {LOGITS_RTOL:g} * max(1, max |logit|)); noise must be "
        f"<= 1/{MARGIN}, mistakes >= {MARGIN}",
        f"{'':<{width}}  " + "  ".join(f"{n:>9}" for n in names),
    ]
    for row in rows:
        cells = [f"{TABLE[n][row]:>9.3g}" if row in TABLE[n] else f"{'':>9}" for n in names]
        lines.append(f"{row:<{width}}  " + "  ".join(cells))
    print("\n".join(lines))


# ---------------------------------------------------------------- the three agree


@pytest.mark.parametrize("label", INPUTS)
@pytest.mark.parametrize("name", on())
def test_hf_oracle_and_reference_agree_far_below_the_tolerance(name: str, label: str) -> None:
    """On each input, each pair of the three differs by at most tolerance / 5 at every position."""
    run = loaded(name)
    ids = run.inputs[label]
    tol = run.expected.tolerance(ids)
    assert tol == logits_tolerance(float(np.max(np.abs(run.logits("oracle", label)))))
    hf, ref, orc = (run.logits(who, label) for who in ("HuggingFace", "reference", "oracle"))
    assert ref.dtype == np.float32 and ref.shape == (*ids.shape, run.shape.vocab_size)
    diffs = dict(zip(PAIRS, (max_diff(hf, orc), max_diff(ref, hf), max_diff(ref, orc)), strict=True))
    print(
        f"\n{name} {label} {ids.shape}: tol {tol:.2e} | "
        + " | ".join(f"{pair} {d:.2e} = tol/{tol / d:.0f}" if d else f"{pair} 0" for pair, d in diffs.items())
    )
    TABLE.setdefault(name, {}).update({f"noise: {pair}, {label}": d / tol for pair, d in diffs.items()})
    for pair, d in diffs.items():
        assert d <= tol / MARGIN, f"{pair}: {d:.2e} is not {MARGIN}x below the tolerance {tol:.2e}"


@pytest.mark.parametrize("name", on())
def test_reference_loader_sets_every_attribute_to_the_answer_key(name: str) -> None:
    """After load_gpt2_weights, every contract attribute equals Expected.attributes exactly, and the head is tied."""
    run = loaded(name)
    for path in attribute_paths(run.shape.num_layers):
        value = get_attribute(run.reference, path)
        assert value.dtype == np.float32, path
        assert np.array_equal(value, run.expected.attributes[path]), path
    assert run.reference.lm_head.weight is run.reference.token_embedding.weight


# ---------------------------------------------------------------- every classic mistake lands far above


def mistake_params() -> list:
    params = []
    for name in CHECKPOINTS:
        for mistake in DECODER_MISTAKES:
            marks = [pytest.mark.slow] if name in SLOW else []
            params.append(pytest.param(name, mistake.key, marks=marks, id=f"{name}-{mistake.key}"))
    return params


@pytest.mark.parametrize(("name", "key"), mistake_params())
def test_each_classic_mistake_lands_far_above_the_tolerance(name: str, key: str) -> None:
    """The oracle replaying a classic decoder mistake differs from GPT-2 by at least 5 x the tolerance."""
    run = loaded(name)
    mistake = next(m for m in DECODER_MISTAKES if m.key == key)
    label = "long, one short" if mistake.variant.position_offset else "long"
    ids = run.inputs[label]
    tol = run.expected.tolerance(ids)
    d = max_diff(
        oracle.forward(run.expected.attributes, ids, run.shape.num_heads, mistake.variant), run.expected.logits(ids)
    )
    noise = max((v for k, v in TABLE.get(name, {}).items() if k.startswith("noise")), default=float("nan"))
    print(
        f"\n{name} {key} on {ids.shape[-1]} tokens: {d:.2e} = {d / tol:.1f} x tol"
        + (f" = {d / tol / noise:.0f} x the largest noise measured" if noise == noise else "")
    )
    TABLE.setdefault(name, {})[f"mistake: {key}"] = d / tol
    assert d >= MARGIN * tol, f"{key}: {d:.2e} is only {d / tol:.2f} x the tolerance {tol:.2e}"


def test_every_mistake_replays_on_the_graders_long_input_of_a_short_context_checkpoint() -> None:
    run = loaded("tiny")
    short = replace(run.shape, max_seq_len=32)
    weights = {**run.expected.attributes, "pos_embedding.weight": run.expected.attributes["pos_embedding.weight"][:32]}
    ids = choose(short, None, seed=1).logits[1].ids
    assert ids.shape == (1, 32)
    skipped = []
    for mistake in DECODER_MISTAKES:  # each one either replays, or is one that would have raised on the input
        if not mistake.variant.fits(ids.shape[1], short.max_seq_len):
            skipped.append(mistake.key)
            continue
        assert oracle.forward(weights, ids, short.num_heads, mistake.variant).shape == (1, 32, short.vocab_size)
    assert skipped == ["position_offset"]


# ---------------------------------------------------------------- sub-modules alone


def traced_inputs(run: Run, layer: int) -> dict[str, np.ndarray]:
    """The very inputs each sub-module of ``layer`` receives in the reference model on the grader-sized input."""
    ids = run.inputs["full context"][None, : min(48, run.shape.max_seq_len)]
    T = ids.shape[1]
    x = run.reference.token_embedding(ids) + run.reference.pos_embedding(T)
    mask = create_causal_mask(T)
    for block in run.reference.blocks[:layer]:
        x = block(x, mask, training=False)
    block = run.reference.blocks[layer]
    h1 = block.ln1(x)
    x2 = x + block.attn(h1, mask, training=False)
    return {"block": x, "ln1": x, "attention": h1, "ln2": x2, "mlp": block.ln2(x2)}


def reference_step(run: Run, layer: int, step: str, given: np.ndarray, causal: bool = True) -> np.ndarray:
    block = run.reference.blocks[layer]
    mask = create_causal_mask(given.shape[-2]) if causal else None
    return {
        "ln1": lambda: block.ln1(given),
        "ln2": lambda: block.ln2(given),
        "attention": lambda: block.attn(given, mask, training=False),
        "mlp": lambda: block.ffn(given, training=False),
        "block": lambda: block(given, mask, training=False),
    }[step]()


def oracle_step(
    run: Run, layer: int, step: str, given: np.ndarray, variant: oracle.Variant = oracle.GPT2
) -> np.ndarray:
    w = oracle.block_weights(run.expected.attributes, layer)
    n_head = run.shape.num_heads
    return {
        "ln1": lambda: oracle.layer_norm(given, w["ln1.gamma"], w["ln1.beta"], variant),
        "ln2": lambda: oracle.layer_norm(given, w["ln2.gamma"], w["ln2.beta"], variant),
        "attention": lambda: oracle.attention(given, w, n_head, variant),
        "mlp": lambda: oracle.mlp(given, w, variant),
        "block": lambda: oracle.block(given, w, n_head, variant),
    }[step]()


STEPS = ("ln1", "attention", "ln2", "mlp", "block")


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("name", on())
def test_each_oracle_sub_module_matches_the_reference_module_on_the_same_input(name: str, step: str) -> None:
    """In every layer, on its traced input, the oracle's sub-module is within half the grader's sub-step tolerance."""
    run = loaded(name)
    worst = 0.0
    for layer in range(run.shape.num_layers):
        given = traced_inputs(run, layer)[step]
        want = oracle_step(run, layer, step, given)
        got = reference_step(run, layer, step, given)
        assert got.shape == want.shape == given.shape
        worst = max(worst, max_diff(got, want) / max(1.0, float(np.max(np.abs(want)))))
    print(f"\n{name} {step}: max |diff| / scale {worst:.2e} = {worst / SUBSTEP_RTOL:.2f} x SUBSTEP_RTOL")
    assert worst <= SUBSTEP_RTOL / 2


@pytest.mark.parametrize("name", on())
def test_oracle_attention_is_causal_like_the_masked_reference(name: str) -> None:
    """With the mask off on both sides they agree again, and the mask changes the output: it is not a no-op."""
    run = loaded(name)
    given = traced_inputs(run, 0)["attention"]
    masked, unmasked = (
        oracle_step(run, 0, "attention", given),
        oracle_step(run, 0, "attention", given, oracle.Variant(causal=False)),
    )
    scale = max(1.0, float(np.max(np.abs(unmasked))))
    assert max_diff(reference_step(run, 0, "attention", given, causal=False), unmasked) <= SUBSTEP_RTOL / 2 * scale
    assert max_diff(masked, unmasked) > 100 * SUBSTEP_RTOL * scale
    assert np.allclose(masked[:, -1], unmasked[:, -1], rtol=0, atol=SUBSTEP_RTOL * scale)  # the last row sees all


# ---------------------------------------------------------------- Variant: every mistake changes something


def every_variant() -> list[oracle.Variant]:
    """Each field of Variant set to each of its other values."""
    others = {
        "gelu": ("erf", "relu"),
        "causal": (False,),
        "scale": ("sqrt_model", "head", "none"),
        "heads": ("reshape", "interleaved"),
        "position_offset": (1,),
        "ln_variance": ("unbiased",),
        "ln_eps": ("outside", "none"),
        "residual_dtype": ("float16",),
        "softmax_axis": (-2,),
    }
    assert set(others) == {f.name for f in fields(oracle.Variant)}, "a new Variant field needs its values here"
    return [oracle.Variant(**{k: v}) for k, values in others.items() for v in values]


@pytest.mark.parametrize("variant", every_variant(), ids=lambda v: ",".join(f"{k}={x}" for k, x in v.changes().items()))
def test_each_variant_changes_the_logits(variant: oracle.Variant) -> None:
    """On a random 24-token input of tiny, every variant's logits differ from GPT-2's: none is a no-op."""
    run = loaded("tiny")
    ids = np.random.default_rng(7).integers(0, run.shape.vocab_size, 24)
    base = oracle.forward(run.expected.attributes, ids, run.shape.num_heads)
    other = oracle.forward(run.expected.attributes, ids, run.shape.num_heads, variant)
    assert other.shape == base.shape and np.all(np.isfinite(other))
    assert max_diff(other, base) > 0.1 * run.expected.tolerance(ids), f"{variant.changes()} is (almost) a no-op"


def test_variant_changes_lists_exactly_the_fields_that_differ_from_gpt2() -> None:
    assert oracle.GPT2.changes() == {}
    assert oracle.Variant(gelu="erf", causal=False).changes() == {"gelu": "erf", "causal": False}
    assert [m.variant.changes() != {} for m in DECODER_MISTAKES] == [True] * len(DECODER_MISTAKES)
    assert len({m.variant for m in DECODER_MISTAKES}) == len({m.key for m in DECODER_MISTAKES}) == len(DECODER_MISTAKES)


@pytest.mark.parametrize(("kind", "value"), [("gelu", "swish"), ("heads", "rotate")])
def test_unknown_variant_values_are_refused(kind: str, value: str) -> None:
    run = loaded("tiny")
    with pytest.raises(ValueError, match=value):
        oracle.forward(run.expected.attributes, np.arange(3), run.shape.num_heads, oracle.Variant(**{kind: value}))


@pytest.mark.parametrize("kind", [k for k, mistakes in SUBSTEP_MISTAKES.items() if mistakes])
def test_each_sub_step_mistake_changes_its_sub_module(kind: str) -> None:
    """The variants the diagnosis tries on one sub-module all change that sub-module's output on its traced input."""
    run = loaded("tiny")
    step = {"ln": "ln1"}.get(kind, kind)
    given = traced_inputs(run, 1)[step]
    base = oracle_step(run, 1, step, given)
    scale = float(np.max(np.abs(base)))
    for mistake in SUBSTEP_MISTAKES[kind]:
        assert max_diff(oracle_step(run, 1, step, given, mistake.variant), base) > 1e-9 * scale, mistake.key


@pytest.mark.parametrize("lead", [(), (3,)])
def test_the_chunked_head_equals_one_float64_product(lead: tuple[int, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    """The head reuses one buffer for its slices: the last, shorter slice and a batch match the one product."""
    monkeypatch.setattr(oracle, "HEAD_CHUNK", 8)
    rng = np.random.default_rng(0)
    wte = rng.standard_normal((29, 6), dtype=np.float32)  # 29 rows: three full slices and one of 5
    h = rng.standard_normal((*lead, 4, 6))
    np.testing.assert_allclose(oracle.head(h, wte), h @ wte.astype(np.float64).T, rtol=1e-12, atol=0)
