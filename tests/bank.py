"""A bank of small buggy submissions, one per mistake students really make.

Each bug is a few exact edits of the reference solution, so the bank stays small and
cannot rot: an edit whose text is no longer in the reference fails the bank's own
test. A bug that edits ``decoder.py`` ships it (the student's decoder); the others send
``pretrained.py`` alone, so the grader uses the reference decoder, as for most students.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conftest import ALL_PASS, expect

P, D = "pretrained.py", "decoder.py"
SAME = "        return w  # Conv1D is already (in, out): nothing to do"
SPLIT = "        return tuple(np.split(w, 3, axis=-1))  # [d, 3d] -> 3 x [d, d]; [3d] -> 3 x [d]"
LAYER = '        hf, ours = f"transformer.h.{i}", f"blocks.{i}"'
LOAD = "    hf_model = GPT2LMHeadModel.from_pretrained(model_name)"
LAYERS = (
    "    for hf_name, (target, transform) in get_weight_mapping(hf_model.config.n_layer).items():\n"
    "        if hf_name not in state:"
)
STORE = """            existing = get_attribute(your_model, path)
            if not isinstance(existing, np.ndarray):
                raise TypeError(f"{path} is a {type(existing).__name__}, not a NumPy array")
            if existing.shape != value.shape:
                raise ValueError(
                    f"{path} has shape {existing.shape} but {hf_name} gives {value.shape}; "
                    "build the model with the checkpoint's sizes"
                )
            existing[...] = value  # copy in place: every other reference (the tied head) sees it too"""
RETIE = """    head = your_model.lm_head.weight
    if head is not your_model.token_embedding.weight:  # an untied model still needs GPT-2's head
        head[...] = your_model.token_embedding.weight"""
# How most students store a weight: bind a new array to the attribute, no shape check; then re-tie the head.
REBIND = """            owner, _, name = path.rpartition(".")
            setattr(get_attribute(your_model, owner), name, np.asarray(value, dtype=np.float32))"""
RETIE_BIND = "    your_model.lm_head.weight = your_model.token_embedding.weight"
RAISE = '            raise KeyError(f"the checkpoint {model_name!r} has no parameter {hf_name!r}")\n'
MAX_DIFF = "    max_diff = float(np.max(np.abs(ours - theirs)))"
MATCH = "    return bool(max_diff <= atol), max_diff"
IDS = "    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)[None]  # [1, T]"
OURS = "    ours = np.asarray(your_model(ids, training=False), dtype=np.float32)  # [1, T, V]"
GELU = "    return 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x**3)))"
LN = "        return self.gamma * ((x - mean) / np.sqrt(var + self.eps)) + self.beta"
BLOCK = """        x = x + dropout(a, self.dropout_rate, training)
        return x + self.ffn(self.ln2(x), training)"""
BLOCK_POST_NORM = """        x = self.ln1(x + dropout(a, self.dropout_rate, training))
        return self.ln2(x + self.ffn(x, training))"""
BLOCK_PARALLEL = """        return x + dropout(a, self.dropout_rate, training) + self.ffn(self.ln2(x), training)"""
BLOCK_CALL = "            x = block(x, mask, training)"
SCALE = "        scores = (q @ np.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(self.d_k))  # [B, H, T, T]"
EMBED = "        x = self.token_embedding(ids) + self.pos_embedding(T)  # [B, T, d] + [T, d]"
SPLIT_HEADS = """        x = x.reshape(*x.shape[:-1], self.num_heads, self.d_k)  # [..., T, H, d_k]
        return np.swapaxes(x, -2, -3)  # [..., H, T, d_k]"""
COMBINE_HEADS = """        x = np.swapaxes(x, -2, -3)  # [..., T, H, d_k]
        return x.reshape(*x.shape[:-2], self.d_model)  # [..., T, d]"""
STUB_ERRORS = dict.fromkeys(ALL_PASS, "error")


@dataclass(frozen=True)
class Bug:
    """A mistake, how to make it, and the verdicts and feedback the grader must give."""

    name: str
    mistake: str
    edits: tuple[tuple[str, str, str], ...]
    expect: dict[str, str]
    feedback: dict[str, str] = field(default_factory=dict)  # tier -> text its detail must contain
    mistakes: tuple[str, ...] = ()  # diagnosis keys the report must carry
    limits: dict[str, float] = field(default_factory=dict)  # grading limits for this case

    @property
    def ships_decoder(self) -> bool:
        return any(file == D for file, _, _ in self.edits)


BANK: tuple[Bug, ...] = (
    # ---------------------------------------------------------------- the loader and the mapping
    Bug(
        "transposed_everything",
        "transposes every Conv1D weight, as if it were nn.Linear, storing without a check",
        ((P, SAME, SAME.replace("return w ", "return w.T ")), (P, STORE, REBIND), (P, RETIE, RETIE_BIND)),
        expect(
            weights="failed", mapping="failed", shapes="failed", embedding="error", logits="error", generate="error"
        ),
        {
            "mapping": "transpose of the right array",
            "shapes": "transpose of the right array",
            "embedding": "IndexError",
        },
    ),
    Bug(
        "transposed_c_proj",
        "transposes the square attention output projection only",
        (
            (
                P,
                'mapping[f"{hf}.attn.c_proj.weight"] = (f"{ours}.attn.W_O", same)',
                'mapping[f"{hf}.attn.c_proj.weight"] = (f"{ours}.attn.W_O", lambda w: w.T)',
            ),
        ),
        expect(weights="failed", mapping="failed", shapes="failed", logits="failed", generate="failed"),
        {
            "mapping": "blocks.0.attn.W_O holds the transpose",
            "shapes": "blocks.{0,1}.attn.W_O holds the transpose",
            "logits": "first leave GPT-2's at: layer 0 attention",
        },
        ("attn.W_O:transpose",),
    ),
    Bug(
        "qkv_permuted",
        "takes the c_attn thirds in the order K, Q, V",
        (
            (
                P,
                'qkv_w = (f"{ours}.attn.W_Q", f"{ours}.attn.W_K", f"{ours}.attn.W_V")',
                'qkv_w = (f"{ours}.attn.W_K", f"{ours}.attn.W_Q", f"{ours}.attn.W_V")',
            ),
        ),
        expect(weights="failed", mapping="failed", shapes="failed", logits="failed", generate="failed"),
        {
            "mapping": "holds the K part of c_attn instead of the Q part",
            "shapes": "the Q part of c_attn instead of the K part",
            "logits": "layer 0 attention",
        },
        ("attn.W_QKV:qkv_permuted",),
    ),
    Bug(
        "split_wrong_axis",
        "splits c_attn along the rows (axis 0) instead of the columns",
        ((P, SPLIT, SPLIT.replace("axis=-1", "axis=0")),),
        expect(weights="error", mapping="failed", shapes="error", embedding="error", logits="error", generate="error"),
        {
            "mapping": "has shape (4, 36), expected (12, 12)",
            "shapes": "array split does not result in an equal division",
        },
    ),
    Bug(
        "split_reshape",
        "splits c_attn with reshape(3, d, d), which cuts the rows, not the columns",
        (
            (
                P,
                SPLIT,
                "        return tuple(w.reshape(3, -1, w.shape[-1] // 3)) if w.ndim == 2 else "
                "tuple(np.split(w, 3, axis=-1))",
            ),
        ),
        expect(weights="failed", mapping="failed", shapes="failed", logits="failed", generate="failed"),
        {"mapping": "split along the wrong axis", "shapes": "split along the wrong axis"},
        ("attn.W_Q:wrong_axis_split",),
    ),
    Bug(
        "layernorm_swapped",
        "stores ln_1's weight in beta and its bias in gamma",
        (
            (
                P,
                'mapping[f"{hf}.ln_1.weight"] = (f"{ours}.ln1.gamma", same)',
                'mapping[f"{hf}.ln_1.weight"] = (f"{ours}.ln1.beta", same)',
            ),
            (
                P,
                'mapping[f"{hf}.ln_1.bias"] = (f"{ours}.ln1.beta", same)',
                'mapping[f"{hf}.ln_1.bias"] = (f"{ours}.ln1.gamma", same)',
            ),
        ),
        expect(weights="failed", mapping="failed", shapes="failed", logits="failed", generate="failed"),
        {"mapping": "gamma and beta are swapped", "shapes": "blocks.{0,1}.ln1.gamma holds", "logits": "layer 0 ln1"},
    ),
    Bug(
        "missing_biases",
        "loads the weights and forgets every bias",
        ((P, RAISE, RAISE + "        if hf_name.endswith('.bias'):\n            continue\n"),),
        expect(shapes="failed", logits="failed", generate="failed"),
        {"shapes": "is unchanged since GPTModel(...) created it: it was never loaded"},
    ),
    Bug(
        "key_typo",
        "spells a mapping key transformer.ln_f.biases",
        (
            (
                P,
                'mapping["transformer.ln_f.bias"] = ("ln_f.beta", same)',
                'mapping["transformer.ln_f.biases"] = ("ln_f.beta", same)',
            ),
            (P, "        if hf_name not in state:\n", "        if hf_name not in state:\n            continue\n"),
        ),
        expect(weights="error", mapping="failed", shapes="failed", logits="failed", generate="failed"),
        {"mapping": "transformer.ln_f.biases is a typo of transformer.ln_f.bias", "shapes": "ln_f.beta is unchanged"},
    ),
    Bug(
        "hardwired_12_layers",
        "loads with get_weight_mapping(12) whatever the checkpoint",
        ((P, LAYERS, LAYERS.replace("get_weight_mapping(hf_model.config.n_layer)", "get_weight_mapping(12)")),),
        expect(shapes="error", embedding="error", logits="error", generate="error"),
        {"shapes": "This checkpoint has 2 layers", "logits": "KeyError"},
    ),
    Bug(
        "hardwired_768",
        "splits c_attn at the fixed columns 768 and 1536, storing without a check",
        (
            (P, SPLIT, "        return w[..., :768], w[..., 768:1536], w[..., 1536:]"),
            (P, STORE, REBIND),
            (P, RETIE, RETIE_BIND),
        ),
        expect(weights="failed", mapping="failed", shapes="failed", logits="error", generate="error"),
        {"mapping": "not one third of it", "shapes": "not a fixed 768"},
    ),
    Bug(
        "ignores_model_name",
        "always loads 'gpt2' from the hub, ignoring model_name",
        ((P, LOAD, LOAD.replace("(model_name)", '("gpt2")')),),
        expect(shapes="error", embedding="error", logits="error", generate="error"),
        {"shapes": "load model_name, not a fixed 'gpt2'"},
    ),
    Bug(
        "float64_weights",
        "stores the weights as float64",
        ((P, STORE, REBIND.replace("float32", "float64")), (P, RETIE, RETIE_BIND)),
        expect(shapes="failed"),
        {"shapes": "has the right values but dtype float64"},
    ),
    Bug(
        "new_model_returned",
        "loads into a new model and returns it, leaving the one it was given unchanged",
        (
            (
                P,
                "    ### BEGIN SOLUTION\n    hf_model = GPT2LMHeadModel.from_pretrained(model_name)",
                "    ### BEGIN SOLUTION\n    hf_model = GPT2LMHeadModel.from_pretrained(model_name)\n    c = hf_model.config\n"
                "    your_model = GPTModel(c.vocab_size, c.n_embd, c.n_layer, c.n_head, 4 * c.n_embd, c.n_positions, 0.0)",
            ),
            (P, RETIE, RETIE + "\n    return your_model"),
        ),
        expect(shapes="failed", embedding="failed", logits="failed", generate="failed"),
        {"shapes": "left the model it was given unchanged"},
    ),
    Bug(
        "layers_reversed",
        "fills block i from HuggingFace layer num_layers - 1 - i",
        ((P, LAYER, LAYER.replace('f"blocks.{i}"', 'f"blocks.{num_layers - 1 - i}"')),),
        expect(weights="failed", mapping="failed", shapes="failed", logits="failed", generate="failed"),
        {
            "mapping": "blocks.0.* (16 attributes) hold layer 1's tensors",
            "shapes": "blocks.2.* (16 attributes) hold layer 0's tensors",
        },
    ),
    Bug(
        "dotted_setattr",
        "stores each weight with setattr(model, 'blocks.0.attn.W_Q', value)",
        ((P, STORE, "            setattr(your_model, path, np.asarray(value, dtype=np.float32))"),),
        expect(shapes="failed", embedding="failed", logits="failed", generate="failed"),
        {"shapes": "names contain dots"},
    ),
    Bug(
        "binds_views_correctly",
        "binds each array (np.split's strided views among them) and re-ties the head: right, judged by the "
        "exported bytes where the export holds an attribute and by its digest where not",
        ((P, STORE, REBIND), (P, RETIE, RETIE_BIND)),
        ALL_PASS,
    ),
    Bug(
        "torch_transforms",
        "keeps HuggingFace's tensors as torch tensors and writes transforms that only work on torch "
        "(.detach().numpy(), Tensor.split): the mapping tier retries each on a tensor, in the same request",
        (
            (
                P,
                "    state = {name: t.detach().to(torch.float32).cpu().numpy() for name, t in hf_model.state_dict().items()}\n"
                "    for hf_name, (target, transform) in get_weight_mapping(hf_model.config.n_layer).items():",
                "    state = {name: t.detach().to(torch.float32) for name, t in hf_model.state_dict().items()}\n"
                "    for hf_name, (target, transform) in get_weight_mapping(hf_model.config.n_layer).items():",
            ),
            (
                P,
                "    state = {name: t.detach().to(torch.float32).cpu().numpy() for name, t in hf_model.state_dict().items()}\n"
                "    expected: dict[str, np.ndarray] = {}",
                "    state = {name: t.detach().to(torch.float32) for name, t in hf_model.state_dict().items()}\n"
                "    expected: dict[str, np.ndarray] = {}",
            ),
            (
                P,
                '    expected["lm_head.weight"] = state["transformer.wte.weight"]',
                '    expected["lm_head.weight"] = state["transformer.wte.weight"].numpy()',
            ),
            (P, SAME, "        return w.detach().clone().numpy()  # a torch tensor in, an array out"),
            (P, SPLIT, "        return tuple(part.numpy() for part in w.split(w.shape[-1] // 3, dim=-1))"),
        ),
        ALL_PASS,
    ),
    Bug(
        "tie_broken",
        "rebinds token_embedding.weight and leaves the tied head on the old array (pitfall 1)",
        ((P, STORE, REBIND), (P, RETIE, "    pass")),
        expect(shapes="failed", logits="failed", generate="failed"),
        {"shapes": "pitfall 1", "logits": "head"},
    ),
    Bug(
        "debug_prints",
        "prints every array it loads, whole",
        (
            (
                P,
                RAISE,
                RAISE + "        np.set_printoptions(threshold=sys.maxsize)\n"
                "        for _ in range(50):\n            print(hf_name, state[hf_name])\n",
            ),
        ),
        expect(shapes="timeout", embedding="skipped", logits="skipped", generate="skipped"),
        {"shapes": "printing large arrays"},
        limits={"timeout": 4.0},
    ),
    # ---------------------------------------------------------------- compare_outputs
    Bug(
        "compare_always_true",
        "compare_outputs says True whatever the difference",
        ((P, MATCH, "    return True, max_diff"),),
        expect(compare="failed"),
        {"compare": "tolerance is too loose"},
    ),
    Bug(
        "compare_always_false",
        "compare_outputs says False whatever the difference",
        ((P, MATCH, "    return False, max_diff"),),
        expect(compare="failed"),
        {"compare": "your tolerance is too strict"},
    ),
    Bug(
        "compare_always_false_on_a_broken_decoder",
        "compare_outputs says False whatever the difference, and GPTModel has no causal mask: the harness must"
        " not judge compare on the student's broken class (a model off by that much makes False right)",
        ((D, BLOCK_CALL, "            x = block(x, None, training)"), (P, MATCH, "    return False, max_diff")),
        expect(logits="failed", generate="failed", compare="failed"),
        {"compare": "your tolerance is too strict", "logits": "attention is not causal"},
    ),
    Bug(
        "compare_lies",
        "compare_outputs reports a made-up small difference and True",
        ((P, MATCH, "    return True, 1e-7"),),
        expect(compare="failed"),
        {"compare": "the maximum absolute difference over all logits is"},
    ),
    Bug(
        "compare_loose",
        "compare_outputs accepts any max_diff below 1.0",
        ((P, MATCH, "    return bool(max_diff < 1.0), max_diff"),),
        expect(compare="failed"),
        {"compare": "tolerance is too loose"},
    ),
    Bug(
        "compare_allclose",
        "compare_outputs uses np.allclose with a fixed atol=1e-3",
        ((P, MATCH, "    return bool(np.allclose(ours, theirs, atol=1e-3)), max_diff"),),
        expect(compare="failed"),
        {"compare": "tolerance is too loose"},
    ),
    Bug(
        "compare_mean",
        "compare_outputs reports the mean absolute difference",
        ((P, MAX_DIFF, MAX_DIFF.replace("np.max", "np.mean")),),
        expect(compare="failed"),
        {"compare": "your number is the mean absolute difference"},
    ),
    Bug(
        "compare_last_position",
        "compare_outputs compares the last position only",
        ((P, MAX_DIFF, MAX_DIFF.replace("ours - theirs", "ours[..., -1, :] - theirs[..., -1, :]")),),
        expect(compare="failed"),
        {"compare": "the maximum over the last position only"},
    ),
    Bug(
        "compare_probabilities",
        "compare_outputs compares softmax probabilities",
        (
            (
                P,
                MAX_DIFF,
                "    p, q = (np.exp(a - a.max(-1, keepdims=True)) for a in (ours.astype(np.float64), theirs))\n"
                "    max_diff = float(np.max(np.abs(p / p.sum(-1, keepdims=True) - q / q.sum(-1, keepdims=True))))",
            ),
        ),
        expect(compare="failed"),
        {"compare": "a difference of softmax probabilities, not of logits"},
    ),
    Bug(
        "compare_prepends_bos",
        "compare_outputs prepends <|endoftext|> to the tokens",
        (
            (
                P,
                IDS,
                IDS.replace(
                    "tokenizer.encode(text, add_special_tokens=False)",
                    "[tokenizer.eos_token_id, *tokenizer.encode(text)]",
                ),
            ),
        ),
        expect(compare="failed"),
        {"compare": "you compared different token sequences"},
    ),
    Bug(
        "compare_reloads",
        "compare_outputs reloads the weights into the model 'to be sure'",
        ((P, OURS, "    load_gpt2_weights(your_model, hf_model.name_or_path)\n" + OURS),),
        expect(compare="failed"),
        {"compare": "it changed the model it was asked to judge"},
    ),
    # ---------------------------------------------------------------- the decoder (a decoder.py of their own)
    Bug(
        "erf_gelu",
        "uses the exact erf GELU instead of GPT-2's tanh approximation",
        (
            (
                D,
                GELU,
                "    erf = np.vectorize(math.erf, otypes=[np.float32])\n"
                "    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))",
            ),
        ),
        expect(logits="failed"),
        {"logits": "exact (erf) GELU"},
        ("erf_gelu",),
    ),
    Bug(
        "post_norm_block",
        "normalises the residual stream after each branch (the original Transformer's post-norm block)",
        ((D, BLOCK, BLOCK_POST_NORM),),
        expect(logits="failed", generate="failed"),
        {"logits": "combined differently from GPT-2's pre-norm block"},
        ("block_wiring",),
    ),
    Bug(
        "parallel_block",
        "adds attention and the feed-forward side by side, both on the block's input",
        ((D, BLOCK, BLOCK_PARALLEL),),
        expect(logits="failed", generate="failed"),
        {"logits": "combined differently from GPT-2's pre-norm block"},
        ("block_wiring",),
    ),
    Bug(
        "eps_outside_sqrt",
        "LayerNorm divides by sqrt(var) + eps",
        ((D, LN, LN.replace("np.sqrt(var + self.eps)", "(np.sqrt(var) + self.eps)")),),
        expect(logits="failed"),
        {"logits": "eps outside the square root"},
        ("eps_outside_sqrt",),
    ),
    Bug(
        "unbiased_layernorm",
        "LayerNorm uses the unbiased variance",
        (
            (
                D,
                "        var = x.var(axis=-1, keepdims=True)  # biased",
                "        var = x.var(axis=-1, keepdims=True, ddof=1)  # biased",
            ),
        ),
        expect(logits="failed", generate="failed"),  # large enough to change the greedy continuation
        {"logits": "unbiased variance"},
        ("unbiased_layernorm",),
    ),
    Bug(
        "softmax_over_queries",
        "normalises attention over the queries",
        ((D, "        weights = softmax(scores, axis=-1)", "        weights = softmax(scores, axis=-2)"),),
        expect(logits="failed", generate="failed"),
        {"logits": "wrong axis"},
        ("softmax_over_queries",),
    ),
    Bug(
        "no_causal_mask",
        "lets every position attend to the future",
        ((D, BLOCK_CALL, "            x = block(x, None, training)"),),
        expect(logits="failed", generate="failed"),
        {"logits": "attention is not causal"},
        ("no_causal_mask",),
    ),
    Bug(
        "scale_sqrt_d_model",
        "scales attention scores by 1/sqrt(d_model)",
        ((D, SCALE, SCALE.replace("math.sqrt(self.d_k)", "math.sqrt(self.d_model)")),),
        expect(logits="failed", generate="failed"),
        {"logits": "divided by sqrt(d_model)"},
        ("scale_sqrt_d_model",),
    ),
    Bug(
        "head_split_reshape",
        "splits heads with a plain reshape, without moving the head axis",
        (
            (D, SPLIT_HEADS, "        return x.reshape(*x.shape[:-2], self.num_heads, x.shape[-2], self.d_k)"),
            (D, COMBINE_HEADS, "        return x.reshape(*x.shape[:-3], x.shape[-2], self.d_model)"),
        ),
        expect(logits="failed", generate="failed"),
        {"logits": "plain reshape"},
        ("head_split_reshape",),
    ),
    Bug(
        "position_offset",
        "numbers positions from 1",
        ((D, EMBED, EMBED.replace("self.pos_embedding(T)", "self.pos_embedding(np.arange(1, T + 1))")),),
        expect(logits="failed", generate="failed"),
        {"logits": "positions start at 1"},
        ("position_offset",),
    ),
    Bug(
        "positions_capped",
        "reuses its last position row past 20 tokens (a position table sized for a shorter context)",
        ((D, EMBED, EMBED.replace("self.pos_embedding(T)", "self.pos_embedding(T)[np.minimum(np.arange(T), 19)]")),),
        expect(logits="failed"),
        {"logits": "the first sub-step that computes differently from GPT-2 on the input it received is embedding"},
    ),
    Bug(
        "untied_head",
        "projects to the vocabulary with a separate matrix its loader never fills",
        (
            (D, "        tied = self.token_embedding.weight if tie_weights else None", "        tied = None"),
            (P, RETIE, "    pass"),
        ),
        expect(shapes="failed", logits="failed", generate="failed"),
        {"logits": "head is tied"},
        ("untied_head",),
    ),
    Bug(
        "dropout_always_on",
        "applies dropout whatever training says",
        ((D, "        x = dropout(x, self.dropout_rate, training)", "        x = dropout(x, 0.1, True)"),),
        expect(logits="failed", generate="failed"),
        {"logits": "it is random (dropout active?"},
        ("random_forward",),
    ),
    Bug(
        "torch_in_forward",
        "keeps the HuggingFace model and runs it inside forward",
        (
            (P, RETIE, RETIE + "\n    your_model.hf = hf_model"),
            (
                D,
                "        ids = np.asarray(token_ids)\n",
                "        if hasattr(self, 'hf'):\n            import torch\n\n"
                "            with torch.no_grad():\n"
                "                return self.hf(torch.as_tensor(np.atleast_2d(token_ids))).logits.numpy()\n"
                "        ids = np.asarray(token_ids)\n",
            ),
        ),
        expect(embedding="error", logits="error", generate="error"),
        {"embedding": "holds torch tensors", "logits": "holds torch tensors"},
    ),
    # ---------------------------------------------------------------- imports
    Bug(
        "imports_reference",
        "imports the grader's reference solution",
        ((P, "import numpy as np\n", "import numpy as np\nfrom reference.pretrained import *  # noqa\n"),),
        STUB_ERRORS,
        {"mapping": "No module named 'reference'"},
    ),
    Bug(
        "missing_dependency",
        "imports a package the grading environment does not have",
        ((P, "import numpy as np\n", "import numpy as np\nimport tensorflow  # noqa\n"),),
        STUB_ERRORS,
        {"mapping": "No module named 'tensorflow'"},
    ),
)
