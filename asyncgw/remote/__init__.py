"""The far side: stdlib-only modules shipped as source by ``remote_exec``."""
