"""The prepare step as the plan sees it: rendered config files, the SSH key pair a checkout
lacks, every COPY/ADD source checked against the context, images that get a private key, and
the build-time service (AppHub) with the images that reach it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import BadInput
from pipeline.planning.plan import resolve_plan, waves

ENV = "IMAGE_TAG=v1\nEXTERNAL_HOST=matrix.example\nBACKEND_PORT=8082\nJWT_SECRET=s3cret-jwt\n"
FILES = {
    ".env.example": ENV,
    "src/nginx/Dockerfile": "FROM nginx:1\nCOPY src/nginx/conf.d/ /etc/nginx/conf.d/\n",
    "src/nginx/templates/conf.d/server.conf.tpl": (
        "server_name {{EXTERNAL_HOST}};\nproxy_pass http://backend:{{BACKEND_PORT}};\n"
    ),
    "src/salt/Dockerfile": "FROM busybox\nCOPY src/salt/salt-pillar/ /srv/pillar/\n",
    "src/salt/salt-pillar/config.sls.tpl": "host: {{EXTERNAL_HOST}}\ntag: {{IMAGE_TAG}}\n",
    "src/salt/salt-pillar/config.sls": "host: 192.168.216.66\n",  # committed, stale
    "src/backend/Dockerfile": (
        "FROM busybox\nCOPY ssh-key/id_rsa /root/.ssh/id_rsa\n"
        "COPY ssh-key/id_rsa.pub /root/.ssh/id_rsa.pub\n"
    ),
    "src/apphub/Dockerfile": ("FROM busybox\nCOPY ssh-key/id_rsa.pub /root/.ssh/authorized_keys\n"),
    "src/slurm-master/Dockerfile": (
        "FROM busybox\nARG APPHUB_URL=http://apphub:80\nRUN wget $APPHUB_URL/pkgs/x\n"
    ),
}


def plan(root: Path, env: dict | None = None):
    return resolve_plan(root, env or {}, {})


def test_templates_are_rendered_into_the_context_with_non_secret_values(tree):
    the_plan = plan(tree(FILES))
    files = {g.path: g for g in the_plan.generated}
    assert files["src/nginx/conf.d/server.conf"].text == (
        "server_name matrix.example;\nproxy_pass http://backend:8082;\n"
    )
    assert files["src/nginx/conf.d/server.conf"].origin == (
        "src/nginx/templates/conf.d/server.conf.tpl"
    )
    # The committed rendering (an author's IP) is replaced in the context, not used.
    assert files["src/salt/salt-pillar/config.sls"].text == "host: matrix.example\ntag: v1\n"


def test_a_template_may_not_bake_a_secret_into_an_image(tree):
    root = tree({**FILES, "src/nginx/templates/conf.d/jwt.conf.tpl": "key {{JWT_SECRET}};\n"})
    with pytest.raises(BadInput, match="jwt.conf.tpl: template variable JWT_SECRET is withheld"):
        plan(root)


def test_the_ssh_key_pair_is_generated_when_the_checkout_has_none(tree):
    the_plan = plan(tree(FILES))
    keys = [(g.path, g.private) for g in the_plan.generated if g.path.startswith("ssh-key/")]
    assert keys == [("ssh-key/id_rsa", True), ("ssh-key/id_rsa.pub", False)]
    private = {i.image: i.private_key for i in the_plan.components}
    assert private == {
        "ai-infra-apphub": False, "ai-infra-backend": True, "ai-infra-nginx": False,
        "ai-infra-salt": False, "ai-infra-slurm-master": False,
    }  # fmt: skip


def test_an_existing_key_pair_is_used_as_is(tree):
    root = tree({**FILES, "ssh-key/id_rsa": "k", "ssh-key/id_rsa.pub": "k.pub"})
    assert not [g for g in plan(root).generated if g.path.startswith("ssh-key/")]


def test_a_missing_copy_source_names_image_line_and_path_before_any_build(tree):
    files = {**FILES, "src/nginx/Dockerfile": FILES["src/nginx/Dockerfile"]
             + "COPY src/nginx/certs/ /etc/nginx/ssl/\nCOPY third_party/*.deb /tmp/\n"}  # fmt: skip
    with pytest.raises(BadInput) as caught:
        plan(tree(files))
    assert str(caught.value) == (
        "COPY/ADD sources not in the build context: ai-infra-nginx (src/nginx/Dockerfile "
        "line 3: src/nginx/certs/, line 4: third_party/*.deb)"
    )


def test_globs_args_and_folders_count_as_present_and_env_never_does(tree):
    files = {
        **FILES,
        "third_party/a.deb": "x",
        "src/x/Dockerfile": "FROM busybox\nARG D=third_party\nCOPY ${D}/*.deb . /x/\n",
    }
    plan(tree(files))  # no error
    with pytest.raises(BadInput, match=r"ai-infra-y \(src/y/Dockerfile line 2: \.env\)"):
        plan(tree({**files, ".env": ENV, "src/y/Dockerfile": "FROM busybox\nCOPY .env /\n"}))


def test_apphub_serves_during_builds_and_what_reaches_it_builds_after(tree):
    the_plan = plan(tree(FILES))
    images = {i.image: i for i in the_plan.components}
    assert images["ai-infra-apphub"].serves == 80
    assert images["ai-infra-slurm-master"].reaches == {"APPHUB_URL": "ai-infra-apphub"}
    order = [[i.image for i in wave] for wave in waves(the_plan.components)]
    assert order[-1] == ["ai-infra-slurm-master"] and "ai-infra-apphub" in order[0]


def test_a_component_serves_when_its_build_conf_says_on_which_port(tree):
    files = {**FILES, "src/pkgs/Dockerfile": "FROM busybox\n",
             "src/pkgs/build.conf": "BUILD_PHASE=foundation\nBUILD_SERVICE_PORT=8080\n",
             "src/app/Dockerfile": "FROM busybox\nARG PKGS_URL\n"}  # fmt: skip
    images = {i.image: i for i in plan(tree(files)).components}
    assert images["ai-infra-pkgs"].serves == 8080
    assert images["ai-infra-app"].reaches == {"PKGS_URL": "ai-infra-pkgs"}
    with pytest.raises(BadInput, match="BUILD_SERVICE_PORT='99999' is not a port"):
        plan(tree({**files, "src/pkgs/build.conf": "BUILD_SERVICE_PORT=99999\n"}))


def test_only_the_target_whose_stages_copy_the_key_holds_it(tree):
    files = {**FILES, "src/backend/Dockerfile": (
        "FROM busybox AS base\nCOPY ssh-key/id_rsa /root/.ssh/id_rsa\n"
        "FROM base AS backend\nRUN true\n"
        "FROM busybox AS backend-init\nCOPY --from=base /etc/passwd /x\n"
    ), "src/backend/build-targets.conf": "backend ai-infra-backend\n"
                                         "backend-init ai-infra-backend-init\n"}  # fmt: skip
    private = {i.image: i.private_key for i in plan(tree(files)).components}
    assert (private["ai-infra-backend"], private["ai-infra-backend-init"]) == (True, False)


def test_of_two_first_runs_at_once_one_key_pair_is_kept_whole(tmp_path, monkeypatch):
    """The other run renames its pair into place while this one makes its own."""
    from pipeline.doors import host

    folder = tmp_path / "ssh-key"
    theirs = (b"their private\n", b"their public\n")
    made = host.kept_files

    def other_run_wins(store):
        folder.mkdir()
        (folder / "id_rsa").write_bytes(theirs[0])
        (folder / "id_rsa.pub").write_bytes(theirs[1])
        return made(store)

    monkeypatch.setattr(host, "kept_files", other_run_wins)
    assert host.ensure_key_pair(folder) is False
    assert ((folder / "id_rsa").read_bytes(), (folder / "id_rsa.pub").read_bytes()) == theirs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssh-key"]  # nothing of ours left
    monkeypatch.setattr(host, "kept_files", made)
    fresh = tmp_path / "fresh"
    fresh.mkdir()  # an empty folder is replaced by the pair
    assert host.ensure_key_pair(fresh) is True and (fresh / "id_rsa").is_file()


NGINX_TLS = "FROM nginx:1\nRUN mkdir -p /etc/nginx/ssl\nCOPY src/nginx/ssl/ /etc/nginx/ssl/\n"


def test_nginx_s_tls_folder_is_made_as_ssl_setup_makes_it_for_the_env_s_domain(tree):
    root = tree({**FILES, "src/nginx/Dockerfile": NGINX_TLS})
    made = [g for g in plan(root).generated if g.path.startswith("src/nginx/ssl/")]
    assert [(g.path.removeprefix("src/nginx/ssl/"), g.private) for g in made] == [
        ("ca/ca.key", True), ("ca/ca.crt", False), ("ca/ca.srl", False),
        ("matrix.example.key", True), ("matrix.example.crt", False),
        ("matrix.example.chain.crt", False), ("server.key", True), ("server.crt", False),
        ("server.chain.crt", False), ("ca.crt", False),
    ]  # fmt: skip
    assert {g.kept for g in made} == {"tls/matrix.example"}  # EXTERNAL_HOST, SSL_DOMAIN unset
    private = {i.image: i.private_key for i in plan(root).components}
    assert private["ai-infra-nginx"] is True  # the whole folder, keys included
    assert plan(root, {"SSL_DOMAIN": "*.matrix.example"}).generated[-1].kept == (
        "tls/*.matrix.example"
    )


def test_an_existing_tls_folder_is_used_as_is(tree):
    root = tree({**FILES, "src/nginx/Dockerfile": NGINX_TLS, "src/nginx/ssl/server.crt": "c"})
    assert not [g for g in plan(root).generated if g.kept and g.kept.startswith("tls")]


def test_the_tls_files_are_a_ca_and_the_server_certificate_it_signs():
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import padding

    from pipeline.planning import tls

    files = tls.tls_files("10.0.0.7")
    assert sorted(files) == sorted(tls.file_names("10.0.0.7"))
    ca = x509.load_pem_x509_certificate(files["ca/ca.crt"])
    server = x509.load_pem_x509_certificate(files["10.0.0.7.crt"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.issuer == ca.subject and "CN=10.0.0.7" in server.subject.rfc4514_string()
    ca.public_key().verify(server.signature, server.tbs_certificate_bytes,
                           padding.PKCS1v15(), server.signature_hash_algorithm)  # fmt: skip
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(n.value) for n in names] == ["10.0.0.7", "127.0.0.1", "localhost"]
    assert files["server.crt"] == tls.Link("10.0.0.7.crt")
    assert files["10.0.0.7.chain.crt"] == files["10.0.0.7.crt"] + files["ca/ca.crt"]
    assert files["ca/ca.srl"] == f"{server.serial_number:X}\n".encode()
    assert files["10.0.0.7.key"].startswith(b"-----BEGIN PRIVATE KEY-----")


def test_a_kept_tls_folder_is_made_whole_beside_the_key_pair_and_then_kept(tmp_path):
    from pipeline.doors import host

    folder = tmp_path / "tls" / "matrix.example"
    assert host.ensure_made(folder, "tls/matrix.example") is True
    assert (folder / "server.crt").resolve() == folder / "matrix.example.crt"
    assert oct((folder / "ca/ca.key").stat().st_mode & 0o777) == "0o600"
    before = (folder / "ca/ca.crt").read_bytes()
    assert host.ensure_made(folder, "tls/matrix.example") is False
    assert (folder / "ca/ca.crt").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == ["matrix.example"]
