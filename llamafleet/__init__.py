"""llamafleet: a Kubernetes-native distributed inference cluster for llama.cpp."""

import os
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llamafleet")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# Set before any module imports grpc (every llamafleet process imports this package first): gRPC
# resolves names the way every other program on the host does (getaddrinfo: /etc/hosts,
# nsswitch), not with its bundled c-ares, which asks DNS servers first; where none answers (an
# air-gapped host, names from hostAliases) a connection waited out the DNS timeouts.
os.environ.setdefault("GRPC_DNS_RESOLVER", "native")
# gRPC's C core logs every refused TLS handshake (a plaintext or foreign client) at INFO on stderr, in
# its own format; GRPC_VERBOSITY=INFO shows them again when tracing who knocks (docs/SECURITY.md).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
