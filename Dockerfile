# One image for every cachewire binary: cachenode, writer, cachectl and demo.
#   docker build -t cachewire .
# Static binaries (CGO off) on distroless, running as the non-root user.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ \
      ./cmd/cachenode ./cmd/writer ./cmd/cachectl ./cmd/demo \
 && mkdir -p /data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# The writer's database lives here; owned by the image's non-root user (65532).
COPY --from=build --chown=65532:65532 /data /data
USER 65532:65532
WORKDIR /data
EXPOSE 7070 7080 9090 9091
ENTRYPOINT []
