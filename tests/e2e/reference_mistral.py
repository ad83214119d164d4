#!/usr/bin/python3
"""An independent float64 numpy forward pass of Hugging Face's MistralForCausalLM
(transformers' modeling_mistral.py), to check `df11 generate` against: written apart from the
C++ model (harness/e2e), from HF's definition, so that a shared misreading is unlikely.

  reference_mistral.py make OUT [--seed S] [--hidden N] [--heads N] [--kv-heads N] [--head-dim N]
                                [--inter N] [--vocab N] [--layers N] [--eps X] [--theta X] [--tie]
      writes a BF16 checkpoint (config.json, model.safetensors) of random weights with these shapes
      (config keys as HF writes them; --head-dim given only when set, as HF's default is
      hidden / heads);
  reference_mistral.py compare MODEL_DIR LOGITS.jsonl --prompt-ids 1,2,3 [--batch B] [--tol X]
      reads `df11 generate --dump-logits` output (row b's prompt is the ids + b modulo the vocabulary,
      as generate makes a batch), feeds the generated tokens (each step's argmax) to the reference
      in one causal pass, and checks every step's logits: |C++ - reference| <= tol * max(1, the
      step's largest |logit|), and the C++ token is the reference's argmax wherever the reference's
      two best logits are more than 10 tol apart. Exit 1 on any failure.

The model: RMSNorm (x / sqrt(mean(x^2) + eps) * w), rotary embeddings on (q, k) with
inv_freq = theta^(-2i/D) and HF's rotate_half pairing (i, i + D/2), grouped-query attention
(query head j reads key/value head j // (heads / kv_heads)), causal softmax of q k^T / sqrt(D),
o_proj, residual; SwiGLU MLP down(silu(gate(x)) * up(x)), residual; final norm; lm_head (or the
embedding, tied). Runs under Debian's /usr/bin/python3 (python3-numpy).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np


# ---- checkpoints ---------------------------------------------------------------------------

def to_bf16_bits(x):
    """float -> BF16 bit patterns, round to nearest even (finite values)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        if e["dtype"] != "BF16":
            sys.exit(f"{path}: tensor {name} is {e['dtype']}, expected BF16")
        a, b = e["data_offsets"]
        bits = np.frombuffer(data[a:b], dtype="<u2").astype(np.uint32) << 16
        out[name] = bits.view(np.float32).astype(np.float64).reshape(e["shape"])
    return out


def make(args):
    rng = np.random.default_rng(args.seed)
    h, heads, kv = args.hidden, args.heads, args.kv_heads
    d = args.head_dim or h // heads
    w = {"model.embed_tokens.weight": rng.normal(0, 0.5, (args.vocab, h)),
         "model.norm.weight": 1 + rng.normal(0, 0.2, h)}
    if not args.tie:
        w["lm_head.weight"] = rng.normal(0, 0.08, (args.vocab, h))
    for layer in range(args.layers):
        p = f"model.layers.{layer}."
        w[p + "input_layernorm.weight"] = 1 + rng.normal(0, 0.2, h)
        w[p + "post_attention_layernorm.weight"] = 1 + rng.normal(0, 0.2, h)
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, 0.1, (heads * d, h))
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, 0.1, (kv * d, h))
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, 0.1, (kv * d, h))
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, 0.1, (h, heads * d))
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, 0.1, (args.inter, h))
        w[p + "mlp.up_proj.weight"] = rng.normal(0, 0.1, (args.inter, h))
        w[p + "mlp.down_proj.weight"] = rng.normal(0, 0.1, (h, args.inter))
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(w):
        blob = to_bf16_bits(w[name]).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(w[name].shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    config = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_act": "silu",
              "hidden_size": h, "intermediate_size": args.inter, "num_attention_heads": heads,
              "num_key_value_heads": kv, "num_hidden_layers": args.layers, "rms_norm_eps": args.eps,
              "rope_theta": args.theta, "tie_word_embeddings": args.tie, "vocab_size": args.vocab,
              "max_position_embeddings": 4096, "sliding_window": None, "torch_dtype": "bfloat16",
              "bos_token_id": 1, "eos_token_id": 2}
    if args.head_dim:
        config["head_dim"] = args.head_dim
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


# ---- the forward pass ------------------------------------------------------------------------

class Mistral:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.w = {}
        for name in sorted(os.listdir(model_dir)):
            if name.endswith(".safetensors"):
                self.w.update(read_safetensors(os.path.join(model_dir, name)))
        self.heads = c["num_attention_heads"]
        # transformers' MistralConfig: 8 when the key is missing, one per query head when null.
        default_kv = 8 if c.get("model_type") == "mistral" and "num_key_value_heads" not in c else self.heads
        self.kv_heads = c.get("num_key_value_heads") or default_kv
        self.d = c.get("head_dim") or c["hidden_size"] // self.heads
        self.layers = c["num_hidden_layers"]
        self.eps = c["rms_norm_eps"]
        self.theta = c.get("rope_theta", 10000.0)
        self.vocab = c["vocab_size"]
        tied = c.get("tie_word_embeddings", False)
        self.head = self.w["model.embed_tokens.weight" if tied else "lm_head.weight"]

    def norm(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def rope(self, x, positions):  # x: (T, heads, D)
        half = self.d // 2
        inv_freq = self.theta ** (-np.arange(0, self.d, 2, dtype=np.float64) / self.d)
        angle = positions[:, None] * inv_freq[None, :]  # (T, D/2)
        cos = np.concatenate([np.cos(angle)] * 2, axis=-1)[:, None, :]
        sin = np.concatenate([np.sin(angle)] * 2, axis=-1)[:, None, :]
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        return x * cos + rotated * sin

    def logits(self, ids):
        """Logits at every position of one sequence: (T, vocab)."""
        t = len(ids)
        pos = np.arange(t, dtype=np.float64)
        h = self.w["model.embed_tokens.weight"][np.asarray(ids)]
        causal = np.triu(np.ones((t, t), dtype=bool), 1)
        group = self.heads // self.kv_heads
        for layer in range(self.layers):
            p = f"model.layers.{layer}."
            x = self.norm(h, self.w[p + "input_layernorm.weight"])
            q = (x @ self.w[p + "self_attn.q_proj.weight"].T).reshape(t, self.heads, self.d)
            k = (x @ self.w[p + "self_attn.k_proj.weight"].T).reshape(t, self.kv_heads, self.d)
            v = (x @ self.w[p + "self_attn.v_proj.weight"].T).reshape(t, self.kv_heads, self.d)
            q, k = self.rope(q, pos), self.rope(k, pos)
            k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
            scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(self.d)
            scores = np.where(causal[None], -np.inf, scores)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            attn = scores / scores.sum(axis=-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", attn, v).reshape(t, self.heads * self.d)
            h = h + o @ self.w[p + "self_attn.o_proj.weight"].T
            x = self.norm(h, self.w[p + "post_attention_layernorm.weight"])
            gate = x @ self.w[p + "mlp.gate_proj.weight"].T
            up = x @ self.w[p + "mlp.up_proj.weight"].T
            h = h + (gate / (1 + np.exp(-gate)) * up) @ self.w[p + "mlp.down_proj.weight"].T
        return self.norm(h, self.w["model.norm.weight"]) @ self.head.T


def compare(args):
    model = Mistral(args.model_dir)
    prompt = [int(t) for t in args.prompt_ids.split(",")]
    steps = []
    with open(args.logits) as f:
        for line in f:
            steps.append(json.loads(line))
    if not steps or [s["step"] for s in steps] != list(range(len(steps))):
        sys.exit(f"{args.logits}: expected steps 0, 1, ... in order")
    failures, worst, checked_tokens = 0, 0.0, 0
    for row in range(args.batch):
        got = np.array([s["rows"][row] for s in steps], dtype=np.float64)  # (steps, vocab)
        tokens = [int(np.argmax(g)) for g in got]
        ids = [(t + row) % model.vocab for t in prompt] + tokens[:-1]
        ref = model.logits(ids)[len(prompt) - 1:]  # the positions whose logits each step gave
        for s in range(len(steps)):
            scale = max(1.0, float(np.abs(ref[s]).max()))
            diff = float(np.abs(got[s] - ref[s]).max())
            worst = max(worst, diff / scale)
            if diff > args.tol * scale:
                print(f"FAIL: row {row} step {s}: max |C++ - reference| {diff:.3g} (scale {scale:.3g})")
                failures += 1
            order = np.argsort(-ref[s], kind="stable")
            if ref[s][order[0]] - ref[s][order[1]] > 10 * args.tol * scale:
                checked_tokens += 1
                if tokens[s] != int(order[0]):
                    print(f"FAIL: row {row} step {s}: token {tokens[s]}, reference {int(order[0])}")
                    failures += 1
    print(f"{args.model_dir}: {args.batch} rows x {len(steps)} steps, {model.vocab} logits each: largest "
          f"|C++ - reference| {worst:.2e} of the scale (tolerance {args.tol:g}); {checked_tokens} tokens "
          f"checked against the reference's argmax")
    sys.exit(1 if failures else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--hidden", type=int, default=128)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--kv-heads", type=int, default=1)
    m.add_argument("--head-dim", type=int, default=0)
    m.add_argument("--inter", type=int, default=200)
    m.add_argument("--vocab", type=int, default=500)
    m.add_argument("--layers", type=int, default=2)
    m.add_argument("--eps", type=float, default=1e-5)
    m.add_argument("--theta", type=float, default=10000.0)
    m.add_argument("--tie", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("model_dir")
    c.add_argument("logits")
    c.add_argument("--prompt-ids", required=True)
    c.add_argument("--batch", type=int, default=1)
    c.add_argument("--tol", type=float, default=2e-4)
    args = ap.parse_args()
    make(args) if args.cmd == "make" else compare(args)


if __name__ == "__main__":
    main()
