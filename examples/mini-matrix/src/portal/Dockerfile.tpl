# Template only, no committed Dockerfile: the pipeline must render it from
# .env (only *_VERSION values are used here) before building.
FROM busybox:{{BUSYBOX_VERSION}}
ARG VERSION=dev
ARG NPM_REGISTRY=https://registry.npmjs.org/
ENV APP_VERSION={{APP_VERSION}} PORTAL_VERSION={{PORTAL_VERSION}}
COPY src/portal/index.html /www/index.html
EXPOSE 8080
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
LABEL org.opencontainers.image.title="ai-infra-portal" \
      org.opencontainers.image.version="{{APP_VERSION}}" \
      ai-infra.portal-version="{{PORTAL_VERSION}}" \
      ai-infra.npm-registry="${NPM_REGISTRY}"
