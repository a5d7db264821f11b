"""`gptviz sample`: print text generated from a checkpoint.

    gptviz sample --checkpoint lab/models/shakespeare-char --prompt "ROMEO:" --top-p 0.9 --seed 1

Greedy, sampling (temperature, top-k, top-p, penalties) or beam search, with transformers' meanings: the
decoding is `gptviz.sampling.generate`; this module only turns flags into its arguments and prints the text.
Exit status 2 when the checkpoint cannot be loaded or the prompt cannot be encoded.
"""

from __future__ import annotations

import argparse
import sys

import torch

from ..sampling import generate


def cli(argv: list[str]) -> int:
    """`gptviz sample`: print text generated from a checkpoint."""
    p = argparse.ArgumentParser(prog="gptviz sample", description="Generate text from a gptviz checkpoint.")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a gptviz checkpoint folder, a named offline model (smollm2-135m), a transformers folder or a hub id",
    )
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument("--temperature", type=float, default=1.0, help="< 1 safer, > 1 wilder, 0 = greedy (default 1)")
    p.add_argument("--top-k", type=int, default=None, help="sample only from the k most likely tokens")
    p.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="sample only from the smallest set holding this much probability, e.g. 0.9",
    )
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats, e.g. 1.2")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, help="never repeat an n-gram of this size")
    p.add_argument("--num-beams", type=int, default=1, help="> 1: beam search instead of sampling")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--num-samples", type=int, default=1, help="how many continuations to print")
    p.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    args = p.parse_args(argv)

    # imported here: `gptviz sample --help` answers without loading safetensors and the tokenizer libraries
    from ..pretrained import load

    try:
        model, tokenizer = load(args.checkpoint, device=args.device)
        idx = torch.tensor([tokenizer.encode(args.prompt)], dtype=torch.long)
        beams = args.num_beams
        out = generate(
            model,
            idx,
            args.max_new_tokens,
            do_sample=not args.greedy and beams == 1,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            repetition_penalty=args.repetition_penalty,
            no_repeat_ngram_size=args.no_repeat_ngram_size,
            num_beams=max(beams, args.num_samples) if beams > 1 else 1,
            num_return_sequences=args.num_samples,
            eos_token_id=tokenizer.eos_id,
            seed=args.seed,
        )
    except (ValueError, OSError, RuntimeError) as e:
        print(f"gptviz sample: error: {e}", file=sys.stderr)
        return 2
    for i, row in enumerate(out.tolist()):
        if i:
            print("\n" + "-" * 40)
        print(tokenizer.decode(row))
    return 0
