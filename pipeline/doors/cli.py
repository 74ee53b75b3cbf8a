"""The command-line door: translate arguments into a call of the core, print the result.

`main` is the only place that turns a PipelineError into one `error: ...` line on stderr and
its exit code (bad input 2, failures 1); `--debug` or PIPELINE_DEBUG=1 shows the traceback.
"""

import functools
import importlib.metadata
import inspect
import json
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, TypeVar

import anyio
import typer

from pipeline import signals
from pipeline.bundle.archive import archive_path
from pipeline.bundle.create import check_bundle_request
from pipeline.bundle.delta import describe_expected
from pipeline.doors import console, flags, host
from pipeline.doors.bundle_cli import CONTEXT_SETTINGS
from pipeline.doors.bundle_cli import app as bundle_app
from pipeline.errors import BadInput, BuildFailed, PipelineError
from pipeline.events import terminal_events
from pipeline.oci.sbom import syft_path
from pipeline.oci.sign import fingerprint, read_sign_key
from pipeline.planning.plan import Plan, check_releasable, resolve
from pipeline.planning.run_config import RunConfig
from pipeline.planning.settings import SETTING_DOCS, setting_doc
from pipeline.run import engine

app = typer.Typer(
    help="Release pipeline of AI-Infra-Matrix: plan, build, publish and export images.",
    no_args_is_help=True,
    context_settings=CONTEXT_SETTINGS,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # help text is plain: brackets stay brackets
)

T = TypeVar("T")
DISTRIBUTION = "ai-infra-matrix-pipeline"  # pyproject.toml's project name

Source = Annotated[
    Path, typer.Option("--source", help="AI-Infra-Matrix checkout (reads src/ and .env).")
]


def _setting(field: str) -> typer.models.OptionInfo:
    """The option of a setting, its help read off the model."""
    doc = setting_doc(field)
    return typer.Option(doc.option, help=f"{doc.help} (env {doc.env}).", metavar=doc.metavar)


@dataclass(frozen=True)
class Given:
    """What every command that plans is given, as one object: the checkout, and each setting
    that has an option, by field name (None: not given)."""

    source: Path
    settings: dict[str, object]

    def resolve(self) -> tuple[Plan, RunConfig]:
        """Every such command's first step: settings from .env, the environment and these."""
        host.check_folder(self.source, "--source", "the AI-Infra-Matrix checkout")
        return resolve(self.source, os.environ, self.settings)

    def plan(self) -> Plan:
        return self.resolve()[0]

    def checkout(self, run: RunConfig) -> engine.Checkout:
        """The checkout as the engine sees it, with the SSH key folder the settings name."""
        return host.checkout(self.source, run.ssh_key_dir)


# The shared option set: --source, then the option of each setting that has one, in the
# model's order (a setting given an option in settings.py is an option of every such command).
_SOURCE = inspect.Parameter("source", inspect.Parameter.KEYWORD_ONLY, annotation=Source)
_SETTINGS = [
    inspect.Parameter(
        doc.field,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[str | None, _setting(doc.field)],
    )
    for doc in SETTING_DOCS
    if doc.option
]


def plans(command: Callable[..., None]) -> Callable[..., None]:
    """A command that plans: it takes the shared option set (--source first, the settings'
    options where its `given` parameter stands) and gets it as one Given."""
    parameters = [_SOURCE]
    for param in inspect.signature(command).parameters.values():
        own = [param.replace(kind=param.KEYWORD_ONLY)]
        parameters += _SETTINGS if param.name == "given" else own

    @functools.wraps(command)
    def run(source: Path, **options: object) -> None:
        settings = {param.name: options.pop(param.name) for param in _SETTINGS}
        command(given=Given(source, settings), **options)

    run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    return run


def _print_version(wanted: bool) -> None:
    if wanted:
        try:
            version = importlib.metadata.version(DISTRIBUTION)
        except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
            version = "(not installed)"
        typer.echo(f"ai-infra-pipeline {version}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show tracebacks, anywhere on the line (env PIPELINE_DEBUG=1)."
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    # main() takes --debug out of argv before typer runs; declared here so --help lists it.
    del debug, version


def settings_epilog(publishes: bool) -> str:
    """The settings no option sets, said in the --help of the commands they act on: every one
    for a command that publishes, else those that do not act on publishing alone."""
    docs = [d for d in SETTING_DOCS if d.option is None and (publishes or not d.publishing)]
    lines = [f"  {doc.env}: {doc.description} (default: {doc.default})" for doc in docs]
    # \b keeps click from joining the lines into one paragraph.
    return "\b\nAlso set in the environment or .env:\n" + "\n".join(lines)


@app.command()
@plans
def plan(
    given: Given,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show what would be built, from which Dockerfile, under which reference."""
    the_plan = given.plan()
    if as_json:
        typer.echo(json.dumps(the_plan.to_json(), indent=2))
    else:
        typer.echo(console.plan_table(the_plan))


ExportSbom = Annotated[
    bool,
    typer.Option(
        "--sbom", help="An SBOM (SPDX JSON, by syft) of every image and platform, beside it."
    ),
]
Rebuild = Annotated[
    bool,
    typer.Option(
        "--rebuild", help="Build every image, reusing none (env PIPELINE_REBUILD for every run)."
    ),
]
ReportJson = Annotated[
    Path | None, typer.Option("--report-json", help="Also write the report as JSON here.")
]


def run_core(core: Callable[..., Awaitable[T]], *args: object) -> T:
    """Run the core with its Events last: a live view on a terminal, plain lines elsewhere."""
    with terminal_events(sys.stderr) as events:
        return anyio.run(core, *args, events)


@app.command(epilog=settings_epilog(publishes=True))
@plans
def release(
    given: Given,
    username: flags.Username = None,
    password: flags.Password = None,
    password_stdin: flags.PasswordStdin = False,
    ca_cert: flags.CaCert = None,
    plain_http: flags.PlainHttp = False,
    report_json: ReportJson = None,
    sign_key: flags.SignKey = None,
    rebuild: Rebuild = False,
    sbom: flags.Sbom = False,
) -> None:
    """Build every image for every platform, publish one index each, print the report."""
    from pipeline.run.access import RegistryAccess
    from pipeline.verbs.release import release as release_core

    the_plan, run = (
        replace(given, settings=given.settings | {"rebuild": True}) if rebuild else given
    ).resolve()
    # Bad input is found before the engine is contacted, not after an hour of builds.
    check_releasable(the_plan)
    if report_json is not None:
        host.check_writable(report_json, "--report-json")
    login = flags.registry_login(
        username, password, password_stdin, ca_cert, plain_http, env=os.environ, stdin=sys.stdin
    )
    access = RegistryAccess(
        username=login.username,
        password=login.password,
        ca_cert=login.ca_cert,
        plain_http=login.plain_http,
        sign_key=read_sign_key(sign_key, os.environ) if sign_key is not None else None,
        sboms=sbom,
    )
    if sbom:
        syft_path()  # no syft is bad input, before any build
    report = run_core(release_core, the_plan, run, given.checkout(run), access)
    host.write_report(report, report_json, os.environ)
    typer.echo(report.to_markdown())
    if not report.ok:
        raise BuildFailed(report.incomplete("release"))


@app.command("export", epilog=settings_epilog(publishes=False))
@plans
def export_cmd(
    output: Annotated[Path, typer.Option("--output", help="Directory for <image>.tar files.")],
    given: Given,
    sbom: ExportSbom = False,
) -> None:
    """Build every image and write each as a multi-platform OCI tarball (no registry)."""
    from pipeline.verbs.export import export_images, exported_sboms

    the_plan, run = given.resolve()
    if output.exists():
        raise BadInput(f"--output {output} already exists: choose a new folder")
    host.check_output_folder(output, "--output")
    if sbom:
        syft_path()  # no syft is bad input, before any build
    report = run_core(
        export_images,
        the_plan,
        run,
        given.checkout(run),
        host.folder(output),
    )
    typer.echo(report.to_markdown())
    if not report.ok:
        raise BuildFailed(report.incomplete("export"))
    if sbom:
        written = exported_sboms(the_plan, output)
        typer.echo(f"{len(written)} SBOMs (SPDX JSON) beside the tarballs in {output}")


@bundle_app.command("create", epilog=settings_epilog(publishes=False))
@plans
def bundle_create(
    output: Annotated[Path, typer.Option("--output", help="Bundle directory to write.")],
    given: Given,
    archive: Annotated[
        str | None, typer.Option("--archive", help="Also write an archive: tar or tar.zst.")
    ] = None,
    since: Annotated[
        Path | None,
        typer.Option(
            "--since",
            help="A previous bundle (folder, archive or its inventory.json): write a delta, "
            "without the layers that bundle has.",
            metavar="PREVIOUS",
        ),
    ] = None,
    sign_key: flags.SignKey = None,
    sbom: flags.Sbom = False,
) -> None:
    """Build the release and write it as one offline bundle (an OCI image layout)."""
    from pipeline.verbs.export import export_bundle

    check_bundle_request(archive, since)  # a wrong --since ends here, not after every build
    key = read_sign_key(sign_key, os.environ) if sign_key is not None else None
    the_plan, run = given.resolve()
    for target in [output] + ([archive_path(output, archive)] if archive else []):
        if target.exists():  # create_bundle checks again, but only after every build
            raise BadInput(f"{target} already exists; remove it or choose another --output")
    host.check_output_folder(output, "--output")
    result = run_core(
        functools.partial(export_bundle, since=since, sign_key=key, sboms=sbom),
        the_plan,
        run,
        given.checkout(run),
        output,
        archive,
    )
    typer.echo(
        f"bundle {result.path}: {result.images} images, {result.blobs} blobs, "
        f"{result.total_bytes / 1e6:.1f} MB"
        + (f"; {describe_expected(result.base.tag, result.base.blobs)}" if result.base else "")
        + (f"; archive {result.archive}" if result.archive else "")
        + (f"; signed with key {fingerprint(key.public_key())}" if key else "")
        + (
            f"; SBOMs {result.sboms.bytes / 1e6:.1f} MB in {result.sboms.seconds:.1f}s"
            if result.sboms
            else ""
        )  # fmt: skip
    )


app.add_typer(bundle_app, name="bundle")


def _debug(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether to show tracebacks, and argv without --debug: it may follow the subcommand,
    where typer would refuse it."""
    rest = [arg for arg in argv if arg != "--debug"]
    wanted = len(rest) < len(argv) or os.environ.get("PIPELINE_DEBUG", "") in ("1", "true", "yes")
    return wanted, rest


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a PipelineError becomes one line and its exit code."""
    debug, args = _debug(sys.argv[1:] if argv is None else argv)
    try:
        with signals.terminate_as_interrupt():
            app(args=args, prog_name="ai-infra-pipeline")
    except SystemExit as done:
        sys.exit(signals.exit_code(done.code))
    except PipelineError as err:
        if debug:
            traceback.print_exc()
        # One line whatever the message holds (a registry's error text may span several).
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        sys.exit(err.exit_code)
