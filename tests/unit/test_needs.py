"""Images that read other release images: detected, ordered in waves, rewritten to the
published reference; cycles refused."""

import pytest

from pipeline.errors import BadInput
from pipeline.oci.reference import parse
from pipeline.planning.dockerfile import Dockerfile
from pipeline.planning.plan import ImagePlan, _with_needs, waves

SLURMD = """\
ARG VERSION=latest
FROM ubuntu:22.04 AS base
FROM base
COPY --from=ai-infra-slurm-master:latest /usr/bin/slurmd /usr/sbin/
COPY --from=base /etc/hosts /tmp/
COPY --from=0 /etc/passwd /tmp/
"""


def plan(image: str, text: str) -> ImagePlan:
    return ImagePlan(
        name=image.removeprefix("ai-infra-"), image=image, reference=parse(f"r/{image}:v1"),
        dockerfile=Dockerfile(text, f"src/{image}/Dockerfile"), target=None,
        phase="dependent", build_args={},
    )  # fmt: skip


def test_references_skip_stages_scratch_and_indexes():
    assert Dockerfile(SLURMD).image_references == ["ubuntu:22.04", "ai-infra-slurm-master:latest"]
    assert Dockerfile("FROM scratch\nCOPY x /x\n").image_references == []


def test_replace_points_only_that_image_at_the_published_ref():
    new = "reg/p/ai-infra-slurm-master:v1@sha256:" + "b" * 64
    text = (
        Dockerfile(SLURMD + "FROM ${REG}/ai-infra-slurm-master:${VERSION} AS m\n")
        .with_image("ai-infra-slurm-master", new)
        .text
    )
    assert f"COPY --from={new} /usr/bin/slurmd" in text
    assert f"FROM {new} AS m" in text
    assert "FROM ubuntu:22.04 AS base" in text  # other images untouched
    assert "ai-infra-slurm-master-extra" in (
        Dockerfile("FROM ai-infra-slurm-master-extra\n")
        .with_image("ai-infra-slurm-master", new)
        .text
    )


def test_needs_and_waves():
    images = _with_needs(
        [plan("ai-infra-slurmd", SLURMD), plan("ai-infra-slurm-master", "FROM ubuntu:22.04\n")]
    )
    by_name = {i.image: i for i in images}
    assert by_name["ai-infra-slurmd"].needs == ("ai-infra-slurm-master",)
    assert by_name["ai-infra-slurm-master"].needs == ()
    order = [[i.image for i in wave] for wave in waves(images)]
    assert order == [["ai-infra-slurm-master"], ["ai-infra-slurmd"]]


def test_a_cycle_is_bad_input():
    with pytest.raises(BadInput, match="cycle"):
        _with_needs(
            [plan("ai-infra-a", "FROM ai-infra-b\n"), plan("ai-infra-b", "FROM ai-infra-a\n")]
        )
