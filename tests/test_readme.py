"""README's example must keep working exactly as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_ten_line_example_runs_and_learns():
    text = README.read_text(encoding="utf-8")
    block = re.search(r"## Ten lines\s+```python\n(.*?)```", text, re.S).group(1)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    model, test = scope["model"], scope["test"]
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in test:
            correct += (model(x).argmax(1) == y).sum().item()
            total += y.numel()
    assert correct / total > 0.9
