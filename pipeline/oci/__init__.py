"""OCI images and registries: references (reference.py), the image layout and its content
graph (layout.py), the registry client (registry.py), its retry policy (retry.py) and how a
registry's refusal reads (errors.py)."""
