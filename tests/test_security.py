"""No input of a user's is ever run as code: the package never calls eval/exec, never unpickles,
reads YAML safely, and loads torch files as tensors only (checked on the source's syntax tree)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hbt"

FORBIDDEN = {  # dotted call name -> why
    "eval": "evaluates text as code",
    "exec": "runs text as code",
    "pickle.load": "unpickling runs code",
    "pickle.loads": "unpickling runs code",
    "yaml.load": "yaml.load builds arbitrary objects (use yaml.safe_load)",
    "yaml.unsafe_load": "builds arbitrary objects",
    "marshal.loads": "loads code objects",
}


def dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def calls():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Call):
                yield path, node, dotted(node.func)


def test_no_call_runs_input_as_code():
    found = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}: {FORBIDDEN[name]}"
             for path, node, name in calls() if name in FORBIDDEN]
    assert found == []


def test_torch_load_is_weights_only():
    loads = [(path, node) for path, node, name in calls() if name == "torch.load"]
    assert loads, "the DDP training state is loaded with torch.load"
    for path, node in loads:
        weights_only = [k for k in node.keywords if k.arg == "weights_only"]
        assert (weights_only and isinstance(weights_only[0].value, ast.Constant)
                and weights_only[0].value.value is True), \
            f"{path}:{node.lineno}: torch.load without weights_only=True"
