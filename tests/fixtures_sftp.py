"""pytest fixtures for the real OpenSSH sshd (see tests/servers/sshd.py)."""
