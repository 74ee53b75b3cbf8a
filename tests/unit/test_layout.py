from pathlib import Path

import pytest

from pipeline.errors import BadInput
from pipeline.planning.layout import ImageSpec, discover


def test_discovers_components_sorted_with_phases_and_images(repo: Path):
    layout = discover(repo)
    by_name = {c.name: c for c in layout.components}
    assert [c.name for c in layout.components] == ["backend", "frontend", "gitea", "nginx"]
    assert by_name["gitea"].phase == "foundation"
    assert by_name["frontend"].phase == "dependent"  # no build.conf
    assert by_name["backend"].images == (
        ImageSpec("ai-infra-backend", "backend"),
        ImageSpec("ai-infra-backend-init", "backend-init"),
    )
    assert by_name["frontend"].images == (ImageSpec("ai-infra-frontend", None),)


def test_records_dockerfile_and_template_paths(repo: Path):
    by_name = {c.name: c for c in discover(repo).components}
    assert by_name["backend"].dockerfile == "src/backend/Dockerfile"
    assert by_name["backend"].template == "src/backend/Dockerfile.tpl"
    assert (by_name["nginx"].dockerfile, by_name["nginx"].template) == (
        None,
        "src/nginx/Dockerfile.tpl",
    )
    assert by_name["frontend"].template is None


def test_dependencies_and_shared_skipped(repo: Path):
    layout = discover(repo)
    deps = {d.name: d for d in layout.dependencies}
    assert list(deps) == ["gitea", "mysql", "redis", "redis-copy", "safeline"]
    assert deps["gitea"].template == "src/gitea/dependency.conf.tpl" and deps["gitea"].conf is None
    assert deps["mysql"].conf == "src/mysql/dependency.conf"
    assert "shared" not in layout.names()
    assert "gitea" in {c.name for c in layout.components}  # both a component and a dependency


def test_missing_src_is_bad_input(tmp_path: Path):
    with pytest.raises(BadInput, match="no src/ directory"):
        discover(tmp_path)


def test_hidden_directories_and_plain_files_are_ignored(tree):
    root = tree(
        {"src/.cache/Dockerfile": "FROM x", "src/README.md": "hi", "src/a/Dockerfile": "FROM x"}
    )
    assert discover(root).names() == ["a"]


def test_bad_build_phase_names_file(tree):
    root = tree({"src/a/Dockerfile": "FROM x", "src/a/build.conf": "BUILD_PHASE=early\n"})
    with pytest.raises(BadInput, match=r"src/a/build\.conf: BUILD_PHASE='early'"):
        discover(root)


def test_build_conf_other_keys_and_case(tree):
    root = tree(
        {"src/a/Dockerfile": "FROM x", "src/a/build.conf": "# c\nX=1\nBUILD_PHASE=Foundation"}
    )
    assert discover(root).components[0].phase == "foundation"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("backend\n", r"build-targets\.conf:1: expected"),
        ("a b c\n", r"build-targets\.conf:1: expected"),
        ("# only comments\n", r"build-targets\.conf: names no images"),
        ("backend Ai-Infra\n", r"build-targets\.conf:1: invalid"),
    ],
)
def test_bad_build_targets_names_file(tree, content, match):
    root = tree({"src/a/Dockerfile": "FROM x AS backend", "src/a/build-targets.conf": content})
    with pytest.raises(BadInput, match=match):
        discover(root)


def test_build_targets_without_dockerfile_is_bad_input(tree):
    root = tree({"src/a/build-targets.conf": "a ai-infra-a\n"})
    with pytest.raises(BadInput, match=r"src/a/build-targets\.conf names images .* no Dockerfile"):
        discover(root)


def test_same_image_twice_is_bad_input(tree):
    root = tree(
        {
            "src/a/Dockerfile": "FROM x AS a",
            "src/a/build-targets.conf": "a ai-infra-b\n",
            "src/b/Dockerfile": "FROM x",
        }
    )
    with pytest.raises(BadInput, match="image ai-infra-b is named twice"):
        discover(root)


def test_uppercase_directory_is_bad_input(tree):
    root = tree({"src/Foo/Dockerfile": "FROM x"})
    with pytest.raises(BadInput, match="'ai-infra-Foo' is not a valid image name"):
        discover(root)
