"""Feedback machinery in isolation: what a wrong array holds instead, mistake recognition, the torch spy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from grader.lab import contract, oracle
from grader.lab.common import logits_tolerance
from grader.lab.diagnose import CandidateIndex, attribute_findings, explain, failure_hint, group_findings
from grader.lab.mistakes import DECODER_MISTAKES
from grader.lab.tiers import compare, mapping
from grader.lab.tiers.logits import _Spy
from grader.lab.torchguard import guard_torch
from grader.lab.truth import Expected

LAYERS = 2


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return mapping.synthetic_state(LAYERS, seed=3)


@pytest.fixture(scope="module")
def expected(state) -> dict[str, np.ndarray]:
    return contract.expected_attributes(state, LAYERS)


@pytest.fixture(scope="module")
def index(expected, state) -> CandidateIndex:
    return CandidateIndex(expected, state)


def test_synthetic_entries_are_all_distinct(state):
    values = np.concatenate([v.ravel() for k, v in state.items() if k != "lm_head.weight"])
    assert np.unique(values).size == values.size
    assert np.all(values == np.round(values)), "integers are exact in float32"


@pytest.mark.parametrize(
    ("path", "wrong", "says"),
    [
        ("blocks.0.attn.W_O", lambda e: e["blocks.0.attn.W_O"].T, "transpose of the right array"),
        ("blocks.1.attn.W_Q", lambda e: e["blocks.1.attn.W_V"], "holds the V part of c_attn instead of the Q part"),
        ("blocks.0.attn.b_K", lambda e: e["blocks.0.attn.b_Q"], "holds the Q part of c_attn instead of the K part"),
        ("blocks.0.ln2.gamma", lambda e: e["blocks.0.ln2.beta"], "gamma and beta are swapped"),
        ("blocks.1.ffn.W1", lambda e: e["blocks.0.ffn.W1"], "holds layer 0's tensor"),
        ("ln_f.beta", lambda e: e["blocks.1.ln2.beta"], "belongs to blocks.1.ln2.beta"),
    ],
    ids=["transpose", "qkv third", "qkv bias", "gamma/beta", "other layer", "other attribute"],
)
def test_explain_names_what_a_wrong_array_holds(index, expected, path, wrong, says):
    assert says in explain(path, wrong(expected), index)


def test_explain_recognises_an_unsplit_c_attn(index, state):
    assert "whole fused attn.c_attn.weight" in explain(
        "blocks.0.attn.W_Q", state["transformer.h.0.attn.c_attn.weight"], index
    )


def test_explain_returns_none_for_unknown_values(index, expected):
    assert explain("blocks.0.attn.W_Q", expected["blocks.0.attn.W_Q"] + 0.5, index) is None


def test_findings_cover_dtype_shape_missing_and_initial_values(index, expected):
    got = dict(expected)
    got["ln_f.gamma"] = expected["ln_f.gamma"].astype(np.float64)
    got["blocks.0.ffn.b1"] = np.zeros(3, np.float32)
    got["blocks.0.ffn.b2"] = np.zeros_like(expected["blocks.0.ffn.b2"])
    got["blocks.1.ffn.b2"] = "is missing (no such attribute)"
    findings, _ = attribute_findings(expected, got, index, initial={"blocks.0.ffn.b2": True})
    text = dict(findings)
    assert "right values but dtype float64" in text["ln_f.gamma"]
    assert "has shape (3,), expected (48,)" in text["blocks.0.ffn.b1"]
    assert "never loaded" in text["blocks.0.ffn.b2"]
    assert text["blocks.1.ffn.b2"] == "is missing (no such attribute)"
    assert len(findings) == 4


def test_grouping_merges_layers_and_collapses_layer_swaps():
    same = [(f"blocks.{i}.attn.W_O", "holds the transpose of the right array") for i in range(3)]
    assert group_findings(same) == ["blocks.{0,1,2}.attn.W_O holds the transpose of the right array"]
    swapped = [(f"blocks.0.{leaf}", "holds layer 1's tensor (x) instead of its own layer's") for leaf in "abcd"]
    assert group_findings(swapped) == [
        "blocks.0.* (4 attributes) hold layer 1's tensors instead of layer 0's: check the layer index in the mapping"
    ]
    many = [(f"p{i}", "wrong") for i in range(12)]
    assert group_findings(many, limit=8)[-1] == "... and 4 more"


def test_failure_hints_recognise_hard_wiring_and_the_hub():
    shape = contract.ModelShape(50257, 64, 2, 4, 256, 128)
    assert "has 2 layers" in failure_hint({"type": "KeyError", "message": "'transformer.h.5.ln_1.weight'"}, shape)
    assert "has 2 layers" in failure_hint({"type": "IndexError", "message": "list index out of range"}, shape)
    assert "not a fixed 'gpt2'" in failure_hint(
        {"type": "OSError", "message": "couldn't connect to huggingface.co"}, shape
    )
    assert failure_hint({"type": "ValueError", "message": "something else"}, shape) == ""


def test_every_classic_mistake_changes_the_logits_beyond_tolerance(tiny):
    weights = Expected(tiny.ref()).attributes
    ids = np.array([15496, 11, 616, 1438, 318, 257, 1332, 286, 262, 4067])
    base = oracle.forward(weights, ids, n_head=tiny.shape.num_heads)
    tol = logits_tolerance(base)
    for mistake in DECODER_MISTAKES:
        other = oracle.forward(weights, ids, n_head=tiny.shape.num_heads, variant=mistake.variant)
        assert np.max(np.abs(other - base)) > 5 * tol, mistake.key
    trace: oracle.Trace = []
    oracle.forward(weights, ids, n_head=tiny.shape.num_heads, trace=trace)
    names = [name for name, _ in trace]
    assert names[0] == "embedding" and names[-2:] == ["ln_f", "head"] and "layer 1 attention" in names


def test_wrong_statistic_is_recognised():
    rng = np.random.default_rng(0)
    diff = rng.normal(size=(5, 7))
    assert compare._wrong_statistic(float(np.mean(np.abs(diff))), diff) == "the mean absolute difference"
    assert compare._wrong_statistic(float(np.max(np.abs(diff[-1]))), diff) == "the maximum over the last position only"
    assert compare._wrong_statistic(123.0, diff) is None


def test_spy_records_calls_and_forwards_attributes():
    class Layer:
        scale = 2.0

        def __call__(self, x):
            return x * self.scale

        def forward(self, x):
            return self(x)

    log: dict = {}
    spy = _Spy(Layer(), "layer 0 ln1", log)
    assert spy(np.ones(2)).tolist() == [2.0, 2.0] and spy.scale == 2.0
    spy.scale = 3.0
    assert spy.forward(np.ones(1)).tolist() == [3.0]
    assert log["layer 0 ln1"][1].tolist() == [2.0, 2.0], "the first call is the one kept"


def test_torch_guard_sees_torch_calls_only_inside(tmp_path: Path):
    import torch

    with guard_torch(tmp_path) as use:
        np.ones(3) @ np.ones(3)
    assert use.count == 0
    with guard_torch(tmp_path) as use:
        torch.ones(2).sum()
    assert use.count > 0 and use.first
    torch.ones(2).sum()  # outside: nothing recorded, nothing raised
