# mini-matrix deployment, shaped like AI-Infra-Matrix's docker-compose.yml.tpl: build.sh fills
# {{VAR}} from .env; compose itself expands ${VAR} and ${VAR:-default} when it runs.
services:
  # Our own images: built by the release, never dependencies.
  gateway:
    image: ${PRIVATE_REGISTRY}ai-infra-gateway:{{IMAGE_TAG}}
    ports:
      - "${BIND_HOST:-0.0.0.0}:${EXTERNAL_PORT:-8080}:8080"
    depends_on:
      - backend
      - portal

  portal:
    image: ai-infra-portal:{{IMAGE_TAG}}
    environment:
      TZ: {{TZ}}

  backend:
    image: ai-infra-backend:{{IMAGE_TAG}}
    environment:
      POSTGRES_HOST: ${POSTGRES_HOST:-postgres}
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}
    depends_on:
      - backend-init

  backend-init:
    image: ai-infra-backend-init:{{IMAGE_TAG}}
    restart: "no"

  gitea:
    image: ${PRIVATE_REGISTRY}ai-infra-gitea:{{IMAGE_TAG}}

  # Third-party images that src/*/dependency.conf names too: shipped once.
  shell:
    image: busybox:{{BUSYBOX_VERSION}}
    command: ["sleep", "infinity"]

  base:
    image: debian:bookworm-slim
    command: ["true"]

  # A third-party image no dependency.conf names (as seaweedfs upstream): the bundle needs it.
  go-tools:
    image: golang:${GOLANG_VERSION:-1.19}-bookworm
    profiles: [dev]
    command: ["go", "version"]

  # Started only with SAFELINE_ENABLED=true (build.sh adds the profile then): not shipped.
  waf:
    image: {{SAFELINE_IMAGE_PREFIX}}/safeline-tengine:{{SAFELINE_IMAGE_TAG}}
    profiles: [safeline]
