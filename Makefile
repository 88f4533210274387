# berth: build, demo, test and benchmark. See README.md.
#
#   make demo    build the berth tool, PID 1 and the demo image, and boot it in QEMU
#   make test    install what is missing, then run every test tier
#   make bench   boot-time and size figures beside a trivial /init on the same kernel, the
#                DHCP lease time, layer unpack throughput beside GNU tar, container start
#                beside crun and runc, and container network setup beside `ip`

SHELL := /bin/bash
CARGO ?= cargo
TARGET := x86_64-unknown-linux-gnu
# PID 1 is linked statically: no dynamic loader exists in the image. The berth tool is
# too: it then runs on any x86_64 Linux, and starts without the loader's work (about
# 0.25 ms of every `berth run`).
INIT := target/$(TARGET)/release/berth-init
BERTH := target/$(TARGET)/release/berth
DEMO_DIR := out/demo

# Debian packages the build and the tests use (apt names).
DEB_PACKAGES := qemu-system-x86 busybox-static cpio dpkg umoci skopeo file crun runc dnsmasq-base nftables iproute2 e2fsprogs

export BERTH_INIT := $(abspath $(INIT))

# Build paths must not leak into the binary, or the image would depend on where the
# checkout and the cargo home are.
CARGO_HOME ?= $(HOME)/.cargo
INIT_RUSTFLAGS := -C target-feature=+crt-static --remap-path-prefix=$(CURDIR)=/berth --remap-path-prefix=$(CARGO_HOME)=/cargo

.PHONY: all deps init floor-init berth kernel busybox-image demo-image demo test lint unit-tests host-tests qemu-tests bench clean

all: init berth

# Installs the Debian packages that are missing (root; package registries only).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "debian packages: all present"; fi
	@rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy
	@# The API tests drive berth with the real docker CLI (no daemon is needed or started),
	@# docker-py (PyPI) and dockerode (npm, pinned by api/tests/clients/package-lock.json).
	@command -v docker >/dev/null || { echo "installing the docker CLI (Debian's docker.io)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io; }
	@python3 -c 'import docker' 2>/dev/null || python3 -m pip install -q --root-user-action=ignore 'docker==7.1.0'
	@[ -d api/tests/clients/node_modules/dockerode ] || npm ci --silent --prefix api/tests/clients

init:
	RUSTFLAGS="$(INIT_RUSTFLAGS)" $(CARGO) build --release --locked --target $(TARGET) -p berth-init

berth:
	RUSTFLAGS="$(INIT_RUSTFLAGS)" $(CARGO) build --release --locked --target $(TARGET) -p berth-buildroot --bin berth

# The demo's busybox image, written reproducibly from Debian's busybox-static.
busybox-image: deps berth
	$(BERTH) image busybox examples/images/busybox.oci

demo-image: busybox-image init
	$(BERTH) kernel fetch || { apt-get update -qq && $(BERTH) kernel fetch; }
	$(BERTH) build examples/demo.toml -o $(DEMO_DIR) --init $(INIT)

demo: demo-image
	@echo "booting the demo host: http://localhost:8080 is served by its web container, and"
	@echo "DOCKER_HOST=tcp://127.0.0.1:2375 docker ps drives it; quit QEMU with 'ctrl-a x'"
	$(BERTH) boot $(DEMO_DIR) -p 8080:80 --api-port 2375

# The pinned kernel, fetched into the cache up front; a stale apt list is refreshed once.
BERTH_DEBUG := $(CARGO) run --locked -q -p berth-buildroot --bin berth --
kernel:
	$(BERTH_DEBUG) kernel fetch || { apt-get update -qq && $(BERTH_DEBUG) kernel fetch; }

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

# Every tier: unit tests, root host tests and QEMU tests. The BERTH_REQUIRE_* switches
# turn "skipping: not root / no qemu / no docker CLI or client library" into failures, so nothing is skipped silently here.
test: deps init kernel lint
	BERTH_REQUIRE_ROOT=1 BERTH_REQUIRE_QEMU=1 BERTH_REQUIRE_DOCKER_CLI=1 BERTH_REQUIRE_CLIENTS=1 $(CARGO) test --locked --workspace

# The floor: a trivial static /init that only powers off, booted on the same kernel.
floor-init:
	RUSTFLAGS="$(INIT_RUSTFLAGS)" $(CARGO) build --release --locked --target $(TARGET) -p berth-qemu-tests --bin floor-init

bench: deps init floor-init kernel busybox-image berth
	$(CARGO) run --release --locked -p berth-qemu-tests --bin berth-bench
	$(CARGO) run --release --locked -p berth-imagefs --example bench_unpack
	RUSTFLAGS="$(INIT_RUSTFLAGS)" $(CARGO) run --release --locked --target $(TARGET) -p berth-buildroot --example bench_run
	$(CARGO) run --release --locked -p berth-netd --example bench_network

clean:
	$(CARGO) clean
	rm -rf out
