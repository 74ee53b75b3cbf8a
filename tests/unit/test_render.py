import pytest

from pipeline.errors import BadInput
from pipeline.planning.render import render, unset, variables


def test_fills_variables_with_or_without_spaces():
    text = "ARG A={{A}}\nFROM {{ B }}:{{A}}\n"
    assert render(text, {"A": "1", "B": "img"}, "x.tpl") == "ARG A=1\nFROM img:1\n"


def test_leaves_other_syntax_alone():
    text = "ENV X=${A} Y={{ .Go.Template }}\n"
    assert render(text, {}, "x.tpl") == text


def test_missing_variable_names_file_and_variable():
    with pytest.raises(BadInput) as info:
        render("FROM golang:{{GOLANG_VERSION}}", {}, "src/backend/Dockerfile.tpl")
    assert str(info.value) == (
        "src/backend/Dockerfile.tpl: template variable GOLANG_VERSION has no value "
        "(set it in .env or the environment)"
    )


def test_empty_value_is_no_value_unless_allowed():
    with pytest.raises(BadInput, match="template variable V has no value"):
        render("ARG V={{V}}", {"V": ""}, "f.tpl")
    assert render("ARG V={{V}}", {"V": ""}, "f.tpl", allow_empty=True) == "ARG V="


def test_withheld_variable_says_why():
    with pytest.raises(BadInput, match="JWT_SECRET is withheld from builds"):
        render("ARG S={{JWT_SECRET}}", {}, "f.tpl", withheld=("JWT_SECRET",))


def test_variables_and_unset():
    text = "{{A}}{{B}}{{ A }}{{C}}"
    assert variables(text) == ["A", "B", "C"]
    assert unset(text, {"A": "1", "B": ""}) == ["B", "C"]
    assert unset(text, {"A": "1", "B": ""}, allow_empty=True) == ["C"]
