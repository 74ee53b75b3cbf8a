"""Offline bundle: one OCI image layout for the whole release, with verbs over it.

Plain Python, no engine, no Docker: ``create_bundle`` merges per-image OCI layouts,
``verify_bundle`` checks it offline, ``push_bundle`` copies it into a registry and
``load_bundle`` imports it into containerd or Docker.
"""

from pipeline.bundle.create import BundleImage, CreateResult, create_bundle
from pipeline.bundle.load import LoadResult, load_bundle, load_command
from pipeline.bundle.push import PushedImage, PushReport, push_bundle
from pipeline.bundle.verify import CheckResult, Status, VerifyReport, verify_bundle

__all__ = [
    "BundleImage",
    "CheckResult",
    "CreateResult",
    "LoadResult",
    "PushReport",
    "PushedImage",
    "Status",
    "VerifyReport",
    "create_bundle",
    "load_bundle",
    "load_command",
    "push_bundle",
    "verify_bundle",
]
