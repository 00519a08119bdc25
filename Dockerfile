# berth: a Docker / OCI distribution registry.
#
#   docker build -t berth .
#   docker run -d -p 5000:5000 -v berth-data:/var/lib/registry berth
#
# Plain Dockerfile syntax (no parser directive, no COPY --link, no heredocs): Docker 20.10's legacy builder and
# BuildKit both build it. Built with the official Node image; the runtime is Debian slim with the node binary only
# (no npm, corepack, yarn or headers: the image carries what runs, nothing that installs).

ARG NODE_IMAGE=node:22-bookworm-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build: dev dependencies + TypeScript compile -----------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would compile before the sources are copied; the build step below does it.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.browser.json ./
COPY src ./src
# The server and CLI, then the web UI's browser script (dist/src/http/ui/browser).
RUN npx tsc -p tsconfig.json && npx tsc -p tsconfig.browser.json

# ---- deps: production dependencies only ------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime: node, production dependencies and the compiled code ----------------------------------------------
FROM ${RUNTIME_IMAGE}
COPY --from=deps /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
# package.json says "type": "module" for dist/; the CLI reads its version from it.
COPY package.json config.example.yaml ./
COPY --from=build /src/dist/src ./dist/src
COPY deploy/docker/config.yml /etc/berth/config.yml
# `berth` on PATH (kubectl exec ... berth gc). registry:2 reads /etc/docker/registry/config.yml; the link makes a
# file mounted at either path the one in use, without a shell in the start command. The runtime user is uid 1000
# ("node", as in the official image) and owns the data directory.
RUN groupadd --gid 1000 node \
 && useradd --uid 1000 --gid 1000 --home-dir /app --no-create-home --shell /usr/sbin/nologin node \
 && chmod 0755 /app/dist/src/cli/main.js \
 && ln -s /app/dist/src/cli/main.js /usr/local/bin/berth \
 && mkdir -p /etc/docker/registry /var/lib/registry \
 && ln -s /etc/berth/config.yml /etc/docker/registry/config.yml \
 && chown 1000:1000 /var/lib/registry

# Every berth command reads this file unless given another (`kubectl exec ... berth gc` needs no arguments).
ENV BERTH_CONFIG=/etc/docker/registry/config.yml
# Numeric, so Kubernetes can check runAsNonRoot without looking the name up.
USER 1000:1000
EXPOSE 5000
VOLUME ["/var/lib/registry"]
# No curl in the image: node asks /healthz itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:5000/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form: node is PID 1 and gets SIGTERM itself; berth drains in-flight requests and exits 0.
# REGISTRY_* environment variables override the config file.
CMD ["node", "dist/src/cli/main.js", "serve", "/etc/docker/registry/config.yml"]
