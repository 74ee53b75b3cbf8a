"""The doors: the typer CLI (cli.py, bundle_cli.py, flags.py, host.py, console.py) and the
Dagger module (module.py). They translate arguments into calls of the verbs."""
