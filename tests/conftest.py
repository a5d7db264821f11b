"""Shared test fixtures: tiny models on CPU, deterministic threads."""

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_config():
    from gptviz import GPTConfig

    return GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)


@pytest.fixture
def tiny_model(tiny_config):
    from gptviz import GPT

    torch.manual_seed(0)
    return GPT(tiny_config).eval()
