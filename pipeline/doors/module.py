"""The Dagger door: `dagger call release --tag v0.3.8` and friends.

Each function only translates its arguments into a call of the same core the CLI calls.
The layout is read from a copy of the few files that describe it (Dockerfiles, *.conf,
.env), so discovery and planning run exactly as on a local checkout; a call is one function,
so that copy is made once per call.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import dagger
from dagger import DefaultPath, Doc, dag, field, function, object_type

from pipeline.errors import BadInput, BuildFailed, PipelineError
from pipeline.events import Events, printer
from pipeline.oci.sbom import syft_path
from pipeline.oci.sign import SigningKey, load_private_key
from pipeline.planning.downloads import LOCK_FILE, Download, lock_lines
from pipeline.planning.plan import Plan, resolve
from pipeline.planning.prepare import (
    SSH_KEY_STORE,
    TLS_STORE,
    is_private_name,
    kept_files,
    kept_names,
    write_files,
)
from pipeline.planning.run_config import RunConfig
from pipeline.planning.settings import door_overrides, setting_doc
from pipeline.run import engine
from pipeline.run.access import RegistryAccess
from pipeline.run.build import build_context
from pipeline.run.engine import CPU_PROBE_IMAGE
from pipeline.verbs.export import export_bundle, export_images, exported_sboms
from pipeline.verbs.release import release as release_core

# The files discovery and planning read; everything else stays in the engine.
LAYOUT_FILES = [
    "src/*/Dockerfile",
    "src/*/Dockerfile.tpl",
    "src/*/build.conf",
    "src/*/build-targets.conf",
    "src/*/dependency.conf",
    "src/*/dependency.conf.tpl",
    "src/*/templates/conf.d/**/*.tpl",
    "src/*/templates/stream.d/**/*.tpl",
    "src/*/salt-pillar/**/*.tpl",
    "src/*/salt-states/**/*.tpl",
    ".env",
    ".env.example",
    "downloads.lock",
    # The deployment files name third-party images too (pipeline/planning/deployment.py).
    "docker-compose.yml.tpl",
    "docker-compose.yml",
    "helm/*/values.yaml",
    "helm/*/Chart.yaml",
    "helm/*/charts/*/values.yaml",
    "helm/*/charts/*/Chart.yaml",
]


def _setting(field: str) -> Doc:
    """A setting's argument doc, read off the model: `dagger call` reads .env, not the env."""
    doc = setting_doc(field)
    return Doc(f"{doc.help} (default: {doc.env} from .env)")


# The settings a function may be given, declared once (`takes_settings`).
SETTING_ARGUMENTS = {
    "tag": Annotated[str | None, _setting("image_tag")],
    "registry": Annotated[str | None, _setting("private_registry")],
    "platforms": Annotated[str | None, _setting("target_platforms")],
    "components": Annotated[str | None, _setting("components")],
}
SshKey = Annotated[
    dagger.Directory | None,
    Doc("Folder with id_rsa and id_rsa.pub, used when the checkout has no ssh-key/ "
        "(default: a pair made once and kept on the engine)"),
]  # fmt: skip
TlsFolder = Annotated[
    dagger.Directory | None,
    Doc("nginx's TLS folder (as build.sh ssl-setup makes it), used when the checkout has no "
        "src/<component>/ssl/ (default: one made once per domain and kept on the engine)"),
]  # fmt: skip
SignKey = Annotated[
    dagger.Secret | None,
    Doc("PEM EC P-256 private key that signs each image index (cosign's format), e.g. env:VAR"),
]


async def signing_key(secret: dagger.Secret | None) -> SigningKey | None:
    if secret is None:
        return None
    return load_private_key((await secret.plaintext()).encode(), "--sign-key")


async def exported(file: dagger.File | None, name: str) -> Path | None:
    """A file argument as a path of this container (for code that reads paths)."""
    if file is None:
        return None
    path = Path(tempfile.mkdtemp(prefix="arg-")) / name
    await file.export(str(path))
    return path


def events() -> Events:
    return Events(printer(sys.stderr))


# What the prepare step makes once for a checkout that has none (the SSH key pair, a TLS
# folder per domain), kept on the engine for later releases: one cache volume per kind.
KEPT_VOLUMES = {SSH_KEY_STORE: "ai-infra-matrix-ssh-key", TLS_STORE: "ai-infra-matrix-tls"}


async def engine_kept(store: str, events: Events, _client: dagger.Client) -> dagger.Directory:
    """The engine's kept files of `store`; new ones (made here, offered every time) the first
    time. The SSH key pair is at the volume's root, as before TLS folders had volumes too."""
    kind, _, sub = store.partition("/")
    fresh = Path(tempfile.mkdtemp(prefix="kept-", dir="."))
    write_files(fresh, kept_files(store))
    private = " ".join(f'"/out/{n}"' for n in kept_names(store) if is_private_name(n))
    keep = f"{_keep_script(sub)} && chmod 600 {private}"
    store_run = (
        dag.container()
        .from_(CPU_PROBE_IMAGE)
        .with_mounted_cache("/store", dag.cache_volume(KEPT_VOLUMES[kind]))
        .with_mounted_directory("/fresh", dag.current_module().workdir(str(fresh)))
        .with_env_variable("RUN", uuid.uuid4().hex)  # the store may have changed: never cached
        .with_exec(["sh", "-c", keep])
    )
    if (await store_run.stdout()).strip() == "made":
        events.note(f"made {store}, kept on the engine in cache volume {KEPT_VOLUMES[kind]}")
    return store_run.directory("/out")


def _keep_script(sub: str) -> str:
    """Offer /fresh to the store, print made or kept, and put the store's files in /out.
    A TLS folder lands whole (renamed into place); the SSH pair is at the volume's root."""
    if not sub:
        return (
            "if [ -s /store/id_rsa ]; then echo kept; else cp /fresh/id_rsa* /store/ && echo made;"
            " fi && mkdir /out && cp /store/id_rsa /store/id_rsa.pub /out/"
        )
    at = f"/store/{sub}"
    return (
        f'if [ -d "{at}" ]; then echo kept; else rm -rf "{at}.new" && cp -a /fresh "{at}.new"'
        f' && mv "{at}.new" "{at}" && echo made; fi && cp -a "{at}" /out'
    )


def first_fetches(first: list[tuple[Download, str]], events: Events) -> None:
    """A module cannot write the checkout: the lines to add to its lock, said."""
    lines = "\n".join(lock_lines(first))
    events.note(f"{LOCK_FILE} of the checkout lacks {len(first)} download(s); add:\n{lines}")


def exit_error(line: str, code: int, stdout: str = "") -> dagger.Error:
    """The function's error, with the values that make `dagger call` exit with `code` (2 for
    bad input, as the CLI): it keeps the exit code of an error typed as an exec error
    (cmd/dagger/functions.go), and takes an error's values as its extensions. `stdout`, what
    the call would have printed (a failed release's report), the CLI prints after `Stdout:`
    on stderr when it has no terminal (a CI log)."""
    error = dag.error(line)
    values = {"_type": "EXEC_ERROR", "exitCode": code, "stdout": stdout, "stderr": ""}
    for name, value in values.items():
        error = error.with_value(name, dagger.JSON(json.dumps(value)))
    return error


class Incomplete(BuildFailed):
    """A release that did not get every image out, with its report (Markdown): the CLI
    door prints it and fails; this door hands it to `dagger call` with the error."""

    def __init__(self, message: str, report: str) -> None:
        super().__init__(message)
        self.report = report


P = ParamSpec("P")
T = TypeVar("T")


def one_line_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """A PipelineError ends the call as the CLI door ends: one `error: ...` line (no Python
    traceback in the engine log) and its exit code."""

    @functools.wraps(fn)
    async def door(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except PipelineError as err:
            line = f"error: {' '.join(str(err).split())}"
            print(line, file=sys.stderr, flush=True)
            output = err.report if isinstance(err, Incomplete) else ""
            await dag.current_function_call().return_error(exit_error(line, err.exit_code, output))
            raise SystemExit(err.exit_code) from None

    return door


Overrides = dict[str, object]  # settings by field name (load_settings' overrides)


def takes_settings(
    *names: str,
) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """A function that plans takes these settings' arguments (SETTING_ARGUMENTS: `--tag`,
    ...), declared here once, and gets them as one mapping of overrides, `settings`: as the
    CLI's commands get one `Given`. (Root-object fields would move them before the function:
    `dagger call --tag v0.3.8 release`.)"""

    def wrap(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        own = [p for p in inspect.signature(fn).parameters.values() if p.name != "settings"]
        given = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                              annotation=SETTING_ARGUMENTS[name])
            for name in names
        ]  # fmt: skip
        # Keyword-only after `self`: the SDK binds the call's arguments to this signature.
        rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own[1:]]

        @functools.wraps(fn)
        async def call(self: object, **arguments: object) -> T:
            chosen = {name: arguments.pop(name) for name in names}
            return await fn(self, settings=door_overrides(**chosen), **arguments)

        signature = inspect.signature(fn).replace(parameters=[own[0], *given, *rest])
        call.__signature__ = signature  # type: ignore[attr-defined]
        hints = {k: v for k, v in fn.__annotations__.items() if k != "settings"}
        call.__annotations__ = hints | {name: SETTING_ARGUMENTS[name] for name in names}
        return call

    return wrap


@object_type
class AiInfraMatrix:
    """Release pipeline of AI-Infra-Matrix: multi-platform images and offline bundles."""

    source: Annotated[
        dagger.Directory, DefaultPath("/"), Doc("AI-Infra-Matrix checkout (its root)")
    ] = field()

    def _checkout(
        self, ssh_key: dagger.Directory | None, tls: dagger.Directory | None = None
    ) -> engine.Checkout:
        given = {SSH_KEY_STORE: ssh_key, TLS_STORE: tls}

        async def kept(store: str, events: Events, client: dagger.Client) -> dagger.Directory:
            folder = given[store.partition("/")[0]]
            return folder if folder is not None else await engine_kept(store, events, client)

        return engine.Checkout(directory=lambda _client: self.source, kept=kept, pin=first_fetches)

    async def _plan(self, overrides: Overrides) -> tuple[Plan, RunConfig]:
        copy = Path(tempfile.mkdtemp(prefix="layout-"))
        await (
            dag.directory().with_directory(".", self.source, include=LAYOUT_FILES).export(str(copy))
        )
        # What the build context holds, for the COPY check (the copy has only the above).
        present = {p.rstrip("/") for p in await build_context(self.source).glob("**/*")}
        the_plan, run = resolve(copy, {}, overrides, present)
        if the_plan.engines:  # a module runs in the one engine `dagger call` started
            raise BadInput(
                "PIPELINE_ENGINES (.env): several engines are for the CLI door "
                "(python -m pipeline release --engines ...); dagger call builds on its own engine"
            )
        return the_plan, run

    @function
    @one_line_errors
    @takes_settings("tag", "registry", "platforms", "components")
    async def plan(self, settings: Overrides) -> str:
        """What would be built, as JSON (build args by name only)."""
        the_plan, _ = await self._plan(settings)
        return json.dumps(the_plan.to_json(), indent=2)

    @function
    @one_line_errors
    @takes_settings("tag", "registry", "platforms", "components")
    async def release(
        self,
        settings: Overrides,
        username: Annotated[str | None, Doc("Registry user")] = None,
        password: Annotated[dagger.Secret | None, Doc("Registry password, e.g. env:VAR")] = None,
        json_report: Annotated[bool, Doc("Return the report as JSON")] = False,
        ssh_key: SshKey = None,
        tls: TlsFolder = None,
        sign_key: SignKey = None,
        ca_cert: Annotated[
            dagger.File | None, Doc("CA certificate (PEM) that signed the registry's TLS")
        ] = None,
        plain_http: Annotated[bool, Doc("The registry speaks plain HTTP")] = False,
        rebuild: Annotated[
            bool, Doc("Build every image, reusing none (default: PIPELINE_REBUILD from .env)")
        ] = False,
        sbom: Annotated[
            bool, Doc("An SBOM (SPDX JSON, by syft) of every image and platform, attached")
        ] = False,
    ) -> str:
        """Build every image for every platform, publish one index each; return the report.

        Read back through the registry API, as the CLI does; only when this code's container
        cannot reach the registry (a loopback or VPN-only one that the engine pushes to)
        through the engine, and the report says so.
        """
        the_plan, run = await self._plan(settings | ({"rebuild": True} if rebuild else {}))
        access = RegistryAccess(
            username=username,
            password=await password.plaintext() if password else None,
            ca_cert=await exported(ca_cert, "ca.crt"),
            plain_http=plain_http,
            sign_key=await signing_key(sign_key),
            sboms=sbom,
        )
        if sbom:
            syft_path()  # no syft is bad input, before any build
        report = await release_core(
            the_plan,
            run,
            self._checkout(ssh_key, tls),
            access,
            events(),
            engine.joined,
            may_not_reach=True,
        )
        output = json.dumps(report.to_json(), indent=2) if json_report else report.to_markdown()
        if not report.ok:
            events().note(report.to_markdown())
            raise Incomplete(report.incomplete("release"), output)
        return output

    @function
    @one_line_errors
    @takes_settings("tag", "platforms", "components")
    async def export(
        self,
        settings: Overrides,
        ssh_key: SshKey = None,
        tls: TlsFolder = None,
        sbom: Annotated[
            bool, Doc("An SBOM (SPDX JSON, by syft) of every image and platform, beside it")
        ] = False,
    ) -> dagger.Directory:
        """Every image (and third-party dependency) as a multi-platform OCI tarball."""
        the_plan, run = await self._plan(settings)
        if sbom:
            syft_path()  # no syft is bad input, before any build
        tarballs: list[dagger.Directory] = []

        async def keep(directory: dagger.Directory) -> None:
            tarballs.append(directory)

        report = await export_images(
            the_plan, run, self._checkout(ssh_key, tls), keep, events(), connect=engine.joined
        )
        if not report.ok:
            events().note(report.to_markdown())
            raise BuildFailed(report.incomplete("export"))
        if not sbom:
            return tarballs[0]
        # The SBOMs are made here, beside the tarballs, in the module's working directory.
        scratch = Path(tempfile.mkdtemp(prefix="export-", dir="."))
        await tarballs[0].export(str(scratch))
        exported_sboms(the_plan, scratch)
        return dag.current_module().workdir(str(scratch))

    @function
    @one_line_errors
    @takes_settings("tag", "registry", "platforms", "components")
    async def offline_bundle(
        self,
        settings: Overrides,
        archive: Annotated[str | None, Doc("Also an archive: tar or tar.zst")] = None,
        ssh_key: SshKey = None,
        tls: TlsFolder = None,
        since: Annotated[
            dagger.File | None,
            Doc("The previous bundle's inventory.json (or archive): make a delta of it"),
        ] = None,
        sign_key: SignKey = None,
        sbom: Annotated[
            bool, Doc("An SBOM (SPDX JSON, by syft) of every image and platform, attached")
        ] = False,
    ) -> dagger.Directory:
        """The release as one offline bundle: OCI layout, inventory.json, SHA256SUMS.

        `dagger call offline-bundle --tag v0.3.8 export --path dist/ai-infra-matrix-v0.3.8`
        """
        the_plan, run = await self._plan(settings)
        previous = await exported(since, "previous")  # outside the result's folder
        # In the module's working directory, so the engine can hand the result back.
        scratch = Path(tempfile.mkdtemp(prefix="bundle-", dir="."))
        out = scratch / f"ai-infra-matrix-{the_plan.tag}"
        await export_bundle(
            the_plan,
            run,
            self._checkout(ssh_key, tls),
            out,
            archive,
            events(),
            connect=engine.joined,
            since=previous,
            sign_key=await signing_key(sign_key),
            sboms=sbom,
        )
        # `export --path dist/ai-infra-matrix-v0.3.8` writes the bundle itself there; with an
        # archive, the bundle folder and its archive side by side.
        return dag.current_module().workdir(str(scratch if archive else out))
