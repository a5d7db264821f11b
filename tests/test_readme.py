"""The README's ten-line API example runs as written, from the repository root."""

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_api_example_runs(tmp_path, capsys, monkeypatch):
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## The API in ten lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "torch.Size([1, " in out  # the attention shape line
    assert out.count("\n") >= 5


def test_readme_transformer_lens_example_runs(monkeypatch):
    """The 'Coming from TransformerLens' lines run on the lab's model (the TransformerLens line where installed)."""
    import importlib.util

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text.split("## Coming from TransformerLens", 1)[1], re.S).group(1)
    if importlib.util.find_spec("transformer_lens") is None:
        code = "\n".join(line for line in code.splitlines() if "to_transformer_lens" not in line)
    setup = (
        "import torch, gptviz\n"
        "model, tok = gptviz.load('lab/models/shakespeare-char')\n"
        "ids = torch.tensor([tok.encode('ROMEO:\\nWhat light')])\n"
        "answer_ids = torch.tensor([tok.encode('!')[0]])\n"
    )
    monkeypatch.chdir(ROOT)
    space: dict = {}
    exec(setup + code, space)  # noqa: S102 - the README's own example
    assert space["attrs"].shape[0] == space["resid"].shape[0]
