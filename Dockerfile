# The `vigil` binary in a small image; every component is a subcommand.
#   docker build -t vigil:latest .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin vigil

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/vigil /usr/local/bin/vigil
COPY deploy/vigil.toml /etc/vigil/vigil.toml
ENV VIGIL_CONFIG=/etc/vigil/vigil.toml
ENTRYPOINT ["vigil"]
CMD ["up"]
