"""Release pipeline of AI-Infra-Matrix."""
