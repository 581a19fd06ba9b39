"""aigc-image: a self-hosted Tencent Cloud MPS AIGC image API (version 2019-06-12)."""

__version__ = "0.1.0"
