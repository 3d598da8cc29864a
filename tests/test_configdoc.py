from pathlib import Path

from socksvc.config.doc import render
from socksvc.config.settings import setting_fields
from socksvc.services.catalogue import loads, types

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def test_committed_reference_matches_the_code() -> None:
    assert DOC.read_text(encoding="utf-8") == render(types()), "run: ./dev docs"


def test_every_service_key_is_in_the_reference() -> None:
    text = render(types())
    for stype in types().values():
        for key in setting_fields(stype.settings):
            assert f"| `{key}` |" in text


def test_the_embedded_default_in_the_reference_loads() -> None:
    text = render(types())
    toml = text.split("```toml\n", 1)[1].split("```", 1)[0]
    assert loads(toml, "<doc>").services


def test_the_readme_config_example_is_valid(tmp_path: Path) -> None:
    readme = (DOC.parent.parent / "README.md").read_text(encoding="utf-8")
    example = readme.split("The shape:\n\n```toml\n", 1)[1].split("```", 1)[0]
    # A UNIX socket's directory must exist (systemd's RuntimeDirectory= makes /run/socksvc).
    config = loads(example.replace("/run/socksvc/", f"{tmp_path}/"), "README.md")
    assert [s.name for s in config.services] == ["echo", "greeting", "lab-echo"]
