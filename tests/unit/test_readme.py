"""The README stays true: every setting is in its configuration table, with its real default."""

from pathlib import Path

from talk.settings import settings_table

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_documented_with_its_default():
    for variable, default, _description in settings_table():
        assert f"| `{variable}` | `{default}` |" in README, f"{variable} (default {default}) missing from README"


def test_readme_shows_the_demo_and_test_commands():
    assert "pip install -e . && talk demo" in README
    assert "pip install -e '.[test]' && python -m pytest" in README
