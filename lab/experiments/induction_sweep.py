"""Which settings make a 2-layer attention-only GPT grow an induction head soon enough for a CPU lesson?

Each config trains a fresh model on windows of repeated random sequences and measures, every `--every` steps,
the best layer-1 induction score and the best layer-0 previous-token score on a held-out probe (a random
sequence of block_size/2 tokens, repeated), and the probe's second-copy loss. Configs run in parallel
processes (one torch thread each), on the GPU when there is one. Used to choose notebook 06's settings:

    python lab/experiments/induction_sweep.py --group lesson --steps 1500 --out sweep.json   # ~1 min on 2 cores
    python lab/experiments/induction_sweep.py --group gpt2-defaults --max-seconds 170 --jobs 18  # on a GPU

Data modes: "concat" = sequences of random length in [minl, maxl], each followed by its copy, end to end,
cut into windows; "embed" = one window of random tokens with one segment copied later; "cycle" = one random
sequence repeated until the window is full (gptviz.data.RepeatedSequences, notebook 06). `p` > 0 adds a local
rule inside each random sequence of concat/embed rows: with probability p a token equals the one two places
back (`rule="ident"`) or a fixed permutation of it (`rule="perm"`), which gives a previous-token head a use of
its own. `ln`, `tie`, `init` set GPTConfig's layer_norm, tie_embeddings, init_std; `impl="hf"` trains the
transformers GPT-2 instead (measured with gptviz after copying its weights).

What it found (2026-11-26): with GPT-2's LayerNorm, tied embeddings and init 0.02, none of 14 settings (data
modes, block 32/64, width 64/128, lr 1e-3..1e-2, batch 32/128, sinusoidal positions, the local rules) grew an
induction head in 18,000 steps on an H100 (14 runs side by side, 170 s each), even where the rule gave a
perfect previous-token head; the models settle on copying one of the last few tokens. Without LayerNorm, with
an untied LM head and init 0.07, "cycle" rows grow one by step 500-1,000 for seeds 0, 1 and 2 (CPU runs).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

BASE = dict(V=32, T=32, nh=4, C=64, lr=3e-3, B=32, seed=0, data="concat", pos="learned", minl=4, maxl=12,
            p=0.0, rule="ident", wd=0.0, mlp=False, impl="gptviz", ln=True, tie=True, init=0.02)

# Each group is one question. "gpt2-defaults": the first 14 ran side by side on an H100 (18,000 steps each);
# the last four were CPU checks of the same family. "toy": what it takes (LayerNorm, tying, init) on CPU.
# "lesson": notebook 06's settings over three seeds.
GROUPS = {
    "gpt2-defaults": [
        dict(name="old-notebook", V=48, T=64, minl=6, maxl=24),
        dict(name="old-notebook-sin", V=48, T=64, minl=6, maxl=24, pos="sinusoidal"),
        dict(name="T32"),
        dict(name="T32-C128-lr1e-3", C=128, lr=1e-3),
        dict(name="T32-lr1e-2", lr=1e-2),
        dict(name="T32-rule-ident", p=0.3),
        dict(name="T32-rule-perm", p=0.3, rule="perm"),
        dict(name="T32-embed", data="embed"),
        dict(name="T64-embed-C128", data="embed", T=64, V=64, C=128, lr=1e-3),
        dict(name="T64-rule-C128", V=48, T=64, minl=6, maxl=24, C=128, lr=1e-3, p=0.3),
        dict(name="T32-sin-rule", pos="sinusoidal", p=0.3),
        dict(name="T32-B128", B=128),
        dict(name="T64-B128", V=48, T=64, minl=6, maxl=24, B=128, lr=1e-3),
        dict(name="T32-V64", V=64),
        dict(name="T32-hf", impl="hf"),
        dict(name="T32-mlp", mlp=True),
        dict(name="T32-cycle", data="cycle", minl=3, maxl=12),
        dict(name="T64-cycle", data="cycle", V=48, T=64, minl=4, maxl=24),
    ],
    "toy": [
        dict(name="cycle-noln-untied", data="cycle", minl=3, maxl=12, ln=False, tie=False, lr=1e-3),
        dict(name="cycle-noln", data="cycle", minl=3, maxl=12, ln=False, lr=1e-3),
        dict(name="pairs-noln-untied", ln=False, tie=False, lr=1e-3),
        dict(name="cycle-noln-untied-init", data="cycle", minl=3, maxl=12, ln=False, tie=False, lr=1e-3, init=0.072),
        dict(name="cycle-init", data="cycle", minl=3, maxl=12, lr=1e-3, init=0.072),
        dict(name="cycle-noln-init", data="cycle", minl=3, maxl=12, ln=False, lr=1e-3, init=0.072),
        dict(name="pairs-toy", minl=3, maxl=12, ln=False, tie=False, lr=1e-3, init=0.072),
        dict(name="cycle-toy-lr3e-3", data="cycle", minl=3, maxl=12, ln=False, tie=False, lr=3e-3, init=0.072),
    ],
    "lesson": [dict(name=f"lesson-s{seed}", data="cycle", minl=3, maxl=16, ln=False, tie=False, lr=3e-3, init=0.07,
                    seed=seed) for seed in (0, 1, 2)],
}
SWEEP = [c for group in GROUPS.values() for c in group]


def run(cfg: dict, steps: int, every: int, device: str, max_seconds: float, verbose: bool = False) -> dict:
    from gptviz import GPT, GPTConfig
    from gptviz.data import RepeatedSequences
    from gptviz.heads import induction_score, previous_token_score, repeated_random_tokens
    from gptviz.hooks import capture

    torch.set_num_threads(1)
    a = {**BASE, **cfg}
    V, T = a["V"], a["T"]
    g = torch.Generator().manual_seed(a["seed"])
    perm = torch.randperm(V, generator=g).tolist()

    def apply_rule(mat: torch.Tensor) -> torch.Tensor:  # (N, L) random ids, rows independent
        if a["p"] > 0:
            hit = torch.rand(mat.shape, generator=g) < a["p"]
            table = torch.arange(V) if a["rule"] == "ident" else torch.tensor(perm)
            for i in range(2, mat.shape[1]):
                mat[:, i] = torch.where(hit[:, i], table[mat[:, i - 2]], mat[:, i])
        return mat

    if a["data"] == "concat":  # one long stream, like notebook 06's TokenDataset; windows at random offsets
        n = 2_000_000 // (a["minl"] + a["maxl"])
        lengths = torch.randint(a["minl"], a["maxl"] + 1, (n,), generator=g).tolist()
        mat = apply_rule(torch.randint(0, V, (n, a["maxl"]), generator=g)).tolist()
        stream = torch.tensor([t for row, L in zip(mat, lengths) for t in row[:L] + row[:L]])

    cycle = RepeatedSequences(V, a["minl"], a["maxl"])

    def batch(B: int) -> torch.Tensor:
        if a["data"] == "concat":
            off = torch.randint(0, len(stream) - T - 1, (B, 1), generator=g)
            return stream[off + torch.arange(T + 1)]
        if a["data"] == "cycle":  # notebook 06: a random sequence repeated until the window is full
            x, y = cycle.get_batch(B, T, g)
            return torch.cat([x, y[:, -1:]], 1)
        rows = apply_rule(torch.randint(0, V, (B, T + 1), generator=g))
        for b in range(B):
            L = int(torch.randint(a["minl"], a["maxl"] + 1, (1,), generator=g))
            gap = int(torch.randint(0, 8, (1,), generator=g))
            start = int(torch.randint(0, T + 2 - 2 * L - gap, (1,), generator=g))
            rows[b, start + L + gap:start + 2 * L + gap] = rows[b, start:start + L]
        return rows

    torch.manual_seed(a["seed"])
    model = GPT(GPTConfig(vocab_size=V, block_size=T, n_layer=2, n_head=a["nh"], n_embd=a["C"],
                          mlp=a["mlp"] or a["impl"] == "hf", pos_encoding=a["pos"], layer_norm=a["ln"],
                          tie_embeddings=a["tie"], init_std=a["init"]))
    model = model.to(device)
    trained, loss_of = model, model.loss
    if a["impl"] == "hf":  # train the real transformers GPT-2 (with MLPs) instead: a cross-check of our model
        import transformers

        from gptviz.hf import state_dict_from_hf

        trained = transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=V, n_positions=T, n_layer=2, n_head=a["nh"], n_embd=a["C"], resid_pdrop=0, embd_pdrop=0,
            attn_pdrop=0)).to(device)

        def loss_of(x, y):
            logits = trained(x, use_cache=False).logits
            return torch.nn.functional.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    opt = torch.optim.AdamW(trained.parameters(), lr=a["lr"], weight_decay=a["wd"], betas=(0.9, 0.95))
    probe = repeated_random_tokens(V, T // 2, seed=12345).to(device)
    curve, first, t0 = [], None, time.time()
    for step in range(steps + 1):
        last = step == steps or time.time() - t0 > max_seconds
        if step % every == 0 or last:
            if trained is not model:
                model.load_state_dict(state_dict_from_hf(trained.state_dict()))
            model.eval()
            with torch.no_grad(), capture(model, "blocks.*.attn.hook_pattern") as cap:
                logits = model(probe[None])[0, :-1]
            pat = torch.stack([cap[f"blocks.{l}.attn.hook_pattern"][0] for l in range(2)]).cpu()
            ind, prev = induction_score(pat, probe.cpu()), previous_token_score(pat)
            loss = torch.nn.functional.cross_entropy(logits.float(), probe[1:], reduction="none")
            point = dict(step=step, second_copy_loss=round(float(loss[T // 2:].mean()), 3),
                         induction=round(float(ind[1].max()), 3), previous=round(float(prev[0].max()), 3),
                         seconds=round(time.time() - t0, 1))
            curve.append(point)
            if verbose:
                print(a["name"], point, flush=True)
            if first is None and point["induction"] > 0.4:
                first = step
            model.train()
        if last:
            break
        x = batch(a["B"]).to(device)
        loss = loss_of(x[:, :-1], x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return dict(config=a, first_step_over_0_4=first, final=curve[-1], curve=curve,
                steps_done=step, seconds_per_step=round((time.time() - t0) / max(step, 1), 5))


def _job(args):
    return run(*args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--max-seconds", type=float, default=1e9, help="wall-clock limit per config")
    ap.add_argument("--verbose", action="store_true", help="print every measurement as it is made")
    ap.add_argument("--group", default="lesson", choices=sorted(GROUPS), help="which question to run")
    ap.add_argument("--only", default="", help="comma-separated config names (instead of a group)")
    ap.add_argument("--out", default="induction_sweep.json")
    args = ap.parse_args()
    configs = [c for c in SWEEP if c["name"] in args.only.split(",")] if args.only else GROUPS[args.group]
    with mp.get_context("spawn").Pool(min(args.jobs, len(configs))) as pool:
        results = pool.map(_job, [(c, args.steps, args.every, args.device, args.max_seconds, args.verbose) for c in configs])
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"{'config':18} {'steps':>6} {'first>0.4':>9} {'ind':>5} {'prev':>5} {'2nd loss':>8} {'s/step':>7}")
    for r in results:
        f = r["final"]
        print(f"{r['config']['name']:18} {r['steps_done']:6d} {str(r['first_step_over_0_4']):>9} {f['induction']:5.2f} "
              f"{f['previous']:5.2f} {f['second_copy_loss']:8.2f} {r['seconds_per_step']:7.4f}")


if __name__ == "__main__":
    main()
