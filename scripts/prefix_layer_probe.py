#!/usr/bin/env python3
"""Probe (issue 25): would a Hydra++ prefix-attention layer make head 0 more accurate?

Trains, on a `medusa train --data-cache` file (rows of final-normed hidden state h_t, next token
x[t+1] and targets x[t+2..]), a predictor of x[t+2] from (h_t, embedding of x[t+1]) over a
draft vocabulary of the 8192 most frequent targets (tied SmolLM2 embedding as the classifier):
  mlp:  a projection of [h_t, e(x[t+1])] and two ResBlocks (what a Hydra head 0 sees);
  attn: the same projection for every position of the answer, then one causal decoder layer
        (attention over all earlier positions, RoPE, SwiGLU): EAGLE's and Hydra++'s extra layer.
Both train the same steps from the same seed and are scored on the same 120 held-out answers
(top-1 over targets inside the draft vocabulary). Not part of the product or its tests:

  pip install jax optax gguf safetensors
  python3 scripts/prefix_layer_probe.py --data DISTILL.safetensors --model attn --steps 600
"""
import argparse, sys, time
import numpy as np
import jax, jax.numpy as jnp, optax
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors import safe_open

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--gguf", default="models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
ap.add_argument("--model", choices=["mlp", "attn"], required=True)
ap.add_argument("--steps", type=int, default=600)
args = ap.parse_args()
MODEL, STEPS = args.model, args.steps
SEQ = 256
BS = 8                          # answers per batch
V = 8192

f = safe_open(args.data, framework='numpy')
hidden = f.get_tensor('hidden')
targets = f.get_tensor('targets').astype(np.int32)
nxt = f.get_tensor('next').astype(np.int32)
embd = [t for t in GGUFReader(args.gguf).tensors if t.name == 'token_embd.weight'][0]
E = dequantize(embd.data, embd.tensor_type).astype(np.float32)
rows = hidden.shape[0]
print('rows', rows, flush=True)

# Sequences: row r+1 continues r when next[r+1] == targets[r,0] and targets agree.
cont = (nxt[1:] == targets[:-1, 0]) & (targets[1:, 0] == targets[:-1, 1]) & (targets[:-1, 1] >= 0)
starts = np.concatenate([[0], np.nonzero(~cont)[0] + 1])
ends = np.concatenate([starts[1:], [rows]])
seqs = []
for s, e in zip(starts, ends):
    for a in range(s, e, SEQ):
        seqs.append((a, min(e, a + SEQ)))
print('answers', len(starts), 'chunks', len(seqs), flush=True)
rng = np.random.default_rng(0)
perm = rng.permutation(len(starts))
held_answers = set(perm[:120].tolist())
ans_of = np.searchsorted(starts, [a for a, _ in seqs], side='right') - 1
train = [c for c, a in zip(seqs, ans_of) if a not in held_answers]
held = [c for c, a in zip(seqs, ans_of) if a in held_answers]

t0 = targets[:, 0]
counts = np.bincount(t0[t0 >= 0], minlength=E.shape[0])
vocab = np.argsort(-counts)[:V]
remap = np.full(E.shape[0], -1, np.int32); remap[vocab] = np.arange(V)
Ed = jnp.asarray(E[vocab])
Eall = jnp.asarray(E)
print('draft coverage', counts[vocab].sum() / counts.sum(), flush=True)

def batch(chunks):
    h = np.zeros((len(chunks), SEQ, 576), np.float32)
    tok = np.zeros((len(chunks), SEQ), np.int32)
    y = np.full((len(chunks), SEQ), -1, np.int32)
    hn = np.zeros((len(chunks), SEQ, 576), np.float32)
    m = np.zeros((len(chunks), SEQ), np.float32)
    for i, (a, b) in enumerate(chunks):
        n = b - a
        h[i, :n] = hidden[a:b]; tok[i, :n] = nxt[a:b]; y[i, :n] = remap[np.maximum(targets[a:b, 0], 0)] * (targets[a:b, 0] >= 0) + (-1) * (targets[a:b, 0] < 0)
        hn[i, :n - 1] = hidden[a + 1:b]; m[i, :n - 1] = 1
    return h, tok, y, hn, m

D, H, HD, F = 576, 9, 64, 1536
def init(key):
    k = jax.random.split(key, 10)
    n = lambda kk, s, sc: jax.random.normal(kk, s) * sc
    p = {'fc': n(k[0], (2 * D, D), 0.02), 'w1': n(k[1], (D, D), 0.02), 'b1': jnp.zeros(D),
         'w2': n(k[2], (D, D), 0.02), 'b2': jnp.zeros(D), 'norm_out': jnp.ones(D)}
    if MODEL == 'attn':
        p.update({'n1': jnp.ones(D), 'qkv': n(k[3], (D, 3 * D), 0.02), 'o': n(k[4], (D, D), 0.02),
                  'n2': jnp.ones(D), 'gate': n(k[5], (D, F), 0.02), 'up': n(k[6], (D, F), 0.02), 'down': n(k[7], (F, D), 0.02)})
    return p

def rms(x, w): return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-5) * w

def rope(x):  # x [B,S,H,HD]
    pos = jnp.arange(x.shape[1])[None, :, None, None]
    inv = 1.0 / (100000 ** (jnp.arange(0, HD, 2) / HD))
    ang = pos * inv
    x1, x2 = x[..., :HD // 2], x[..., HD // 2:]
    c, s = jnp.cos(ang), jnp.sin(ang)
    return jnp.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], -1)

def features(p, h, tok):
    e = Eall[tok]
    z = jnp.concatenate([h, e], -1) @ p['fc']
    if MODEL == 'attn':
        B, S, _ = z.shape
        q, kk, v = jnp.split(rms(z, p['n1']) @ p['qkv'], 3, -1)
        q = rope(q.reshape(B, S, H, HD)); kk = rope(kk.reshape(B, S, H, HD)); v = v.reshape(B, S, H, HD)
        s = jnp.einsum('bqhd,bkhd->bhqk', q, kk) / 8.0
        mask = jnp.tril(jnp.ones((S, S), bool))
        s = jnp.where(mask, s, -1e30)
        a = jnp.einsum('bhqk,bkhd->bqhd', jax.nn.softmax(s, -1), v).reshape(B, S, D)
        z = z + a @ p['o']
        x = rms(z, p['n2'])
        z = z + (jax.nn.silu(x @ p['gate']) * (x @ p['up'])) @ p['down']
    else:
        z = z + jax.nn.silu(z @ p['w1'] + p['b1'])
        z = z + jax.nn.silu(z @ p['w2'] + p['b2'])
    return z

def loss_fn(p, h, tok, y, hn, m):
    z = features(p, h, tok)
    logits = rms(z, p['norm_out']) @ Ed.T
    valid = (y >= 0).astype(jnp.float32)
    lp = jax.nn.log_softmax(logits, -1)
    ce = -jnp.sum(jnp.take_along_axis(lp, jnp.maximum(y, 0)[..., None], -1)[..., 0] * valid) / jnp.maximum(valid.sum(), 1)
    reg = jnp.sum(jnp.mean(jnp.abs(rms(z, p['norm_out']) - hn), -1) * m) / jnp.maximum(m.sum(), 1)
    acc = jnp.sum((jnp.argmax(logits, -1) == y) * valid)
    return ce + REGW * reg, (ce, reg, acc, valid.sum())

REGW = 0.0  # EAGLE's feature regression: off (the probe asks about x[t+2] alone)
params = init(jax.random.PRNGKey(0))
sched = optax.warmup_cosine_decay_schedule(0, 1e-3, min(100, STEPS // 2), STEPS, 1e-5)
opt = optax.adamw(sched, weight_decay=0.0)
state = opt.init(params)

@jax.jit
def step(p, s, h, tok, y, hn, m):
    (l, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(p, h, tok, y, hn, m)
    g = jax.tree_util.tree_map(lambda x: jnp.clip(x, -1, 1), g)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, aux

evalf = jax.jit(lambda p, *b: loss_fn(p, *b)[1])
def evaluate(p):
    tot = n = ce = 0
    for i in range(0, len(held), BS):
        ce_, _, acc, cnt = evalf(p, *batch(held[i:i + BS]))
        tot += float(acc); n += float(cnt); ce += float(ce_) * float(cnt)
    return tot / n, ce / n

t = time.time()
for it in range(STEPS):
    idx = rng.integers(0, len(train), BS)
    params, state, aux = step(params, state, *batch([train[i] for i in idx]))
    if it % 200 == 0 or it == STEPS - 1:
        print(it, 'ce %.3f reg %.3f acc %.3f' % (float(aux[0]), float(aux[1]), float(aux[2]) / float(aux[3])), '%.0fs' % (time.time() - t), flush=True)
print('held-out top-1 and cross-entropy (targets inside the draft vocabulary):', evaluate(params), 'time', time.time() - t)
