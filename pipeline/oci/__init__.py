"""OCI images and registries: references (reference.py), the image layout and its content
graph (layout.py), the registry client (registry.py), its retry policy (retry.py), how a
registry's refusal reads (errors.py), how a person gives registry access (access.py) and
image signatures in cosign's format (sign.py)."""
