# src/gitea/Dockerfile is rendered from src/gitea/Dockerfile.tpl with the
# values of .env, and both are committed (as upstream). Besides the image
# built here, dependency.conf.tpl names an upstream image to ship offline.
ARG BUSYBOX_VERSION={{BUSYBOX_VERSION}}
FROM busybox:${BUSYBOX_VERSION}
ARG VERSION=dev
ARG GITEA_VERSION={{GITEA_VERSION}}
ENV APP_VERSION=${VERSION} GITEA_VERSION=${GITEA_VERSION}
COPY src/gitea/gitea-entrypoint.sh /usr/local/bin/gitea-entrypoint.sh
ENTRYPOINT ["sh", "/usr/local/bin/gitea-entrypoint.sh"]
LABEL org.opencontainers.image.title="ai-infra-gitea" \
      org.opencontainers.image.version="${VERSION}"
