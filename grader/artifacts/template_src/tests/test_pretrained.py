"""The public tests of Lab 04, on a small GPT-2 checkpoint built on your machine (no download).

They cover what the course's own tests cover (the config, creating the model, each group
of weights loaded, compare_outputs on several texts, analyze_weight_differences after
loading, and the milestone: your logits equal GPT-2's), plus the grader's other tiers.
Expected values are stored as data in tests/expected/public-tiny.json: digests of the
arrays each attribute must hold, and GPT-2's logits on a sample of the vocabulary.

What they leave out, and the grader checks (so passing here is necessary, not sufficient):
  * other inputs: the grader draws token ids afresh for each run, and compares all 50257
    logits of every position (here: about 300 per position, each position's top 5 among them);
  * a second checkpoint of another depth and width: code hard-wired to 2 layers or 64
    dimensions passes here and fails there;
  * models the grader corrupts on purpose, to see that compare_outputs,
    compare_intermediate_outputs and analyze_weight_differences notice the difference;
  * the mapping's transforms on synthetic tensors of other widths;
  * a forward pass in a process WITHOUT torch and transformers: here torch is importable,
    so a forward that calls torch passes here and fails in the grader.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from lab04_public import EMBEDDING, HEAD, Lab, accepts, wrong_lines

from lab04_checks.contract import (
    IGNORED_SUFFIXES,
    ModelShape,
    attribute_paths,
    hf_parameter_names,
    logits_tolerance,
    normalise_path,
    required_parameter_names,
)
from lab04_checks.student import StudentError

GPT2_SIZES = {
    "gpt2": (768, 12, 12),
    "gpt2-medium": (1024, 24, 16),
    "gpt2-large": (1280, 36, 20),
    "gpt2-xl": (1600, 48, 25),
}  # d_model, layers, heads: the README's table
WEIGHT_GROUPS = {
    "token_embedding": ("token_embedding.weight",),
    "pos_embedding": ("pos_embedding.weight",),
    "layer_norms": (".ln1.", ".ln2."),
    "attention": (".attn.",),
    "ffn": (".ffn.",),
    "ln_f": ("ln_f.",),
    "tied_head": (HEAD,),
}
COURSE_ATOL = 1e-4  # the course's tolerance for compare_outputs


# ---------------------------------------------------------------- given code (the course's first tests)


@pytest.mark.parametrize("name", sorted(GPT2_SIZES))
def test_gpt2_config(lab: Lab, name: str) -> None:
    """get_gpt2_config (given) knows the sizes of the four GPT-2 models."""
    d, layers, heads = GPT2_SIZES[name]
    config = lab.call("get_gpt2_config", lab.fn("get_gpt2_config"), name)
    want = {
        "vocab_size": 50257,
        "d_model": d,
        "num_layers": layers,
        "num_heads": heads,
        "d_ff": 4 * d,
        "max_seq_len": 1024,
    }
    wrong = {
        k: (config.get(k) if isinstance(config, dict) else None, v)
        for k, v in want.items()
        if not isinstance(config, dict) or config.get(k) != v
    }
    if wrong:
        pytest.fail(
            f"get_gpt2_config({name!r}): "
            + ", ".join(f"{k} is {got!r}, expected {v}" for k, (got, v) in wrong.items()),
            pytrace=False,
        )


def test_create_gpt2_model(lab: Lab) -> None:
    """create_gpt2_model("gpt2") (given) builds GPT-2 small's architecture, with every attribute the grader reads."""
    model = lab.call("create_gpt2_model('gpt2')", lab.fn("create_gpt2_model"), "gpt2")
    shape = ModelShape(vocab_size=50257, d_model=768, num_layers=12, num_heads=12, d_ff=3072, max_seq_len=1024)
    problems = [
        f"{k} is {getattr(model, k, None)!r}, expected {v}"
        for k, v in shape.constructor_kwargs().items()
        if getattr(model, k, None) != v
    ]
    if len(getattr(model, "blocks", [])) != 12:
        problems.append(f"it has {len(getattr(model, 'blocks', []))} blocks, expected 12")
    problems += lab.structure_problems(model, shape)
    del model  # 500 MB
    if problems:
        lab.report(
            ["model-structure"],
            "create_gpt2_model('gpt2') is not GPT-2 small:\n" + "\n".join(f"  - {p}" for p in problems[:8]),
            "the model lacks attributes",
        )


def test_model_for_the_public_checkpoint(lab: Lab) -> None:
    """GPTModel built with the public checkpoint's sizes has every attribute of the handout's table."""
    lab.fresh()


# ---------------------------------------------------------------- your mapping and your loader


def test_weight_mapping(lab: Lab) -> None:
    """get_weight_mapping covers every GPT-2 parameter (1, 2 and 12 layers); its transforms give the right arrays."""
    fn = lab.fn("get_weight_mapping")
    problems: list[str] = []
    for layers in (1, 2, 12):
        mapping = lab.call("get_weight_mapping", fn, layers)
        if not isinstance(mapping, dict):
            pytest.fail(f"get_weight_mapping({layers}) returned a {type(mapping).__name__}, not a dict", pytrace=False)
        missing = [k for k in required_parameter_names(layers) if k not in mapping]
        known = set(hf_parameter_names(layers))
        unknown = [k for k in mapping if k not in known and not str(k).endswith(IGNORED_SUFFIXES)]
        if missing:
            problems.append(
                f"get_weight_mapping({layers}) has no entry for {', '.join(missing[:4])}"
                + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            )
        if unknown:
            problems.append(f"get_weight_mapping({layers}) has keys GPT-2 does not: {', '.join(map(str, unknown[:4]))}")
    more, wrong = _transform_problems(lab, lab.call("get_weight_mapping", fn, lab.shape().num_layers))
    problems += more
    if problems or wrong:
        text = "get_weight_mapping is wrong:\n" + "\n".join(f"  - {p}" for p in problems[:10]) if problems else ""
        if wrong:
            text += (
                "\n" if text else ""
            ) + "On the public checkpoint's tensors, get_weight_mapping's transforms give:\n"
            text += wrong_lines(wrong)
        # The loader follows the mapping: the same mistakes in the loaded weights are this cause, reported here.
        keys = ["mapping", *sorted({f"weights:{kind}" for kind, _ in wrong.values()})]
        lab.report(keys, text, "get_weight_mapping is wrong")


def _transform_problems(lab: Lab, mapping: dict) -> tuple[list[str], dict[str, tuple[str, str]]]:
    """Run each transform on the public checkpoint's tensor; compare what it gives each target with the data."""
    state, data = lab.state(), lab.data()
    paths = set(attribute_paths(lab.shape().num_layers))
    wrong: dict[str, tuple[str, str]] = {}
    problems = []
    for key, value in mapping.items():
        if key not in state or not (isinstance(value, tuple) and len(value) == 2 and callable(value[1])):
            if key in state:
                problems.append(f"{key} maps to {value!r:.80}; expected (target, transform)")
            continue
        target, transform = value
        targets = [target] if isinstance(target, str) else list(target)
        out = lab.call_as("get_weight_mapping's transforms", f"the transform of {key}", transform, state[key].copy())
        outs = [out] if isinstance(target, str) else list(out) if isinstance(out, (tuple, list)) else [out]
        if len(outs) != len(targets):
            problems.append(f"the transform of {key} gives {len(outs)} arrays for {len(targets)} targets")
            continue
        for path, array in zip(map(normalise_path, targets), outs, strict=True):
            if key == HEAD and path in (HEAD, EMBEDDING):
                path = EMBEDDING  # the tied head may map onto the embedding, unchanged
            if path not in paths:
                problems.append(f"{key} maps to {path}, which is not an attribute of the handout's table")
            elif found := data.problem(path, array):
                wrong[path] = found
    return problems, wrong


def test_load_gpt2_weights(lab: Lab) -> None:
    """load_gpt2_weights(model, <the public checkpoint's folder>) runs (and fills the model it is given)."""
    model, _, returned = lab.loaded()
    if returned is not None and returned is not model and not hasattr(returned, "blocks"):
        pytest.fail(
            f"load_gpt2_weights returned a {type(returned).__name__}: fill the model in place and return "
            "nothing, or the model",
            pytrace=False,
        )


@pytest.mark.parametrize("group", list(WEIGHT_GROUPS))
def test_loaded_weights(lab: Lab, group: str) -> None:
    """After loading, each attribute of the group holds its GPT-2 array: shape, float32 and values."""
    lab.loaded()
    paths = [p for p in [*attribute_paths(lab.shape().num_layers), HEAD] if any(k in p for k in WEIGHT_GROUPS[group])]
    problems = {p: v for p, v in lab.weight_problems().items() if p in paths}
    if not problems:
        return
    model, _, returned = lab.loaded()
    text = f"{len(problems)} of the {len(paths)} {group} attributes are wrong after load_gpt2_weights:\n"
    text += wrong_lines(problems)
    if returned is not None and returned is not model and all(k == "unchanged" for k, _ in problems.values()):
        text += "\nload_gpt2_weights returned another model and left the one it was given unchanged: fill it in place."
    lab.report(
        sorted({f"weights:{kind}" for kind, _ in problems.values()}),
        text,
        f"{group}: the same mistakes as an earlier weight group",
    )


# ---------------------------------------------------------------- the loaded model computes GPT-2


def test_embeddings(lab: Lab) -> None:
    """token_embedding(ids) gives the rows of its weight; pos_embedding(T), with T an int, its first T rows."""
    lab.require_weights(["token_embedding.weight", "pos_embedding.weight"])
    model = lab.loaded()[0]
    ids = np.asarray(lab.data().inputs[2]["ids"], dtype=np.int64)
    tokens = lab.call("token_embedding(ids)", model.token_embedding, ids)
    if not (isinstance(tokens, np.ndarray) and np.array_equal(tokens, model.token_embedding.weight[ids])):
        pytest.fail(
            f"token_embedding(ids) for ids of shape {ids.shape} should be token_embedding.weight[ids], of "
            f"shape {(*ids.shape, lab.shape().d_model)}",
            pytrace=False,
        )
    T = ids.shape[1]
    first = None
    for arg in (T, np.arange(T)):  # an int, as in Lab 03; as the grader does, an index array when the int is refused
        try:
            positions = lab.code().call("pos_embedding(T)", model.pos_embedding, arg)
            break
        except StudentError as error:
            first = first or error
    else:
        lab.stop(first)
    want = model.pos_embedding.weight[:T]
    if not (
        isinstance(positions, np.ndarray)
        and positions.size == want.size
        and np.array_equal(positions.reshape(want.shape), want)
    ):
        pytest.fail(
            f"pos_embedding({T}) should be the first {T} rows of pos_embedding.weight, of shape {want.shape}",
            pytrace=False,
        )


@pytest.mark.parametrize("index", [0, 1, 2], ids=["1-token", "long", "batch"])
def test_logits(lab: Lab, index: int) -> None:
    """MILESTONE: your model's logits equal GPT-2's at every position, within 1e-5 of the largest logit."""
    lab.require_weights()
    item = lab.data().inputs[index]
    problem = lab.data().logits_problem(lab.logits(index), item)
    if problem:
        lab.report(["logits"], f"on the {item['label']} input ({item['text']!r}), {problem}", "the logits are wrong")
    if index == 1:
        ids = np.asarray(item["ids"], dtype=np.int64)
        again = np.asarray(lab.forward(lab.loaded()[0], ids))
        if not np.array_equal(again, np.asarray(lab.logits(index))):
            pytest.fail(
                "two forward passes on the same ids gave different logits: no dropout at inference "
                "(build with dropout=0.0, call with training=False)",
                pytrace=False,
            )


# ---------------------------------------------------------------- your comparison functions


@pytest.mark.parametrize("text_index", [0, 1, 2, 3], ids=["short", "symbols", "sentence", "1-token"])
def test_compare_outputs(lab: Lab, text_index: int) -> None:
    """compare_outputs returns (match, max_diff): the true max |difference| over all logits, and the verdict."""
    # Judged on the loaded model, or on an unloaded one while your loader does not work yet.
    model = lab.loaded_model_or_none()
    _check_compare(lab, _unloaded(lab) if model is None else model, lab.data().texts[text_index])


def test_compare_outputs_on_an_unloaded_model(lab: Lab) -> None:
    """On a model that still has GPTModel's random weights, compare_outputs reports the large difference, no match."""
    _check_compare(lab, _unloaded(lab), lab.data().texts[2])


def _unloaded(lab: Lab) -> object:
    return lab.get("unloaded", lambda: lab.build(lab.shape()))


def _check_compare(lab: Lab, model: object, text: str) -> None:
    import torch

    __tracebackhide__ = True
    fn = lab.fn("compare_outputs")
    hf_model, tokenizer = lab.hf()
    kwargs = {"atol": COURSE_ATOL} if accepts(fn, "atol") else {}
    result = lab.call("compare_outputs", fn, model, hf_model, tokenizer, text, **kwargs)
    if not (isinstance(result, tuple) and len(result) == 2):
        lab.report(
            ["compare:type"],
            f"compare_outputs returned {result!r:.80}, not a tuple (match, max_diff)",
            "compare_outputs returns no (match, max_diff)",
        )
    match, reported = result
    ids = np.asarray([tokenizer.encode(text, add_special_tokens=False)], dtype=np.int64)
    with torch.no_grad():
        theirs = hf_model(torch.from_numpy(ids)).logits.float().numpy()
    true = float(np.max(np.abs(np.asarray(lab.forward(model, ids), dtype=np.float32) - theirs)))
    noise = 5 * logits_tolerance(float(np.max(np.abs(theirs))))
    number = float(reported) if isinstance(reported, (int, float, np.floating)) else None
    if number is None or not math.isclose(number, true, rel_tol=1e-3, abs_tol=noise):
        lab.report(
            ["compare:number"],
            f"compare_outputs(..., {text!r}) reports max_diff={reported!r}; the largest "
            f"absolute difference over all logits is {true:.3g}",
            "compare_outputs reports a wrong max_diff",
        )
    atol = COURSE_ATOL if kwargs else 1e-5 * max(1.0, float(np.max(np.abs(theirs))))
    if (true <= 0.5 * atol and not match) or (true >= 2 * atol and match):
        lab.report(
            ["compare:verdict"],
            f"compare_outputs(..., {text!r}) says match={match!r} for max_diff={true:.3g} (tolerance {atol:g})",
            "compare_outputs gives a wrong verdict",
        )


def test_analyze_weight_differences(lab: Lab) -> None:
    """After a correct load, analyze_weight_differences reports zero for every weight."""
    lab.require_weights()
    fn = lab.fn("analyze_weight_differences")
    result = lab.call("analyze_weight_differences", fn, lab.loaded()[0], lab.hf()[0])
    if not isinstance(result, dict) or not result:
        pytest.fail(f"analyze_weight_differences returned {result!r:.80}; expected a non-empty dict", pytrace=False)
    bad = [
        f"{k}: {v!r:.60}"
        for k, v in result.items()
        if not (
            isinstance(v, dict) and _number(v.get("max_diff")) is not None and _number(v.get("mean_diff")) is not None
        )
    ]
    if bad:
        pytest.fail(
            "each value must be {'max_diff': number, 'mean_diff': number}; got " + "; ".join(bad[:3]), pytrace=False
        )
    nonzero = [f"{k} ({_number(v['max_diff']):.3g})" for k, v in result.items() if not _number(v["max_diff"]) <= 1e-6]
    if nonzero:
        pytest.fail("after a correct load every max_diff is 0, but: " + ", ".join(nonzero[:5]), pytrace=False)


def test_compare_intermediate_outputs(lab: Lab) -> None:
    """On the loaded model, compare_intermediate_outputs is near zero at every stage."""
    lab.require_logits()
    fn = lab.fn("compare_intermediate_outputs")
    item = lab.data().inputs[1]
    ids = np.asarray(item["ids"], dtype=np.int64)
    result = lab.call("compare_intermediate_outputs", fn, lab.loaded()[0], lab.hf()[0], ids)
    if not isinstance(result, dict) or not result or any(_number(v) is None for v in result.values()):
        pytest.fail(
            f"compare_intermediate_outputs returned {result!r:.100}; expected a dict of stage -> number", pytrace=False
        )
    limit = 1e-3 * item["activation_scale"]
    big = [f"{k} ({_number(v):.3g})" for k, v in result.items() if not _number(v) <= limit]
    if big:
        pytest.fail(
            f"the model matches GPT-2, so every stage should be near zero (<= {limit:.2g}), but: " + ", ".join(big[:5]),
            pytrace=False,
        )


def test_generate_text(lab: Lab) -> None:
    """Bonus (0 points): greedy generate_text continues the prompt as GPT-2 does."""
    lab.require_logits()
    fn = lab.fn("generate_text")
    spec = lab.data().generate
    model, tokenizer = lab.loaded()[0], lab.hf()[1]
    first = None
    for temperature in (0.0, 1e-6):  # as the grader: a tiny temperature when 0 raises
        try:
            text = lab.code().call(
                "generate_text",
                fn,
                model,
                tokenizer,
                spec["prompt"],
                max_length=spec["max_length"],
                temperature=temperature,
            )
            break
        except StudentError as error:
            first = first or error
    else:
        lab.stop(first)
    if text not in spec["accepted"]:
        pytest.fail(
            f"generate_text({spec['prompt']!r}, max_length={spec['max_length']}, temperature=0) returned "
            f"{text!r:.200}; greedy GPT-2 gives {spec['expected']!r}",
            pytrace=False,
        )


def _number(value: object) -> float | None:
    if isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1:
        return float(value.reshape(-1)[0])
    return None
