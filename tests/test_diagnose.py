"""The diagnosis names what a wrong array holds instead; the answer key says what every attribute must hold.

Covers ``grader/grading/diagnose.py`` (``CandidateIndex``, ``explain``, ``compare_one``,
``attribute_findings``, ``group_findings``, ``mistake_keys``, ``cause_key``, ``failure_hint``) and
``grader/grading/answers.py`` (``expected_attributes``, ``synthetic_state``, ``sources``, ``source_text``),
on a small synthetic state whose entries are distinct integers, so every mistake is unambiguous.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from grader.grading import truth
from grader.grading.answers import expected_attributes, source_text, sources, synthetic_state
from grader.grading.checkpoints import resolve_model
from grader.grading.diagnose import (
    CandidateIndex,
    attribute_findings,
    cause_key,
    compare_one,
    explain,
    failure_hint,
    group_findings,
    mistake_keys,
)
from lab04_checks.contract import BLOCK_ATTRIBUTES, ModelShape, attribute_paths, attribute_shape, hf_parameter_names

SHAPE = ModelShape(vocab_size=29, d_model=12, num_layers=2, num_heads=3, d_ff=48, max_seq_len=17)
D = SHAPE.d_model
State = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def state() -> State:
    return synthetic_state(SHAPE, seed=3)


@pytest.fixture(scope="module")
def expected(state: State) -> State:
    return expected_attributes(state, SHAPE.num_layers)


@pytest.fixture(scope="module")
def index(expected: State, state: State) -> CandidateIndex:
    return CandidateIndex(expected, state)


def c_attn(state: State, layer: int, what: str = "weight") -> np.ndarray:
    return state[f"transformer.h.{layer}.attn.c_attn.{what}"]


# ---------------------------------------------------------------- the answer key


def test_synthetic_state_is_gpt2s_names_and_shapes_holding_distinct_integers(state: State) -> None:
    """Every GPT-2 parameter, shaped as HuggingFace shapes it, holding 1..N once each (exact in float32)."""
    assert list(state) == [n for n in hf_parameter_names(SHAPE.num_layers) if n != "lm_head.weight"] + [
        "lm_head.weight"
    ]
    assert state["lm_head.weight"] is state["transformer.wte.weight"]  # tied
    assert c_attn(state, 1).shape == (D, 3 * D) and c_attn(state, 1, "bias").shape == (3 * D,)
    assert state["transformer.h.0.mlp.c_fc.weight"].shape == (D, SHAPE.d_ff)
    values = np.concatenate([v.ravel() for k, v in state.items() if k != "lm_head.weight"])
    assert values.dtype == np.float32 and values.size == SHAPE.parameters
    assert np.array_equal(np.sort(values), np.arange(1, values.size + 1, dtype=np.float32))
    other = synthetic_state(SHAPE, seed=4)
    assert not np.array_equal(other["transformer.wte.weight"], state["transformer.wte.weight"])


def test_sources_name_a_huggingface_tensor_for_every_attribute() -> None:
    """Every contract attribute has a source; c_attn's weight and bias feed Q, K, V as thirds 0, 1, 2."""
    found = sources(SHAPE.num_layers)
    assert set(found) == set(attribute_paths(SHAPE.num_layers))
    assert {name for name, _ in found.values()} == set(hf_parameter_names(SHAPE.num_layers)) - {"lm_head.weight"}
    for i in range(SHAPE.num_layers):
        for what, prefix in (("weight", "W"), ("bias", "b")):
            assert [found[f"blocks.{i}.attn.{prefix}_{n}"] for n in "QKV"] == [
                (f"transformer.h.{i}.attn.c_attn.{what}", third) for third in range(3)
            ]


def test_expected_attributes_split_c_attn_along_its_last_axis(state: State, expected: State) -> None:
    """W_Q, W_K, W_V are the contiguous column blocks of c_attn; every attribute is float32, contiguous, its shape."""
    for i in range(SHAPE.num_layers):
        for prefix, what in (("W", "weight"), ("b", "bias")):
            fused = c_attn(state, i, what)
            for third, name in enumerate("QKV"):
                assert np.array_equal(
                    expected[f"blocks.{i}.attn.{prefix}_{name}"], fused[..., third * D : (third + 1) * D]
                )
        assert np.array_equal(expected[f"blocks.{i}.ffn.W2"], state[f"transformer.h.{i}.mlp.c_proj.weight"])
        assert np.array_equal(expected[f"blocks.{i}.ln1.beta"], state[f"transformer.h.{i}.ln_1.bias"])
    assert np.array_equal(expected["token_embedding.weight"], state["transformer.wte.weight"])
    for path, array in expected.items():
        assert array.dtype == np.float32 and array.flags.c_contiguous, path
        assert array.shape == attribute_shape(path, SHAPE), path


def test_source_text_says_where_a_value_comes_from() -> None:
    assert source_text("blocks.1.attn.W_K", 2) == "transformer.h.1.attn.c_attn.weight [..., d:2d] (the K part)"
    assert source_text("blocks.0.attn.b_V", 2) == "transformer.h.0.attn.c_attn.bias [..., 2d:3d] (the V part)"
    assert source_text("ln_f.beta", 2) == "transformer.ln_f.bias"


# ---------------------------------------------------------------- explain: what a wrong array holds


def holds(other: str) -> Callable[[State, State], np.ndarray]:
    """The expected value of another attribute."""
    return lambda e, s: e[other]


MISTAKES: dict[str, tuple[str, Callable[[State, State], np.ndarray], str, str]] = {
    # id: (attribute, what it holds, kind, words it must contain)
    "transpose": (
        "blocks.0.ffn.W1",
        lambda e, s: e["blocks.0.ffn.W1"].T,
        "transpose",
        "holds the transpose of the right array",
    ),
    "transpose of a square matrix": (
        "blocks.1.attn.W_O",
        lambda e, s: e["blocks.1.attn.W_O"].T,
        "transpose",
        "holds the transpose of the right array",
    ),
    "Q holds K": (
        "blocks.1.attn.W_Q",
        holds("blocks.1.attn.W_K"),
        "qkv_permuted",
        "holds the K part of c_attn instead of the Q part",
    ),
    "b_K holds b_V": (
        "blocks.0.attn.b_K",
        holds("blocks.0.attn.b_V"),
        "qkv_permuted",
        "holds the V part of c_attn instead of the K part",
    ),
    "Q holds K transposed": (
        "blocks.0.attn.W_Q",
        lambda e, s: e["blocks.0.attn.W_K"].T,
        "qkv_permuted",
        "holds the transpose of the K part of c_attn instead of the Q part",
    ),
    "gamma holds beta": (
        "blocks.0.ln2.gamma",
        holds("blocks.0.ln2.beta"),
        "gamma_beta_swapped",
        "holds the bias of its LayerNorm: gamma and beta are swapped",
    ),
    "ln_f beta holds gamma": (
        "ln_f.beta",
        holds("ln_f.gamma"),
        "gamma_beta_swapped",
        "holds the weight of its LayerNorm: gamma and beta are swapped",
    ),
    "another layer's": (
        "blocks.1.ffn.b1",
        holds("blocks.0.ffn.b1"),
        "other_layer",
        "holds layer 0's tensor (transformer.h.0.mlp.c_fc.bias) instead of its own layer's",
    ),
    "another tensor": (
        "ln_f.beta",
        holds("blocks.1.ln2.beta"),
        "other_tensor",
        "holds transformer.h.1.ln_2.bias, which belongs to blocks.1.ln2.beta",
    ),
    "whole fused c_attn": (
        "blocks.0.attn.W_Q",
        lambda e, s: c_attn(s, 0),
        "fused_c_attn",
        "holds the whole fused attn.c_attn.weight, not one third of it",
    ),
    "whole fused c_attn transposed": (
        "blocks.1.attn.W_V",
        lambda e, s: c_attn(s, 1).T,
        "fused_c_attn",
        "holds the whole fused attn.c_attn.weight transposed",
    ),
    "whole fused c_attn bias": (
        "blocks.1.attn.b_K",
        lambda e, s: c_attn(s, 1, "bias"),
        "fused_c_attn",
        "holds the whole fused attn.c_attn.bias",
    ),
    "split along the wrong axis": (
        "blocks.0.attn.W_K",
        lambda e, s: c_attn(s, 0).reshape(3, D, D)[1],
        "wrong_axis_split",
        "holds part 1 of attn.c_attn.weight split along the wrong axis",
    ),
    "interleaved columns": (
        "blocks.1.attn.W_V",
        lambda e, s: c_attn(s, 1)[..., 2::3],
        "interleaved_split",
        "holds every third column of attn.c_attn.weight (w[..., 2::3])",
    ),
    "interleaved bias": (
        "blocks.0.attn.b_Q",
        lambda e, s: c_attn(s, 0, "bias")[0::3],
        "interleaved_split",
        "holds every third column of attn.c_attn.bias (w[..., 0::3])",
    ),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_explain_names_what_a_wrong_array_holds(
    index: CandidateIndex, expected: State, state: State, mistake: str
) -> None:
    path, wrong, kind, words = MISTAKES[mistake]
    found = explain(path, wrong(expected, state), index)
    assert found is not None and found[0] == kind, found
    assert words in found[1]


@pytest.mark.parametrize(
    "change",
    [lambda a: a + 0.5, lambda a: a[::-1].copy(), lambda a: np.roll(a, 1, axis=-1)],
    ids=["shifted", "reversed", "rolled"],
)
def test_explain_knows_nothing_of_other_values(
    index: CandidateIndex, expected: State, change: Callable[[np.ndarray], np.ndarray]
) -> None:
    assert explain("blocks.0.attn.W_Q", change(expected["blocks.0.attn.W_Q"]), index) is None


def test_without_the_huggingface_state_the_fused_tensors_are_unknown(expected: State, state: State) -> None:
    """The index only knows c_attn's classic misuses when it is given the checkpoint's tensors."""
    plain = CandidateIndex(expected)
    assert plain.num_layers == SHAPE.num_layers
    assert explain("blocks.0.attn.W_Q", c_attn(state, 0), plain) is None
    assert explain("blocks.0.attn.W_Q", c_attn(state, 0)[..., 0::3], plain) is None


def test_gamma_holding_the_other_layernorms_beta_is_not_a_gamma_beta_swap(
    index: CandidateIndex, expected: State
) -> None:
    found = explain("blocks.0.ln1.gamma", expected["blocks.0.ln2.beta"], index)
    assert found is not None and found[0] != "gamma_beta_swapped"


# ---------------------------------------------------------------- compare_one: each kind of finding


def test_compare_one_accepts_the_right_array_and_float32_rounding(index: CandidateIndex, expected: State) -> None:
    want = expected["blocks.0.ffn.W1"]
    assert compare_one("blocks.0.ffn.W1", want, want.copy(), index) == (None, 0.0)
    nudged = np.nextafter(want, np.float32(np.inf))  # one float32 step up everywhere
    finding, diff = compare_one("blocks.0.ffn.W1", want, nudged, index)
    assert finding is None and diff == float(np.max(nudged - want)) > 0


CASES: dict[str, tuple[Callable[[np.ndarray], object], bool, str, str]] = {
    # id: (what the attribute holds, made from the right value; unchanged?; kind; words it must contain)
    "never loaded": (lambda w: w * 0.02, True, "never_loaded", "is unchanged since GPTModel(...) created it"),
    "float64, right values": (
        lambda w: w.astype(np.float64),
        False,
        "float64",
        "has the right values but dtype float64: store float32",
    ),
    "wrong shape": (lambda w: w[:-1], False, "wrong_shape", "has shape (11,), expected (12,)"),
    "all zeros": (np.zeros_like, False, "constant", "is all zeros"),
    "all ones": (np.ones_like, False, "constant", "is all ones"),
    "a constant": (lambda w: np.full_like(w, 0.25), False, "constant", "is the constant 0.25"),
    "wrong values": (
        lambda w: w + 0.5,
        False,
        "wrong_values",
        "does not match transformer.h.1.ln_2.bias (max |diff| 0.5)",
    ),
    "missing": (lambda w: None, False, "missing", "is missing"),
    "missing, with a reason": (
        lambda w: "is missing (no attribute beta)",
        False,
        "missing",
        "is missing (no attribute beta)",
    ),
    "booleans": (lambda w: w > 0, False, "wrong_dtype", "has dtype bool, expected float32"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_compare_one_names_each_kind_of_wrong_value(index: CandidateIndex, expected: State, case: str) -> None:
    make, unchanged, kind, words = CASES[case]
    path = "blocks.1.ln2.beta"
    finding, _ = compare_one(path, expected[path], make(expected[path]), index, unchanged=unchanged)
    assert finding is not None and finding[:2] == (path, kind), finding
    assert words in finding[2]


def test_compare_one_explains_a_wrongly_shaped_array_it_recognises(
    index: CandidateIndex, expected: State, state: State
) -> None:
    """A wrong shape that is a transpose, or the whole fused c_attn, is named as that mistake."""
    (path, kind, words), _ = compare_one(
        "blocks.0.ffn.W1", expected["blocks.0.ffn.W1"], expected["blocks.0.ffn.W1"].T, index
    )
    assert (path, kind) == ("blocks.0.ffn.W1", "transpose")
    assert words.startswith("has shape (48, 12), expected (12, 48); it holds the transpose")
    (_, kind, words), _ = compare_one(
        "blocks.1.attn.b_V", expected["blocks.1.attn.b_V"], c_attn(state, 1, "bias"), index
    )
    assert kind == "fused_c_attn" and words.startswith("has shape (36,), expected (12,); it holds the whole fused")


def test_attribute_findings_report_every_wrong_attribute_and_the_largest_difference(
    index: CandidateIndex, expected: State
) -> None:
    got = dict(expected)
    got["blocks.0.attn.W_O"] = expected["blocks.0.attn.W_O"].T
    got["ln_f.gamma"] = expected["ln_f.gamma"].astype(np.float64)
    got["blocks.1.ffn.b2"] = expected["blocks.1.ffn.b2"] * 0.0
    del got["blocks.1.ffn.b1"]
    findings, worst = attribute_findings(expected, got, index, unchanged={"blocks.1.ffn.b2": True})
    assert [(path, kind) for path, kind, _ in findings] == [
        ("blocks.0.attn.W_O", "transpose"),
        ("blocks.1.ffn.b1", "missing"),
        ("blocks.1.ffn.b2", "never_loaded"),
        ("ln_f.gamma", "float64"),
    ]
    assert worst == max(float(np.max(np.abs(got[p] - expected[p]))) for p in ("blocks.0.attn.W_O", "blocks.1.ffn.b2"))
    assert attribute_findings(expected, dict(expected), index) == ([], 0.0)


# ---------------------------------------------------------------- grouping and counting


def all_findings(expected: State, index: CandidateIndex, got: State) -> list:
    return attribute_findings(expected, got, index)[0]


def test_group_findings_merges_the_layers_of_one_mistake(index: CandidateIndex, expected: State) -> None:
    got = {**expected, **{f"blocks.{i}.attn.W_O": expected[f"blocks.{i}.attn.W_O"].T for i in range(2)}}
    lines = group_findings(all_findings(expected, index, got))
    assert lines == [
        "blocks.{0,1}.attn.W_O holds the transpose of the right array: Conv1D weights are already "
        "(in, out), the layout x @ W needs, so no .T"
    ]


def test_group_findings_collapses_a_block_holding_another_layer_into_one_line(
    index: CandidateIndex, expected: State
) -> None:
    """Block 0 loaded from layer 1 (all 16 attributes): one line about the layer index."""
    got = {**expected, **{f"blocks.0.{a}": expected[f"blocks.1.{a}"] for a in BLOCK_ATTRIBUTES}}
    findings = all_findings(expected, index, got)
    assert len(findings) == len(BLOCK_ATTRIBUTES)
    assert group_findings(findings) == [
        f"blocks.0.* ({len(BLOCK_ATTRIBUTES)} attributes) hold layer 1's tensors "
        "instead of layer 0's: check the layer index in the mapping"
    ]
    swapped = {**got, **{f"blocks.1.{a}": expected[f"blocks.0.{a}"] for a in BLOCK_ATTRIBUTES}}
    lines = group_findings(all_findings(expected, index, swapped))
    assert [line.split(" (")[0] for line in lines] == ["blocks.0.*", "blocks.1.*"]  # one line per block, nothing else


def test_group_findings_keeps_a_few_other_layer_attributes_apart(index: CandidateIndex, expected: State) -> None:
    """Fewer than 3 attributes from another layer are not a layer swap: each is its own line."""
    got = {**expected, "blocks.0.ffn.W1": expected["blocks.1.ffn.W1"], "blocks.0.ffn.b1": expected["blocks.1.ffn.b1"]}
    lines = group_findings(all_findings(expected, index, got))
    assert [line.split(" ")[0] for line in lines] == ["blocks.0.ffn.W1", "blocks.0.ffn.b1"]
    assert all("holds layer 1's tensor" in line for line in lines)


def test_group_findings_stops_at_the_limit() -> None:
    findings = [(f"path{i}", "wrong_values", f"is wrong in way {i}") for i in range(12)]
    lines = group_findings(findings, limit=8)
    assert lines == [f"path{i} is wrong in way {i}" for i in range(8)] + ["... and 4 more"]


def test_mistake_keys_count_a_mistake_once_whatever_the_layers(index: CandidateIndex, expected: State) -> None:
    """Q and K swapped in every layer (weights and biases), W_O transposed in both: three mistakes."""
    got = dict(expected)
    for i in range(SHAPE.num_layers):
        for p in ("W", "b"):
            got[f"blocks.{i}.attn.{p}_Q"], got[f"blocks.{i}.attn.{p}_K"] = (
                expected[f"blocks.{i}.attn.{p}_K"],
                expected[f"blocks.{i}.attn.{p}_Q"],
            )
        got[f"blocks.{i}.attn.W_O"] = expected[f"blocks.{i}.attn.W_O"].T
        got[f"blocks.{i}.ln1.gamma"], got[f"blocks.{i}.ln1.beta"] = (
            expected[f"blocks.{i}.ln1.beta"],
            expected[f"blocks.{i}.ln1.gamma"],
        )
    findings = all_findings(expected, index, got)
    assert len(findings) == 14
    keys = dict(mistake_keys(findings))
    assert set(keys) == {
        "attn.W_QKV:qkv_permuted",
        "attn.b_QKV:qkv_permuted",
        "attn.W_O:transpose",
        "ln1:gamma_beta_swapped",
    }
    assert keys["attn.W_O:transpose"] == "attn.W_O holds the transpose of the right array"
    assert keys["attn.W_QKV:qkv_permuted"] == "attn.W_QKV holds the K part of c_attn instead of the Q part"


def test_mistake_keys_replace_numbers_in_their_labels(index: CandidateIndex, expected: State) -> None:
    """The label of another layer's tensor does not name the layers, so it is the same in every submission."""
    got = {**expected, "blocks.1.ffn.W2": expected["blocks.0.ffn.W2"]}
    ((key, label),) = mistake_keys(all_findings(expected, index, got))
    assert key == "ffn.W2:other_layer"
    assert label == "ffn.W2 holds layer N's tensor (transformer.h.N.mlp.c_proj.weight) instead of its own layer's"


def test_cause_key_is_the_same_in_every_layer() -> None:
    assert cause_key("blocks.0.attn.W_Q") == cause_key("blocks.11.attn.W_Q") == "attribute attn.W_Q"
    assert cause_key("ln_f.beta") == "attribute ln_f.beta"
    assert cause_key("blocks.0.attn.W_Q") != cause_key("blocks.0.attn.W_K")


# ---------------------------------------------------------------- failure hints


@pytest.mark.parametrize(
    ("kind", "message", "hint"),
    [
        ("KeyError", "'transformer.h.2.ln_1.weight'", "This checkpoint has 2 layers"),
        ("IndexError", "list index out of range", "not a fixed 12"),
        ("ValueError", "cannot reshape array of size 432 into shape (768,768)", "d_model=12: do not hard-wire 768"),
        ("OSError", "We couldn't connect to 'https://huggingface.co' to load the files", "not a fixed 'gpt2'"),
        ("LocalEntryNotFoundError", "Cannot find the requested files in the disk cache", "not a fixed 'gpt2'"),
        ("OSError", "gpt2 is not a local folder and is not a valid model identifier", "not a fixed 'gpt2'"),
        ("ValueError", "operands could not be broadcast together with shapes (5,12) (36,)", "A shape mismatch"),
        ("ValueError", "shapes (5,12) and (36,12) not aligned: 12 (dim 1) != 36 (dim 0)", "A shape mismatch"),
        ("NotImplementedError", "", "still the template's stub"),
    ],
    ids=[
        "layer 2 of 2",
        "list index",
        "fixed 768",
        "hub",
        "hub cache",
        "not a local folder",
        "broadcast",
        "not aligned",
        "stub",
    ],
)
def test_failure_hint_recognises_classic_loader_mistakes(kind: str, message: str, hint: str) -> None:
    assert hint in failure_hint(message, kind, SHAPE)


def test_failure_hint_only_hints_what_the_checkpoint_contradicts() -> None:
    """On a 12 x 768 checkpoint, layer 2 and 768 are right; without a shape, only the size-free hints remain."""
    small = ModelShape(50257, 768, 12, 12, 3072, 1024)
    assert failure_hint("'transformer.h.2.ln_1.weight'", "KeyError", small) == ""
    assert failure_hint("cannot reshape array of size 2304 into shape (768,768)", "ValueError", small) == ""
    assert failure_hint("'transformer.h.2.ln_1.weight'", "KeyError", None) == ""
    assert "not a fixed 'gpt2'" in failure_hint("couldn't connect to huggingface.co", "OSError", None)
    assert failure_hint("something else went wrong", "RuntimeError", SHAPE) == ""


def test_failure_hint_does_not_see_768_inside_another_number() -> None:
    assert "768" not in failure_hint("index 50768 is out of bounds for axis 0 with size 50257", "IndexError", SHAPE)


def test_a_batch_warms_the_truth_without_hashing_it() -> None:
    from pathlib import Path

    from grader.config import GradeConfig
    from grader.grading.engine import prepare_expectations

    expectations = prepare_expectations(GradeConfig(Path("."), Path("out.json"), second_model=None), seed=3)
    expectations.warm(diagnosis=True)
    primary = expectations.checkpoints[expectations.roles["primary"]]
    assert "attributes" in primary._kept and primary._traces  # what every submission and a wrong one need
    assert "digests" not in primary._kept  # exported attributes are compared by their bytes, not by digests


def test_the_truth_thread_makes_the_compare_cases_before_the_tier_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compare tier runs on the torch lane's critical path of a single run: its cases (the oracle on
    the near and far misses) are made by the truth thread, with and without atol, and the tier only takes them."""
    from pathlib import Path

    from grader.config import GradeConfig
    from grader.grading.engine import prepare_expectations
    from grader.grading.tiers import compare

    expectations = prepare_expectations(GradeConfig(Path("."), Path("out.json"), second_model=None), seed=3)
    expectations.warm()
    function = expectations.checkpoints[expectations.roles["function"]]
    monkeypatch.setattr(compare, "_cases", lambda *args: pytest.fail("the tier had to make the cases itself"))
    for with_atol in (False, True):
        cases, order = compare.cases_of(function, expectations.inputs, with_atol)
        assert len(cases) == (5 if with_atol else 3) and sorted(order) == list(range(len(cases)))


def test_what_a_tier_derives_from_a_checkpoint_alone_is_made_once_per_key() -> None:
    from grader.grading.checkpoints import resolve_model
    from grader.grading.truth import Expected

    expected, made = Expected(resolve_model("tiny")), []
    first = expected.made(("cases", 1), lambda: made.append(1) or ["case"])
    assert expected.made(("cases", 1), lambda: made.append(2) or ["other"]) is first and made == [1]
    assert expected.made(("cases", 2), lambda: made.append(3) or ["other"]) == ["other"] and made == [1, 3]


def test_the_truths_parts_are_made_once_when_threads_ask_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch computes the truth in a thread while its first tiers ask for parts of it: each is made once."""
    real_read, reads = truth.read_state, []

    def slow_read(path):
        reads.append(path)
        time.sleep(0.2)  # long enough for every thread to ask while the first is reading
        return real_read(path)

    monkeypatch.setattr(truth, "read_state", slow_read)
    expected = truth.Expected(resolve_model("tiny"))
    got: list[object] = []
    threads = [
        threading.Thread(target=lambda name=name: got.append(getattr(expected, name)))
        for name in ("digests", "candidates", "attributes", "state", "digests", "state")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reads) == 1 and len(got) == 6
    assert expected.state is expected.state and expected.digests is expected.digests


def test_a_tier_asking_for_a_load_in_progress_waits_for_it_within_its_own_time() -> None:
    """One load per checkpoint: a second asker gets the first one's result, or a time-out when it runs out."""
    from types import SimpleNamespace

    from grader.grading import loading
    from grader.grading.outcome import Deadline, Stop

    session = SimpleNamespace(load_locks={"wide": threading.Lock()}, loads={}, primary_name="tiny")
    session.load_locks["wide"].acquire()  # another tier is loading it
    with pytest.raises(Stop) as stopped:
        loading.load(session, "wide", Deadline(0.05))
    assert stopped.value.failure.kind == "timeout"
    assert loading.finished(session, "wide", Deadline(0.05)) is None

    def end_the_load() -> None:
        time.sleep(0.1)
        session.loads["wide"] = "the finished load"
        session.load_locks["wide"].release()

    threading.Thread(target=end_the_load).start()
    assert loading.finished(session, "wide", Deadline(5)) == "the finished load"
    assert loading.load(session, "wide", Deadline(5)) == "the finished load"  # kept: not run again


def test_a_block_whose_traced_parts_chain_as_gpt2s_needs_no_float64_block_of_its_own() -> None:
    from grader.grading.localise import wired_as_gpt2

    rng = np.random.default_rng(0)
    x, ln1_out, attn_out, ln2_out, mlp_out = (rng.standard_normal((5, 8)) for _ in range(5))
    h = x + attn_out
    trace = {
        "layer 0 ln1": (x, ln1_out),
        "layer 0 attention": (ln1_out, attn_out),
        "layer 0 ln2": (h, ln2_out),
        "layer 0 mlp": (ln2_out, mlp_out),
        "layer 0 block": (x, h + mlp_out),
    }
    assert wired_as_gpt2(trace, 0)
    post_norm = {**trace, "layer 0 block": (x, ln2_out + mlp_out)}  # the residual taken after the norm
    assert not wired_as_gpt2(post_norm, 0)
    parallel = {**trace, "layer 0 ln2": (x, ln2_out)}  # ffn(ln2(x)) beside attention, not after it
    assert not wired_as_gpt2(parallel, 0)
    assert not wired_as_gpt2({k: v for k, v in trace.items() if k != "layer 0 mlp"}, 0)  # a part not traced
    narrower = {**trace, "layer 0 attention": (ln1_out, attn_out[:, :7])}  # a reply of another shape: no error
    assert not wired_as_gpt2(narrower, 0)


def test_a_layers_float64_weights_are_exact_and_written_into_the_same_buffers_for_every_layer() -> None:
    from grader.grading.localise import float64_layer

    rng = np.random.default_rng(0)
    shapes = {"attn.W_Q": (8, 8), "ffn.W1": (8, 32), "ln1.gamma": (8,)}
    weights = {
        f"blocks.{i}.{n}": rng.standard_normal(s).astype(np.float32) for i in range(3) for n, s in shapes.items()
    }
    weights["token_embedding.weight"] = rng.standard_normal((10, 8)).astype(np.float32)
    buffers: dict[str, np.ndarray] = {}
    first = float64_layer(weights, 0, buffers)
    for i in range(3):
        layer = float64_layer(weights, i, buffers)
        assert set(layer) == set(shapes)
        for name, array in layer.items():
            want = weights[f"blocks.{i}.{name}"].astype(np.float64)
            assert array.dtype == np.float64 and array.shape == want.shape and np.array_equal(array, want)
            assert array is first[name]  # no fresh pages per layer
    weights["blocks.2.ffn.W1"] = rng.standard_normal((32, 8)).astype(np.float32)  # another shape: a new buffer
    assert np.array_equal(float64_layer(weights, 2, buffers)["ffn.W1"], weights["blocks.2.ffn.W1"])
