"""The deployed packages hold only what the Lambda handlers can import; developer tooling lives in pulse_dev."""

from pathlib import Path

from pulse_dev.local.template import load_template
from pulse_dev.reachable import imported_names, main, module_file, reachable_modules, shipped_modules
from tests.paths import REPO_ROOT

ROOT = REPO_ROOT
HANDLERS = sorted(ROOT.glob("functions/*/app.py"))
DEPLOYED_ROOTS = [ROOT / "layers" / "core", ROOT / "layers" / "encoder"]


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_every_module_of_the_deployed_packages_is_reachable_from_a_handler():
    shipped = shipped_modules(ROOT / "layers" / "core", ["pulse"]) | shipped_modules(ROOT / "layers" / "encoder",
                                                                                     ["pulse_encoder"])
    reached = reachable_modules(HANDLERS, DEPLOYED_ROOTS)
    assert len(HANDLERS) == 4
    assert shipped - reached == set(), "shipped to Lambda but no handler can import it: move it to pulse_dev"
    assert {"pulse.ingest.pipeline", "pulse.serving.recommend", "pulse.training.job",
            "pulse_encoder.encoder"} <= reached


def test_no_layer_or_function_ships_the_developer_package():
    resources = load_template(ROOT / "template.yaml")["Resources"]
    uris = [resource["Properties"].get(key) for resource in resources.values()
            for key in ("ContentUri", "CodeUri") if key in resource.get("Properties", {})]
    assert len(uris) >= 7  # four functions, three layers
    assert not [uri for uri in uris if "tools" in str(uri) or "pulse_dev" in str(uri)]
    assert not (ROOT / "layers" / "core" / "pulse" / "local").exists()


def test_the_closure_follows_relative_lazy_and_package_imports_and_reports_what_it_misses(tmp_path, capsys):
    write(tmp_path / "src", {
        "app/__init__.py": "",
        "app/main.py": "from app.helper import run\n",
        "app/helper.py": "from . import sibling\n\ndef run():\n    from .deep.leaf import value\n    return value\n",
        "app/sibling.py": "import json\n",
        "app/deep/__init__.py": "from .. import sibling\n",
        "app/deep/leaf.py": "value = 1\n",
        "app/tooling.py": "import app.helper\n",
    })
    handler = tmp_path / "handler.py"
    handler.write_text("import os\nfrom app import main\n")
    reached = reachable_modules([handler], [tmp_path / "src"])
    assert reached == {"app", "app.main", "app.helper", "app.sibling", "app.deep", "app.deep.leaf"}
    assert shipped_modules(tmp_path / "src", ["app"]) - reached == {"app.tooling"}
    assert main([str(handler), "--package-root", str(tmp_path / "src"), "--package", "app"]) == 1
    assert "unreachable: app.tooling" in capsys.readouterr().out
    (tmp_path / "src" / "app" / "tooling.py").unlink()
    assert main([str(handler), "--package-root", str(tmp_path / "src"), "--package", "app"]) == 0


def flow_of(module: str) -> str:
    """pulse.events.behaviour -> events; pulse.settings -> settings (a top-level module is its own room)."""
    return module.split(".")[1] if module.count(".") else module


def flow_imports() -> dict[str, set[str]]:
    """Which flows of the deployed package each flow imports (imports inside a flow left out)."""
    graph: dict[str, set[str]] = {}
    root = ROOT / "layers" / "core"
    for module in shipped_modules(root, ["pulse"]) - {"pulse"}:
        path = module_file(module, [root])
        assert path is not None
        names = imported_names(path.read_text(), module, is_package=path.name == "__init__.py")
        targets = {flow_of(name) for name in names if name.startswith("pulse.") and module_file(name, [root])}
        graph.setdefault(flow_of(module), set()).update(targets - {flow_of(module)})
    return graph


def test_the_flows_of_the_deployed_package_depend_on_each_other_one_way_only():
    graph = flow_imports()
    assert {"events", "interest", "ingest", "catalog", "serving", "training", "settings", "wiring"} <= set(graph)
    order: list[str] = []
    pending = dict(graph)
    while pending:
        ready = sorted(flow for flow, targets in pending.items() if targets <= set(order))
        assert ready, f"the flows {sorted(pending)} import each other in a circle: {pending}"
        order.extend(ready)
        pending = {flow: targets for flow, targets in pending.items() if flow not in ready}
    # The shape docs/architecture.md describes: events below interest, the paths above both, wiring on top.
    assert order.index("events") < order.index("interest") < order.index("ingest")
    assert order.index("catalog") < order.index("serving") < order.index("wiring")
    assert order[-1] == "wiring"
