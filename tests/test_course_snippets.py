"""The transformers snippets a typical GPT course teaches run on gptviz with only the import lines changed, and
give the same ids as transformers on the same (random, offline) GPT-2-vocabulary weights.

Each snippet is run twice from the same text: once after transformers' header, once after gptviz's. Greedy and
beam search must give identical ids; sampling must give identical ids under the same `torch.manual_seed`.
"""

import shutil
import warnings

import pytest
import torch

from gptviz.tokenizers import gpt2_bpe_files

transformers = pytest.importorskip("transformers")

PROMPTS = [
    "Once upon a time",
    "The quick brown fox",
    "What is the capital of France?",
    "人工智能科学家",
    "The quick brown fox jumps over the",
]

HEADERS = {
    "transformers": (
        "from transformers import GPT2LMHeadModel, GPT2Tokenizer\n"
        "model = GPT2LMHeadModel.from_pretrained(FOLDER)\n"
        "tokenizer = GPT2Tokenizer.from_pretrained(FOLDER)\n"
    ),
    "gptviz": (
        "from gptviz import GPT as GPT2LMHeadModel\n"
        "from gptviz.tokenizers import GPT2Tokenizer\n"
        "model = GPT2LMHeadModel.from_pretrained(FOLDER)\n"
        "tokenizer = GPT2Tokenizer.from_pretrained(FOLDER)\n"
    ),
}

SNIPPETS = {
    "greedy, max_length": (
        "input_tokens = tokenizer.encode(PROMPT, return_tensors='pt')\n"
        "output = model.generate(input_tokens, max_length=50, num_return_sequences=1)\n"
        "text = tokenizer.decode(output[0], skip_special_tokens=True)\n"
    ),
    "temperature without sampling": (
        "input_ids = tokenizer.encode(PROMPT, return_tensors='pt')\n"
        "output = model.generate(input_ids, max_length=100, temperature=0.7)\n"
        "text = tokenizer.decode(output[0], skip_special_tokens=True)\n"
    ),
    "beams, no repeated bigrams": (
        "input_ids = tokenizer.encode(PROMPT, return_tensors='pt')\n"
        "output = model.generate(input_ids=input_ids, max_length=50, num_beams=5, no_repeat_ngram_size=2,\n"
        "                        early_stopping=True)\n"
        "text = tokenizer.decode(output[0], skip_special_tokens=True)\n"
    ),
    "plain list with special tokens": (
        "ids = tokenizer.encode(PROMPT, add_special_tokens=True)\n"
        "output = model.generate(torch.tensor([ids]), max_new_tokens=12, pad_token_id=tokenizer.eos_token_id)\n"
        "text = tokenizer.batch_decode(output, skip_special_tokens=True)[0]\n"
    ),
    "sampling under manual_seed": (
        "input_ids = tokenizer(PROMPT, return_tensors='pt').input_ids\n"
        "torch.manual_seed(0)\n"
        "output = model.generate(input_ids, do_sample=True, temperature=0.7, max_length=40)\n"
        "text = tokenizer.decode(output[0], skip_special_tokens=True)\n"
    ),
    "top-p sampling, several sequences": (
        "enc = tokenizer(PROMPT, return_tensors='pt')\n"
        "torch.manual_seed(1)\n"
        "output = model.generate(**enc, do_sample=True, top_p=0.9, top_k=0, max_new_tokens=15,\n"
        "                        num_return_sequences=3, pad_token_id=tokenizer.eos_token_id)\n"
        "text = tokenizer.decode(output[2], skip_special_tokens=True)\n"
    ),
    "a padded batch": (
        "tokenizer.padding_side = 'left'\n"
        "tokenizer.pad_token = tokenizer.eos_token\n"
        "enc = tokenizer([PROMPT, 'Once upon a time there was a king who'], return_tensors='pt', padding=True)\n"
        "output = model.generate(**enc, max_new_tokens=10, pad_token_id=tokenizer.eos_token_id)\n"
        "text = tokenizer.batch_decode(output, skip_special_tokens=True)[0]\n"
    ),
    "scores in a dict": (
        "input_ids = tokenizer.encode(PROMPT, return_tensors='pt')\n"
        "out = model.generate(input_ids, max_new_tokens=5, output_scores=True, return_dict_in_generate=True)\n"
        "output = out.sequences\n"
        "scores = torch.stack(out.scores)\n"
        "text = tokenizer.decode(output[0], skip_special_tokens=True)\n"
    ),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A random-init GPT-2 (the real vocabulary, tiny layers) and GPT-2's tokenizer files, saved offline."""
    folder = tmp_path_factory.mktemp("course-gpt2")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    model = transformers.GPT2LMHeadModel(cfg)
    with torch.no_grad():  # a sharper random model, so greedy and beams make real choices
        model.lm_head.weight.mul_(20)
    model.save_pretrained(folder)
    encoder_json, vocab_bpe = gpt2_bpe_files()
    shutil.copy(encoder_json, folder / "vocab.json")
    shutil.copy(vocab_bpe, folder / "merges.txt")
    return folder


def run(side: str, snippet: str, folder, prompt: str) -> dict:
    space = {"FOLDER": str(folder), "PROMPT": prompt, "torch": torch}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both sides warn that temperature does nothing without sampling
        exec(HEADERS[side] + SNIPPETS[snippet], space)  # noqa: S102 - our own test code
    return space


@pytest.mark.parametrize("snippet", sorted(SNIPPETS))
def test_course_snippet_gives_transformers_ids(snippet, folder):
    for prompt in PROMPTS:
        theirs, ours = run("transformers", snippet, folder, prompt), run("gptviz", snippet, folder, prompt)
        assert ours["output"].tolist() == theirs["output"].tolist(), (snippet, prompt)
        assert ours["text"] == theirs["text"], (snippet, prompt)
        if "scores" in theirs:
            assert (ours["scores"] - theirs["scores"]).abs().max() <= 1e-4


def test_unsupported_and_misspelt_keywords_say_what_to_do(folder):
    from gptviz import GPT

    model = GPT.from_pretrained(folder)
    ids = torch.tensor([[464, 2068]])
    cases = [
        (dict(typical_p=0.9), ValueError, "typical sampling is not implemented; use top_p"),
        (dict(penalty_alpha=0.6, top_k=4), ValueError, "contrastive search"),
        (dict(num_beam_groups=2, num_beams=4), ValueError, "diverse"),
        (dict(stopping_criteria=[]), ValueError, "use eos_token_id or max_new_tokens"),
        (dict(streamer=object()), ValueError, "generate_steps"),
        (dict(output_hidden_states=True), ValueError, "gptviz.capture"),
        (dict(max_lenght=30), TypeError, "Did you mean 'max_length'"),
        (dict(do_samples=True), TypeError, "Did you mean 'do_sample'"),
        (dict(num_beams=2, output_scores=True), ValueError, "not for beam search"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            model.generate(ids, **kwargs)
    with pytest.raises(TypeError, match="max_new_tokens=7"):
        model.generate(ids, 7)  # gptviz used to take max_new_tokens second; transformers takes a config there
    with pytest.warns(UserWarning, match="max_length=3 counts the prompt"):
        assert model.generate(torch.tensor([[1, 2, 3, 4]]), max_length=3).shape == (1, 4)


def test_generation_config_defaults_follow_transformers(folder):
    """Called with no lengths and no knobs, both sides stop at the same length and sample the same way."""
    from gptviz import GPT

    model = GPT.from_pretrained(folder)
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder)
    ids = torch.tensor([[464, 2068, 7586]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert model.generate(ids).tolist() == hf.generate(ids).tolist()  # max_length 20, prompt included
        torch.manual_seed(3)
        theirs = hf.generate(ids, do_sample=True)  # top_k=50, temperature 1, top_p 1
        torch.manual_seed(3)
        assert model.generate(ids, do_sample=True).tolist() == theirs.tolist()
    assert model.generation_config.eos_token_id == 50256  # read from the folder, as transformers does
    hf_cfg = transformers.GenerationConfig(max_new_tokens=6, do_sample=False)
    assert model.generate(ids, generation_config=hf_cfg).shape[1] <= 3 + 6
    with pytest.raises(ValueError, match="typical"):
        model.generate(ids, generation_config=transformers.GenerationConfig(typical_p=0.5))
