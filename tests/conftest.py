"""Shared test fixtures: tiny models on CPU, deterministic threads."""


import pytest
import torch

# Tiny models are faster on one thread, and the suite shares 2 cores with browser and kernel processes.
torch.set_num_threads(1)


@pytest.fixture
def tiny_config():
    from gptviz import GPTConfig

    return GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)


@pytest.fixture
def tiny_model(tiny_config):
    from gptviz import GPT

    torch.manual_seed(0)
    return GPT(tiny_config).eval()
