"""pytest fixtures for the real pyftpdlib FTP/FTPS servers (see tests/servers/ftpd.py)."""
