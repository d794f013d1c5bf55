# One image for every cachewire binary: cachenode, writer, cachectl and demo, all in
# /usr/local/bin (on the image's PATH). The image has no ENTRYPOINT: the first word of the command
# names the binary, the rest are its flags, so every binary is run the same way:
#
#   docker build -t cachewire --build-arg VERSION=$(git describe --always --dirty) .
#   docker run --rm cachewire                          prints `cachenode --help` (every flag and
#                                                      its CACHEWIRE_* variable), exits 0
#   docker run --rm cachewire cachenode --kafka-brokers ... --topics ...
#   docker run --rm cachewire writer --help
#   docker run --rm cachewire cachectl --node host:7070 health
#
# docker-compose.yml (`command: [writer, ...]`) and the Kubernetes manifests and Helm chart under
# deploy/ (`command: [cachenode]`) follow the same convention.
# Static binaries (CGO off) on distroless, running as the non-root user. VERSION (default "dev")
# is stamped into internal/version.Version.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/cachewire/cachewire/internal/version.Version=${VERSION}" \
      -o /out/ ./cmd/cachenode ./cmd/writer ./cmd/cachectl ./cmd/demo ./cmd/relay ./examples/users \
 && mkdir -p /data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# The writer's database lives here; owned by the image's non-root user (65532).
COPY --from=build --chown=65532:65532 /data /data
USER 65532:65532
WORKDIR /data
EXPOSE 7070 7080 9090 9091
# No entrypoint (distroless has no shell either): the command is `BINARY [FLAGS]`, see the top.
ENTRYPOINT []
CMD ["cachenode", "--help"]
