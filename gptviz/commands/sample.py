"""`gptviz sample`: print text generated from a checkpoint.

    gptviz sample --checkpoint lab/models/shakespeare-char --prompt "ROMEO:" --top-p 0.9 --seed 1

Greedy, sampling (temperature, top-k, top-p, penalties) or beam search, with transformers' meanings: the
decoding is `gptviz.sampling.generate`; this module only turns flags into its arguments and prints the text.
Exit status 2, with one line on stderr, when a flag is wrong, the checkpoint cannot be loaded or the prompt
cannot be encoded (--debug shows the traceback).
"""

from __future__ import annotations

import torch

from ..errors import InputError
from ..sampling import generate
from ._args import Parser, finite_float, run_command


def cli(argv: list[str]) -> int:
    """`gptviz sample`: print text generated from a checkpoint."""
    return run_command("gptviz sample", argv, _sample)


def _sample(argv: list[str]) -> int:
    p = Parser(prog="gptviz sample", description="Generate text from a gptviz checkpoint.")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a gptviz checkpoint folder, a named offline model (smollm2-135m), a transformers folder or a hub id",
    )
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default 200)")
    p.add_argument(
        "--temperature", type=finite_float, default=1.0, help="< 1 safer, > 1 wilder, 0 = greedy (default 1)"
    )
    p.add_argument("--top-k", type=int, default=None, help="sample only from the k most likely tokens")
    p.add_argument(
        "--top-p",
        type=finite_float,
        default=None,
        help="sample only from the smallest set holding this much probability, e.g. 0.9",
    )
    p.add_argument("--repetition-penalty", type=finite_float, default=1.0, help="> 1 discourages repeats, e.g. 1.2")
    p.add_argument("--no-repeat-ngram-size", type=int, default=0, help="never repeat an n-gram of this size")
    p.add_argument("--num-beams", type=int, default=1, help="> 1: beam search instead of sampling")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--num-samples", type=int, default=1, help="how many continuations to print")
    p.add_argument("--seed", type=int, default=None, help="make sampling reproducible")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    args = p.parse_args(argv)
    _check_prompt(args.prompt)
    if args.max_new_tokens < 0 or args.num_samples < 1 or args.num_beams < 1:
        raise InputError(
            "--max-new-tokens must be >= 0, --num-samples and --num-beams >= 1; got "
            f"{args.max_new_tokens}, {args.num_samples}, {args.num_beams}"
        )

    # imported here: `gptviz sample --help` answers without loading safetensors and the tokenizer libraries
    from ..pretrained import load

    model, tokenizer = load(args.checkpoint, device=args.device)
    ids = tokenizer.encode(args.prompt)
    if not ids:
        raise InputError(f"the prompt {args.prompt!r} encodes to no tokens; give some text with --prompt")
    idx = torch.tensor([ids], dtype=torch.long)
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
    for i, row in enumerate(out.tolist()):
        if i:
            print("\n" + "-" * 40)
        print(tokenizer.decode(row))
    return 0


def _check_prompt(prompt: str) -> None:
    """InputError when the terminal handed over bytes that are not UTF-8 (Python keeps them as lone surrogates)."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        try:
            bad = "byte(s) " + prompt[e.start : e.end].encode("utf-8", "surrogateescape").hex(" ")
        except UnicodeEncodeError:
            bad = f"U+{ord(prompt[e.start]):04X} (a lone surrogate)"
        raise InputError(
            f"--prompt is not UTF-8 text: {bad} at character {e.start} (the terminal sends another "
            "encoding, e.g. Latin-1). Switch the terminal to UTF-8 (e.g. export LANG=C.UTF-8) and type the prompt "
            "again"
        ) from e
