"""A bank of small buggy submissions, one per mistake students really make.

Each bug is a few exact edits of the reference solution, so the bank stays
small and cannot rot: an edit whose text is no longer in the reference fails
the bank's own test. A bug that edits ``decoder.py`` ships it (the student's
decoder); the others send ``pretrained.py`` alone, so the grader uses the
reference decoder, as for most students.
"""

from __future__ import annotations

from dataclasses import dataclass, field

P, D = "pretrained.py", "decoder.py"
ALL_PASS = {"mapping": "passed", "shapes": "passed", "embedding": "passed", "logits": "passed", "compare": "passed"}
# Without the reference loader's own shape check, a wrong shape is stored silently, as in most student code.
NO_SHAPE_CHECK = (P, "            if np.shape(old) != np.shape(array):", "            if False:")
SPLIT = "        q, k, v = np.split(w, 3, axis=-1)  # [d, 3d] -> 3 x [d, d]; [3d] -> 3 x [d]"
LOAD = "    hf_model = GPT2LMHeadModel.from_pretrained(model_name)"
STORE = "            set_attribute(your_model, path, np.array(array, dtype=np.float32))"
MAX_DIFF = "    max_diff = float(np.max(np.abs(ours - theirs)))"
GELU = "    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))"


@dataclass(frozen=True)
class Bug:
    """A mistake, how to make it, and the verdicts and feedback the grader must give."""

    name: str
    mistake: str
    edits: tuple[tuple[str, str, str], ...]
    expect: dict[str, str]
    feedback: dict[str, str] = field(default_factory=dict)  # tier -> text its detail must contain
    mistakes: tuple[str, ...] = ()  # keys the logits tier must recognise

    @property
    def ships_decoder(self) -> bool:
        return any(file == D for file, _, _ in self.edits)


def expect(**changes: str) -> dict[str, str]:
    return {**ALL_PASS, **changes}


BANK: tuple[Bug, ...] = (
    Bug("transposed_everything", "transposes every Conv1D weight, as if it were nn.Linear",
        ((P, "        return w  # Conv1D", "        return w.T  # Conv1D"), NO_SHAPE_CHECK),
        expect(mapping="failed", shapes="failed", embedding="error", logits="error"),
        {"mapping": "transpose of the right array", "shapes": "transpose of the right array",
         "embedding": "IndexError"}),
    Bug("transposed_c_proj", "transposes the square attention output projection only",
        ((P, 'f"{hf}.attn.c_proj.weight": (f"{ours}.attn.W_O", same),',
          'f"{hf}.attn.c_proj.weight": (f"{ours}.attn.W_O", lambda w: w.T),'),),
        expect(mapping="failed", shapes="failed", logits="failed"),
        {"mapping": "blocks.0.attn.W_O holds the transpose", "shapes": "blocks.{0,1}.attn.W_O holds the transpose",
         "logits": "layer 0 attention"}),
    Bug("qkv_permuted", "takes the c_attn thirds in the order K, Q, V",
        ((P, SPLIT, SPLIT.replace("q, k, v =", "k, q, v =")),),
        expect(mapping="failed", shapes="failed", logits="failed"),
        {"mapping": "holds the K part of c_attn instead of the Q part", "shapes": "the Q part of c_attn instead of the K part",
         "logits": "layer 0 attention"}),
    Bug("split_wrong_axis", "splits c_attn along the rows (axis 0) instead of the columns",
        ((P, SPLIT, SPLIT.replace("axis=-1", "axis=0")), NO_SHAPE_CHECK),
        expect(mapping="failed", shapes="error", embedding="error", logits="error"),
        {"mapping": "has shape (4, 36), expected (12, 12)", "shapes": "array split does not result in an equal division"}),
    Bug("layernorm_swapped", "stores ln_1's weight in beta and its bias in gamma",
        ((P, 'f"{hf}.ln_1.weight": (f"{ours}.ln1.gamma", same),', 'f"{hf}.ln_1.weight": (f"{ours}.ln1.beta", same),'),
         (P, 'f"{hf}.ln_1.bias": (f"{ours}.ln1.beta", same),', 'f"{hf}.ln_1.bias": (f"{ours}.ln1.gamma", same),')),
        expect(mapping="failed", shapes="failed", logits="failed"),
        {"mapping": "gamma and beta are swapped", "shapes": "blocks.{0,1}.ln1.gamma holds",
         "logits": "layer 0 ln1"}),
    Bug("missing_biases", "loads the weights and forgets every bias",
        ((P, "        paths = (target,) if isinstance(target, str) else target",
          "        if hf_name.endswith('.bias'):\n            continue\n"
          "        paths = (target,) if isinstance(target, str) else target"),),
        expect(shapes="failed", logits="failed"),
        {"shapes": "is unchanged since GPTModel(...) created it: it was never loaded"}),
    Bug("hardwired_12_layers", "loads with get_weight_mapping(12) whatever the checkpoint",
        ((P, "get_weight_mapping(hf_model.config.n_layer)", "get_weight_mapping(12)"),),
        expect(shapes="error", embedding="error", logits="error"),
        {"shapes": "This checkpoint has 2 layers", "logits": "KeyError"}),
    Bug("hardwired_768", "splits c_attn at the fixed columns 768 and 1536",
        ((P, SPLIT, "        q, k, v = w[..., :768], w[..., 768:1536], w[..., 1536:]"), NO_SHAPE_CHECK),
        expect(mapping="failed", shapes="failed", logits="error"),
        {"mapping": "not one third of it", "shapes": "not a fixed 768"}),
    Bug("ignores_model_name", "always loads 'gpt2' from the hub, ignoring model_name",
        ((P, LOAD, LOAD.replace("(model_name)", '("gpt2")')),),
        expect(shapes="error", embedding="error", logits="error"),
        {"shapes": "load model_name, not a fixed 'gpt2'"}),
    Bug("float64_weights", "stores the weights as float64",
        ((P, STORE, STORE.replace("float32", "float64")),),
        expect(shapes="failed"),
        {"shapes": "has the right values but dtype float64"}),
    Bug("returns_none", "load_gpt2_weights forgets to return the model",
        ((P, "            set_attribute(your_model, path, np.array(array, dtype=np.float32))\n    return your_model",
          "            set_attribute(your_model, path, np.array(array, dtype=np.float32))\n    return None"),),
        expect(shapes="failed"),
        {"shapes": "load_gpt2_weights returned NoneType; it must return the model"}),
    Bug("layers_reversed", "fills block i from HuggingFace layer num_layers - 1 - i",
        ((P, 'hf, ours = f"transformer.h.{i}", f"blocks.{i}"',
          'hf, ours = f"transformer.h.{i}", f"blocks.{num_layers - 1 - i}"'),),
        expect(mapping="failed", shapes="failed", logits="failed"),
        {"mapping": "blocks.0.* (16 attributes) hold layer 1's tensors", "shapes": "blocks.2.* (16 attributes) hold layer 0's tensors"}),
    Bug("compare_always_true", "compare_outputs says True whatever the difference",
        ((P, "    return max_diff <= logits_tolerance(theirs), max_diff", "    return True, max_diff"),),
        expect(compare="failed"),
        {"compare": "but the logits do not match"}),
    Bug("compare_mean", "compare_outputs reports the mean absolute difference",
        ((P, MAX_DIFF, MAX_DIFF.replace("np.max", "np.mean")),),
        expect(compare="failed"),
        {"compare": "your number is the mean absolute difference"}),
    Bug("compare_last_position", "compare_outputs compares the last position only",
        ((P, MAX_DIFF, MAX_DIFF.replace("ours - theirs", "ours[-1] - theirs[-1]")),),
        expect(compare="failed"),
        {"compare": "the maximum over the last position only"}),
    Bug("erf_gelu", "uses the exact erf GELU instead of GPT-2's tanh approximation",
        ((D, GELU, "    erf = np.vectorize(math.erf, otypes=[np.float32])\n"
                   "    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))"),),
        expect(logits="failed"),
        {"logits": "exact (erf) GELU"}, ("erf_gelu",)),
    Bug("no_causal_mask", "lets every position attend to the future",
        ((D, "        scores = np.where(future, -np.inf, scores)", "        pass"),),
        expect(logits="failed", compare="passed"),
        {"logits": "attention is not causal"}, ("no_causal_mask",)),
    Bug("scale_sqrt_d_model", "scales attention scores by 1/sqrt(d_model)",
        ((D, "/ math.sqrt(d // self.num_heads)", "/ math.sqrt(d)"),),
        expect(logits="failed"),
        {"logits": "divided by sqrt(d_model)"}, ("scale_sqrt_d_model",)),
    Bug("head_split_reshape", "splits heads with a plain reshape, without moving the head axis",
        ((D, "        x = x.reshape(*batch, T, self.num_heads, d // self.num_heads)  # [..., T, H, dh]\n"
             "        return np.swapaxes(x, -2, -3)  # [..., H, T, dh]",
          "        return x.reshape(*batch, self.num_heads, T, d // self.num_heads)"),
         (D, "        out = np.swapaxes(out, -2, -3).reshape(*batch, T, d)", "        out = out.reshape(*batch, T, d)")),
        expect(logits="failed"),
        {"logits": "plain reshape"}, ("head_split_reshape",)),
    Bug("untied_head", "projects to the vocabulary with a separate, never loaded matrix",
        ((D, "        self.ln_f = LayerNorm(d_model, eps)",
             "        self.ln_f = LayerNorm(d_model, eps)\n        self.lm_head = _normal((d_model, vocab_size), rng)"),
         (D, "        return x @ self.token_embedding.weight.T", "        return x @ self.lm_head")),
        expect(logits="failed"),
        {"logits": "output head is tied"}, ("untied_head",)),
    Bug("position_offset", "numbers positions from 1",
        ((D, "self.pos_embedding(np.arange(T))", "self.pos_embedding(np.arange(1, T + 1))"),),
        expect(logits="failed"),
        {"logits": "positions start at 1"}, ("position_offset",)),
    Bug("torch_in_forward", "keeps the HuggingFace model and runs it inside forward",
        ((P, "    return your_model\n    ### END SOLUTION", "    your_model.hf = hf_model\n    return your_model\n    ### END SOLUTION"),
         (D, "        ids = np.asarray(ids)\n",
             "        if hasattr(self, 'hf'):\n            import torch\n\n"
             "            with torch.no_grad():\n"
             "                return self.hf(torch.as_tensor(np.atleast_2d(ids))).logits.numpy().reshape(*np.shape(ids), -1)\n"
             "        ids = np.asarray(ids)\n")),
        expect(logits="failed"),
        {"logits": "the forward pass called torch"}),
    Bug("imports_reference", "imports the grader's reference solution",
        ((P, "from transformers import GPT2LMHeadModel", "from transformers import GPT2LMHeadModel\nfrom reference.pretrained import *  # noqa"),),
        {tier: "error" for tier in ALL_PASS},
        {"mapping": "part of the grader and cannot be imported"}),
    Bug("missing_dependency", "imports a package the grading environment does not have",
        ((P, "import numpy as np\n", "import numpy as np\nimport tensorflow  # noqa\n"),),
        {tier: "error" for tier in ALL_PASS},
        {"mapping": "it imports 'tensorflow', which is not installed"}),
)  # fmt: skip
